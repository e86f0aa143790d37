"""The gate as a pure function: baselines, the paired bootstrap, slices (no MLflow, no Keras)."""

import math

import numpy as np
import pytest

from tasks.config import RegistryConfig
from tasks.evaluate.comparison import (
    BOTH_KNOW,
    SAME_TARGETS,
    PairedScores,
    TargetScores,
    pair_scores,
)
from tasks.registry.gate import (
    ChampionEvidence,
    bigram_verdict,
    decide,
    paired_bootstrap,
)

BASELINES = {"unigram": 430.0, "bigram": 163.0}
RULES = RegistryConfig()
REVIEWS, TARGETS_PER_REVIEW = 400, 20


def _paired(gain_per_target: float, noise: float = 3.0, seed: int = 1) -> PairedScores:
    """Reviews whose champion loss is ~4 nats a target; the challenger's is lower by `gain`."""
    rng = np.random.default_rng(seed)
    counts = np.full(REVIEWS, TARGETS_PER_REVIEW)
    theirs = counts * 4.0 + rng.normal(0, noise, REVIEWS)
    ours = theirs - counts * gain_per_target + rng.normal(0, noise, REVIEWS)
    return PairedScores(ours, counts, theirs, counts)


def test_first_model_must_beat_the_bigram_by_default() -> None:
    won = decide(150.0, BASELINES, None, RULES)
    assert won.promoted and won.reason == (
        "no champion yet; perplexity 150 beats the bigram baseline 163"
    )

    lost = decide(178.0, BASELINES, None, RULES)
    assert not lost.promoted
    assert lost.reason == (
        "perplexity 178 does not beat the bigram baseline 163 (+9%): not promoted"
    )


def test_must_beat_unigram_or_none() -> None:
    unigram = RULES.model_copy(update={"must_beat": "unigram"})
    assert decide(178.0, BASELINES, None, unigram).promoted
    unigram_lost = decide(500.0, BASELINES, None, unigram)
    assert not unigram_lost.promoted and "unigram baseline 430 (+16%)" in unigram_lost.reason
    assert decide(500.0, BASELINES, None, RULES.model_copy(update={"must_beat": "none"})).promoted


def test_force_and_never_override_the_gate() -> None:
    forced = decide(500.0, BASELINES, None, RULES.model_copy(update={"promotion": "force"}))
    assert forced.promoted and "--force-promote" in forced.reason
    never = decide(1.0, BASELINES, None, RULES.model_copy(update={"promotion": "never"}))
    assert not never.promoted and "--no-promote" in never.reason


def test_bootstrap_interval_excludes_zero_for_a_clear_gain_and_covers_it_for_none() -> None:
    clear = paired_bootstrap(_paired(0.1), confidence=0.95, resamples=2000, seed=0)
    # exp(-0.1) - 1 = -9.5 %: the truth lies inside, zero does not.
    assert clear.low < math.expm1(-0.1) < clear.high < 0
    assert clear.low < clear.point < clear.high

    none = paired_bootstrap(_paired(0.0), confidence=0.95, resamples=2000, seed=0)
    assert none.low < 0 < none.high

    wider = paired_bootstrap(_paired(0.0), confidence=0.99, resamples=2000, seed=0)
    assert wider.low < none.low and wider.high > none.high


def test_bootstrap_is_reproducible_with_its_seed() -> None:
    scores = _paired(0.05)
    first = paired_bootstrap(scores, 0.95, 500, seed=3)
    assert first == paired_bootstrap(scores, 0.95, 500, seed=3)
    assert first != paired_bootstrap(scores, 0.95, 500, seed=4)


def test_champion_replaced_only_when_the_whole_interval_is_a_gain() -> None:
    clear = decide(100.0, BASELINES, ChampionEvidence("3", _paired(0.1)), RULES)
    assert clear.promoted and clear.interval is not None
    assert "vs champion v3's" in clear.reason and "95% interval [" in clear.reason

    noise = decide(100.0, BASELINES, ChampionEvidence("3", _paired(0.0)), RULES)
    assert not noise.promoted
    assert "not wholly an improvement: not promoted" in noise.reason

    # A clear 9.5 % gain is not a clear 20 % one.
    strict = RULES.model_copy(update={"min_improvement": 0.2})
    needs_more = decide(100.0, BASELINES, ChampionEvidence("3", _paired(0.1)), strict)
    assert not needs_more.promoted and "at least 20.0%" in needs_more.reason


