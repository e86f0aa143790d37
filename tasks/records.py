"""The small typed records the stages hand each other: paths, digests and counts, never data.

Prefect persists, caches and displays them; every stage can be run and tested alone from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

SPLITS = ("train", "val", "test")

# An HTML tag, as the tokenizer removes it; ingest's empty-text rule must agree with it (a review of
# tags only has no words), and ingest may not import the tokenize stage, so it lives here.
HTML_TAG = r"(?i)</?[a-z][a-z0-9]*\b[^<>]*>"


class InputError(ValueError):
    """Bad input the user must fix: one line saying where (file, row, column) and what to do."""


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class Snapshot(_Record):
    """Validated reviews: Parquet of review_id, text, rating, language; named by content digest."""

    path: Path
    quarantine_path: Path
    digest: str
    rows_read: int
    rows_ok: int
    rows_quarantined: int
    rows_duplicates: int
    quarantine_reasons: dict[str, int]
    quoting: dict[str, str] = {}  # CSV/TSV file → the quoting it was read with: "csv" | "none"
    # File name → sha256 of the snapshot and quarantine files as written: a reused (cached)
    # snapshot is checked against them before use.
    sha256: dict[str, str] = {}

    def row_counts(self) -> dict[str, int]:
        """What became of every row read, as the run and score summaries show it."""
        return {
            "read": self.rows_read,
            "ok": self.rows_ok,
            "quarantined": self.rows_quarantined,
            "duplicates": self.rows_duplicates,
        }


class TokenizedData(_Record):
    """train/val/test Parquet (review_id, language, ids list<int32>; test + text) and vocab.json."""

    dir: Path
    digest: str
    vocab_size: int
    reviews: dict[str, int]
    tokens: dict[str, int]
    oov_rate: dict[str, float]
    length_percentiles: dict[str, dict[str, int]] = {}  # tokens per review, per split
    languages: dict[str, int] = {}  # reviews per language ("unknown" when not given)

    @property
    def vocab_path(self) -> Path:
        return self.dir / "vocab.json"

    def split_path(self, split: str) -> Path:
        return self.dir / f"{split}.parquet"


class TrainedModel(_Record):
    """A fitted Keras model saved as .keras, with its per-epoch history.

    A fit resumed from a backup counts its restored epochs in `epochs_run` and `best_epoch`
    (1-based over the whole fit), but `history`, `train_seconds` and `tokens_per_s` cover only the
    epochs after `resumed_from_epoch`: those this process ran.
    """

    path: Path
    epochs_run: int
    best_epoch: int
    history: dict[str, list[float]]
    train_seconds: float  # the whole fit, validation and compiling included
    tokens_per_s: float  # real targets / median training phase after epoch 1 (`TrainPhaseClock`)
    padding_fraction: float  # of the positions computed, after cutting batches to bucket widths
    resumed_from_epoch: int = 0
    # How training started: the init.* tags of tasks/train/warm_start.py.
    init: dict[str, str] = {}


class Drift(_Record):
    """This run's data beside the champion's: each pair is (champion's data, this data)."""

    champion_version: str
    reviews: tuple[int, int]
    train_tokens: tuple[int, int]
    # Under the champion's vocabulary: its own test split, this run's test split.
    test_oov_rate: tuple[float, float]
    median_length: tuple[int, int]  # train tokens per review
    p90_length: tuple[int, int]

    def rows(self) -> list[tuple[str, str]]:
        def change(old: float, new: float) -> str:
            return f"{old:g} → {new:g}" + (f" ({new / old - 1:+.1%})" if old else "")

        return [
            ("reviews", change(*self.reviews)),
            ("train tokens", change(*self.train_tokens)),
            (
                "test OOV rate under the champion's vocabulary",
                change(round(self.test_oov_rate[0], 4), round(self.test_oov_rate[1], 4)),
            ),
            ("train tokens per review, median", change(*self.median_length)),
            ("train tokens per review, p90", change(*self.p90_length)),
        ]


class Champion(_Record):
    """The registered champion, resolved once per run: its files downloaded to local paths."""

    model_name: str
    version: str
    keras_path: Path
    vocab_path: Path
    # Its training data's sizes and lengths (the `data.stats` tag); None on versions registered
    # before the tag existed: no drift report then.
    data_stats: dict[str, Any] | None = None
    # Versions registered since the newest scratch-trained one (None: none was), for
    # `train.scratch_every`.
    runs_since_scratch: int | None = None


class ChampionScore(_Record):
    """The current champion re-evaluated on this run's test split with its own vocabulary."""

    version: str
    perplexity: float
    same_vocabulary: bool = True
    # When the vocabularies differ: both models on the test targets both vocabularies know.
    shared_perplexity: float | None = None
    challenger_shared_perplexity: float | None = None


class Evaluation(_Record):
    """Test-split metrics of the new model, its baselines, and the champion on the same split."""

    metrics: dict[str, float]
    test_digest: str
    champion: ChampionScore | None
    # Both models per test review, for the gate's bootstrap and slices
    # (tasks/evaluate/comparison.py).
    comparison_path: Path | None = None
    # Prompt, the challenger's and the champion's top next words.
    side_by_side: list[dict[str, str]] = []


class Registration(_Record):
    model_name: str
    version: str
    model_uri: str
    promoted: bool
    reason: str
    # The gate's relative perplexity change against the champion: point, low, high (or None).
    interval: tuple[float, float, float] | None = None
    slices: list[dict[str, str]] = []  # both models per language / star rating, for the artifact
