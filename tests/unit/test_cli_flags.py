"""The run flags come from one table: each sets one PipelineConfig key, with that field's help."""

import pytest
from typer.testing import CliRunner

from flows.cli import RUN_FLAGS, app
from tasks.config import IngestConfig, PipelineConfig


def test_every_flag_names_a_config_key_and_shows_its_description() -> None:
    result = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    defaults = PipelineConfig()
    for flag, key in RUN_FLAGS:
        *sections, leaf = key.split(".")
        node = defaults
        for section in sections:
            node = getattr(node, section)
        field = type(node).model_fields[leaf]
        assert flag in result.output
        assert (field.description or key).rstrip(".") in " ".join(result.output.split()), flag


@pytest.mark.parametrize("value", ["none", "None", "NONE"])
def test_none_means_no_rating_column(value: str) -> None:
    assert IngestConfig(rating_column=value).rating_column is None
    assert PipelineConfig.load(None, {"ingest.rating_column": value}).ingest.rating_column is None
    assert IngestConfig(rating_column=value).rating_column_named  # set, not left at the default
