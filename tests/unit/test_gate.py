from tasks.records import ChampionScore
from tasks.register import decide_promotion


def test_first_model_is_promoted_when_it_beats_the_unigram_baseline() -> None:
    promote, reason = decide_promotion(40.0, 90.0, champion=None)
    assert promote
    assert "no champion yet" in reason


def test_a_model_no_better_than_unigram_is_never_promoted() -> None:
    promote, reason = decide_promotion(95.0, 90.0, champion=None)
    assert not promote
    assert "unigram" in reason


def test_challenger_must_beat_the_champion_on_the_same_split() -> None:
    champion = ChampionScore(version="3", perplexity=40.0)
    assert decide_promotion(39.0, 90.0, champion)[0]
    promote, reason = decide_promotion(41.0, 90.0, champion)
    assert not promote
    assert "champion v3" in reason
    assert not decide_promotion(40.0, 90.0, champion)[0]  # a tie keeps the champion


def test_min_improvement_is_relative() -> None:
    champion = ChampionScore(version="1", perplexity=40.0)
    assert not decide_promotion(39.0, 90.0, champion, min_improvement=0.05)[0]
    assert decide_promotion(37.9, 90.0, champion, min_improvement=0.05)[0]


def test_force_and_never_override_the_gate() -> None:
    champion = ChampionScore(version="1", perplexity=10.0)
    assert decide_promotion(95.0, 90.0, champion, promotion="force") == (
        True,
        "promotion forced (--force-promote); perplexity 95.00",
    )
    promote, reason = decide_promotion(5.0, 90.0, champion, promotion="never")
    assert not promote and "--no-promote" in reason


def test_a_different_vocabulary_is_compared_on_words_both_know() -> None:
    # Raw perplexities say the challenger lost (its larger vocabulary has fewer easy [UNK]s) ...
    champion = ChampionScore(
        version="2",
        perplexity=30.0,
        same_vocabulary=False,
        shared_perplexity=50.0,
        challenger_shared_perplexity=45.0,
    )
    # ... on the words both vocabularies know, it wins.
    promote, reason = decide_promotion(35.0, 90.0, champion)
    assert promote
    assert "45.00 beats champion v2 (50.00)" in reason and "both vocabularies know" in reason
