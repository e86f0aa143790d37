from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.config import PipelineConfig


def test_defaults_are_the_tutorial_recipe() -> None:
    config = PipelineConfig()
    assert config.tokenizer.vocab_size == 10_000
    assert (config.model.embedding_dim, config.model.units) == (64, 64)
    assert (config.train.epochs, config.train.batch_size) == (10, 32)
    assert config.train.learning_rate == 1e-3
    assert config.registry.model_name == "reviewgru"


def test_flags_override_toml_which_overrides_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "config.toml"
    toml.write_text('[train]\nepochs = 3\nbatch_size = 64\n[ingest]\nrating_column = "stars"\n')

    config = PipelineConfig.load(toml, {"train.epochs": 5})

    assert config.train.epochs == 5
    assert config.train.batch_size == 64
    assert config.ingest.rating_column == "stars"
    assert config.model.units == 64


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
    assert flat["train.epochs"] == "10"
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
