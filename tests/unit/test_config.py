from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.config import PipelineConfig


def test_defaults_keep_the_tutorial_model_and_the_seed_preset_its_recipe() -> None:
    config = PipelineConfig()
    assert config.tokenizer.vocab_size == 10_000
    assert (config.model.embedding_dim, config.model.units) == (64, 64)
    assert (config.train.epochs, config.train.batch_size) == (30, 16)
    assert config.train.learning_rate == 5e-3
    assert (config.tokenizer.min_count, config.model.tie_embeddings) == (3, True)
    assert config.registry.model_name == "reviewgru"
    seed = PipelineConfig.load(preset="seed")
    assert (seed.tokenizer.vocab_size, seed.tokenizer.min_count) == (10_000, 1)
    assert (seed.model.embedding_dim, seed.model.units) == (64, 64)
    assert (seed.model.dropout, seed.model.tie_embeddings, seed.model.embedding_init) == (
        0.0, False, 0.05,
    )  # fmt: skip
    assert (seed.train.epochs, seed.train.batch_size, seed.train.learning_rate) == (10, 32, 1e-3)
    assert (seed.train.weight_decay, seed.train.clipnorm, seed.train.lr_schedule) == (
        0.0, None, "constant",
    )  # fmt: skip
    assert (seed.train.warmup_epochs, seed.train.early_stopping_from_epoch) == (0, 0)


def test_preset_sits_under_the_toml_and_the_flags(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text("[train]\nbatch_size = 64\n")
    config = PipelineConfig.load(toml, {"train.epochs": 4}, preset="seed")
    assert (config.train.epochs, config.train.batch_size, config.train.learning_rate) == (
        4, 64, 1e-3,
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        PipelineConfig.load(preset="nope")


def test_flags_override_toml_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('[train]\nepochs = 3\nbatch_size = 64\n[ingest]\nrating_column = "stars"\n')

    config = PipelineConfig.load(toml, {"train.epochs": 5})

    assert config.train.epochs == 5
    assert config.train.batch_size == 64
    assert config.ingest.rating_column == "stars"
    assert config.model.units == 64


def test_a_rating_column_is_named_only_when_set() -> None:
    """Left at its default it is optional in ingest; set anywhere (even to the default) it is
    required. A dump without the key (a deployment's parameters) keeps it optional."""
    assert not PipelineConfig().ingest.rating_column_named
    assert not PipelineConfig.load(None, {"ingest.quoting": "none"}).ingest.rating_column_named
    named = PipelineConfig.load(None, {"ingest.rating_column": "star_rating"})
    assert named.ingest.rating_column_named
    assert PipelineConfig.model_validate(named.model_dump()).ingest.rating_column_named
    assert PipelineConfig.load(None, {"ingest.rating_column": None}).ingest.rating_column_named


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"train.epochs": 0}, "epochs"), ({"train.typo": 1}, "typo"), ({"until": "deploy"}, "until")],
)
def test_invalid_values_are_refused_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        PipelineConfig.load(None, overrides)


def test_flat_params_cover_every_field_and_digest_tracks_changes() -> None:
    config = PipelineConfig()
    flat = config.flat()
    assert flat["train.epochs"] == "30"
    assert flat["ingest.text_columns"] == '["review_title", "review_body"]'
    assert config.digest() == PipelineConfig().digest()
    assert config.digest() != PipelineConfig.load(None, {"train.epochs": 2}).digest()
    assert config.digest("tokenizer") == PipelineConfig.load(None, {"train.epochs": 2}).digest(
        "tokenizer"
    )


def test_runs_stage_respects_until() -> None:
    config = PipelineConfig(until="tokenize")
    assert config.runs_stage("ingest") and config.runs_stage("tokenize")
    assert not config.runs_stage("train")
