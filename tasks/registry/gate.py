"""The gate: whether a challenger becomes champion, decided from plain numbers.

No MLflow, no Keras: the evaluate stage hands over per-review sums of log-loss and target counts
for both models on the same test reviews (see `tasks/evaluate/comparison.py`), the baselines and the
config, and this module decides. The decision has three parts, all of which must pass:

1. the challenger's test perplexity beats the `must_beat` baseline (on the same targets);
2. against a champion: a paired bootstrap over reviews gives an interval of the relative
   perplexity change, which must lie wholly below `-min_improvement`;
3. no language or star-rating slice (with enough targets to mean something) is worse than the
   champion's by more than `max_slice_regression`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from tasks.config import RegistryConfig
from tasks.evaluate.comparison import PairedScores

# Bootstrap resamples are drawn in chunks of at most this many indices (≈ 32 MB of int64).
_CHUNK_INDICES = 4_000_000


@dataclass(frozen=True)
class Interval:
    """A bootstrap interval of the relative perplexity change (challenger vs champion)."""

    point: float
    low: float
    high: float
    confidence: float
    resamples: int

    def __str__(self) -> str:
        return (
            f"{self.point:+.1%}, {self.confidence:.0%} interval [{self.low:+.1%}, {self.high:+.1%}]"
        )


def paired_bootstrap(
    scores: PairedScores, confidence: float, resamples: int, seed: int
) -> Interval:
    """Percentile interval of the relative perplexity change, resampling whole reviews.

    Reviews are the independent units (tokens within a review are not), so each resample draws
    reviews with replacement and recomputes both perplexities from the drawn reviews' sums.
    """
    keep = (scores.challenger_targets > 0) & (scores.champion_targets > 0)
    scores = scores.subset(keep)
    reviews = len(scores.challenger_loss)
    if reviews == 0:
        raise ValueError("no test review has a target both models are scored on")
    rng = np.random.default_rng(seed)
    columns = np.stack(scores.arrays(), axis=1).astype(np.float64)  # reviews × 4
    log_ratios = np.empty(resamples)
    chunk = max(1, _CHUNK_INDICES // reviews)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, reviews, size=(size, reviews))
        # How often each review was drawn, per resample, then the four sums as one product:
        # one pass over the draws instead of a gather per array (README, Benchmarks).
        drawn += np.arange(size)[:, None] * reviews
        times = np.bincount(drawn.ravel(), minlength=size * reviews).reshape(size, reviews)
        ours_loss, ours_n, theirs_loss, theirs_n = (times @ columns).T
        log_ratios[start : start + size] = ours_loss / ours_n - theirs_loss / theirs_n
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(log_ratios, [tail, 1.0 - tail])
    return Interval(
        point=scores.relative_change(),
        low=math.expm1(float(low)),
        high=math.expm1(float(high)),
        confidence=confidence,
        resamples=resamples,
    )


@dataclass(frozen=True)
class SliceScore:
    """Both models on one slice of the test reviews (a language or a star rating)."""

    name: str  # e.g. "language=en", "rating=5"
    reviews: int
    targets: int
    challenger_perplexity: float
    champion_perplexity: float

    @property
    def change(self) -> float:
        return self.challenger_perplexity / self.champion_perplexity - 1.0


def slice_scores(scores: PairedScores, labels: Mapping[str, np.ndarray]) -> list[SliceScore]:
    """Per slice of every labelling (e.g. {"language": [...], "rating": [...]}, one per review)."""
    result = []
    for kind, values in labels.items():
        for value in np.unique(values):
            part = scores.subset((values == value) & (scores.challenger_targets > 0))
            if part.targets == 0 or part.champion_targets.sum() == 0:
                continue
            ours, theirs = part.perplexities()
            result.append(SliceScore(f"{kind}={value}", len(part.challenger_loss), part.targets,
                                     ours, theirs))  # fmt: skip
    return result


@dataclass(frozen=True)
class ChampionEvidence:
    """What the gate knows about the champion: its version and both models per test review."""

    version: str
    scores: PairedScores
    labels: Mapping[str, np.ndarray] = field(default_factory=dict)
    where: str = "on the same test reviews"


@dataclass(frozen=True)
class GateDecision:
    promoted: bool
    reason: str
    interval: Interval | None = None
    slices: list[SliceScore] = field(default_factory=list)
    blocking_slices: list[str] = field(default_factory=list)


def baseline_shortfall(
    perplexity: float, baselines: Mapping[str, float], must_beat: str
) -> str | None:
    """Why the challenger fails the `must_beat` baseline, or None when it beats it."""
    if must_beat == "none":
        return None
    baseline = baselines[must_beat]
    if perplexity < baseline:
        return None
    return (
        f"perplexity {perplexity:.4g} does not beat the {must_beat} baseline {baseline:.4g} "
        f"({perplexity / baseline - 1:+.0%})"
    )


def decide(
    perplexity: float,
    baselines: Mapping[str, float],
    champion: ChampionEvidence | None,
    rules: RegistryConfig,
) -> GateDecision:
    """The gate's decision and its reason in one sentence (see the module docstring)."""
    if rules.promotion == "force":
        return GateDecision(
            True, f"promotion forced (--force-promote); perplexity {perplexity:.4g}"
        )
    if rules.promotion == "never":
        return GateDecision(
            False, f"promotion disabled (--no-promote); perplexity {perplexity:.4g}"
        )
    shortfall = baseline_shortfall(perplexity, baselines, rules.must_beat)
    if champion is None:
        if shortfall is not None:
            return GateDecision(False, f"{shortfall}: not promoted")
        beaten = "" if rules.must_beat == "none" else (
            f" beats the {rules.must_beat} baseline {baselines[rules.must_beat]:.4g}"
        )  # fmt: skip
        return GateDecision(True, f"no champion yet; perplexity {perplexity:.4g}{beaten}")

    interval = paired_bootstrap(
        champion.scores, rules.confidence, rules.bootstrap_resamples, rules.bootstrap_seed
    )
    slices = slice_scores(champion.scores, champion.labels)
    blocking = [
        s.name
        for s in slices
        if s.targets >= rules.min_slice_targets and s.change > rules.max_slice_regression
    ]
    ours, theirs = champion.scores.perplexities()
    versus = (
        f"perplexity {ours:.4g} vs champion v{champion.version}'s {theirs:.4g} {champion.where}: "
        f"change {interval}"
    )
    if shortfall is not None:
        return GateDecision(
            False, f"{shortfall}; {versus}: not promoted", interval, slices, blocking
        )
    if interval.high >= -rules.min_improvement:
        needed = "an improvement" if rules.min_improvement == 0 else (
            f"an improvement of at least {rules.min_improvement:.1%}"
        )  # fmt: skip
        return GateDecision(
            False, f"{versus}, not wholly {needed}: not promoted", interval, slices, blocking
        )
    if blocking:
        worst = ", ".join(f"{s.name} {s.change:+.0%}" for s in slices if s.name in blocking)
        return GateDecision(
            False,
            f"{versus}, but slices regress by more than {rules.max_slice_regression:.0%} "
            f"({worst}): not promoted",
            interval,
            slices,
            blocking,
        )
    return GateDecision(True, f"{versus}: promoted", interval, slices, blocking)


def bigram_ratio(metrics: Mapping[str, float | None]) -> float | None:
    """The GRU's test perplexity over the bigram baseline's (below 1: the GRU is better)."""
    perplexity, bigram = metrics.get("test_perplexity"), metrics.get("bigram_perplexity")
    return perplexity / bigram if perplexity is not None and bigram else None


def bigram_verdict(metrics: Mapping[str, float], train_tokens: int) -> str | None:
    """A plain sentence when the model loses to the bigram baseline, for summaries and reports."""
    perplexity, bigram = metrics.get("test_perplexity"), metrics.get("bigram_perplexity")
    if perplexity is None or bigram is None or perplexity < bigram:
        return None
    return (
        f"the GRU (perplexity {perplexity:.4g}) does not beat the bigram baseline ({bigram:.4g}, "
        f"GRU/bigram {perplexity / bigram:.2f}) after training on {train_tokens} tokens: it needs "
        "more data or other settings"
    )