def test_losing_to_the_bigram_blocks_even_a_better_challenger() -> None:
    decision = decide(178.0, BASELINES, ChampionEvidence("3", _paired(0.1)), RULES)
    assert not decision.promoted
    assert decision.reason.startswith("perplexity 178 does not beat the bigram baseline 163 (+9%)")
    assert "champion v3" in decision.reason and decision.reason.endswith(": not promoted")


def test_a_slice_that_regresses_blocks_promotion_and_is_named() -> None:
    scores = _paired(0.2, noise=0.5)
    language = np.array(["en"] * 300 + ["de"] * 100)
    # On the German reviews the challenger is 30 % worse than the champion.
    de = language == "de"
    scores.challenger_loss[de] = scores.champion_loss[de] + np.log(1.3) * TARGETS_PER_REVIEW
    evidence = ChampionEvidence("2", scores, {"language": language})

    decision = decide(100.0, BASELINES, evidence, RULES)

    assert decision.interval is not None and decision.interval.high < 0  # better overall
    assert not decision.promoted
    assert decision.blocking_slices == ["language=de"]
    assert "language=de +30%" in decision.reason
    by_name = {s.name: s for s in decision.slices}
    assert by_name["language=de"].change == pytest.approx(0.3)
    assert by_name["language=de"].targets == 100 * TARGETS_PER_REVIEW

    # The same regression on too few targets to mean anything is shown but does not block.
    lenient = RULES.model_copy(update={"min_slice_targets": 100 * TARGETS_PER_REVIEW + 1})
    assert decide(100.0, BASELINES, evidence, lenient).promoted
    tolerant = RULES.model_copy(update={"max_slice_regression": 0.35})
    assert decide(100.0, BASELINES, evidence, tolerant).promoted


def test_different_vocabularies_are_paired_on_words_both_know() -> None:
    # Two reviews, three targets each; id 1 is [UNK]. The champion knows every word of the
    # second review but not the first target of the first; the challenger misses one there.
    owner = np.array([0, 0, 0, 1, 1, 1])
    ours = TargetScores(np.array([5, 6, 1, 5, 6, 7]), owner, np.array([1.0] * 6))
    theirs = TargetScores(np.array([1, 6, 7, 5, 6, 7]), owner, np.array([2.0] * 6))

    paired, where = pair_scores(ours, theirs, reviews=2, same_vocabulary=False)
    assert where == BOTH_KNOW
    assert paired.challenger_targets.tolist() == [1, 3] == paired.champion_targets.tolist()
    assert paired.challenger_loss.tolist() == [1.0, 3.0]
    assert paired.champion_loss.tolist() == [2.0, 6.0]

    same, where = pair_scores(ours, theirs, reviews=2, same_vocabulary=True)
    assert where == SAME_TARGETS and same.challenger_targets.tolist() == [3, 3]


def test_bigram_verdict_says_it_plainly_with_the_training_tokens() -> None:
    metrics = {"test_perplexity": 178.0, "bigram_perplexity": 163.0}
    verdict = bigram_verdict(metrics, train_tokens=70_000)
    assert verdict is not None
    assert "does not beat the bigram baseline (163, GRU/bigram 1.09)" in verdict
    assert "70000 tokens" in verdict and "more data" in verdict
    assert bigram_verdict({"test_perplexity": 150.0, "bigram_perplexity": 163.0}, 70_000) is None


def test_run_summary_shows_the_bigram_ratio_and_the_warning() -> None:
    from flows.cli import _human_summary
    from flows.retrain import RunSummary

    metrics = {"test_loss": 5.2, "test_perplexity": 178.0, "test_top1": 0.1, "test_top5": 0.3,
               "unigram_perplexity": 430.0, "bigram_perplexity": 163.0,
               "champion_perplexity": None}  # fmt: skip
    warning = bigram_verdict(metrics, train_tokens=70_000)
    summary = RunSummary(model_name="reviewgru", metrics=metrics, baseline_warning=warning)
    summary.timings_s["total"] = 1.0

    lines = _human_summary(summary.model_dump()).splitlines()

    assert "(unigram 430.00, bigram 163.00, GRU/bigram 1.09)" in lines[0]
    assert lines[1] == f"warning   {warning}"
