"""The per-epoch progress rows and the flow-run tags, as the Prefect UI shows them."""

import math

from flows.events import outcome_tags
from tasks.train.progress import epoch_row, markdown_table


def test_an_epoch_row_has_perplexity_speed_and_an_eta_from_the_mean_epoch() -> None:
    logs = {"loss": 2.0, "val_loss": math.log(7.5)}

    row = epoch_row(2, 10, logs, train_targets=50_000, train_seconds=4.0,
                    epoch_seconds=[70.0, 50.0])  # fmt: skip

    assert row == {"epoch": "2/10", "loss": "2.0000", "val perplexity": "7.500",
                   "tokens/s": "12500", "epoch s": "50.0", "ETA": "≤ 8m00s"}  # fmt: skip
    last = epoch_row(10, 10, logs, 50_000, 4.0, [60.0] * 10)
    assert last["ETA"] == "done"
    assert epoch_row(1, 100, {"loss": 1.0}, 1, 1.0, [3600.0])["ETA"] == "≤ 99h00m"


def test_the_markdown_table_has_a_row_per_epoch() -> None:
    rows = [epoch_row(e, 3, {"loss": 1.0, "val_loss": 0.0}, 10, 1.0, [1.0] * e) for e in (1, 2)]

    table = markdown_table(rows).splitlines()

    assert table[0] == "| epoch | loss | val perplexity | tokens/s | epoch s | ETA |"
    assert len(table) == 4 and table[3].startswith("| 2/3 | 1.0000 | 1.000 | 10 |")


def test_flow_run_tags_name_the_model_the_data_and_the_outcome() -> None:
    assert outcome_tags("reviewgru", "0123456789abcdef", "rejected") == [
        "model:reviewgru", "data:01234567", "rejected",
    ]  # fmt: skip
    assert outcome_tags("reviewgru", None, None) == ["model:reviewgru"]
