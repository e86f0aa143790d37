"""PipelineConfig: the one place where defaults live.

The defaults keep the GRU tutorial's model shape (embedding 64 → GRU 64 → Dense(vocab), vocabulary
at most 10000) but not its recipe, which on real reviews loses to a bigram table: measured on 979
real reviews (README, Learning), words seen fewer than 3 times are [UNK] (`min_count`), the output
layer reuses the embedding matrix (`tie_embeddings`), embeddings and GRU outputs get dropout 0.2,
embeddings start at ±0.5 instead of ±0.05 (the loss no longer sits on the unigram plateau for
epochs), and adam runs at 5e-3 on batches of 16 (twice the steps per epoch). `--preset seed` is
the tutorial's exact recipe.

A config comes from these defaults, then a preset, then a TOML file, then CLI flags or flow
parameters, each overriding the one before (`PipelineConfig.load`). The whole model is logged to
MLflow.
"""

from __future__ import annotations

import copy
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.records import InputError

# Network reads (http(s) sources): a dead host fails fast, a transient error (timeout, HTTP 5xx)
# is retried after each of these pauses, a refused connection or an HTTP 4xx is not retried.
HTTP_CONNECT_TIMEOUT_S = 5.0
HTTP_READ_TIMEOUT_S = 60.0
HTTP_RETRY_DELAYS_S = (0.5, 1.0, 2.0)
# An MLflow run left RUNNING on another host is taken for dead after this long without a
# heartbeat (each live run beats every HEARTBEAT_S); on this host its recorded process says.
HEARTBEAT_S = 60.0
STALE_RUN_AFTER_S = 15 * 60.0

Stage = Literal["ingest", "tokenize", "train", "evaluate", "register"]
STAGES: tuple[Stage, ...] = ("ingest", "tokenize", "train", "evaluate", "register")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestConfig(_Section):
    data: str | None = Field(
        default=None, description="Review file path or http(s) URL; None means the demo dataset."
    )
    format: Literal["auto", "csv", "tsv", "parquet", "jsonl"] = Field(
        default="auto", description="Input format; auto: from the extension, else sniffed."
    )
    quoting: Literal["auto", "csv", "none"] = Field(
        default="auto",
        description="CSV/TSV quoting; auto: decided per file from its first MB (see sources.py).",
    )
    text_columns: list[str] = Field(
        default=["review_title", "review_body"],
        description="Columns joined (title, then body) into the review text.",
    )
    rating_column: str | None = Field(
        default="star_rating",
        description="Star rating column; 'none' to ignore ratings. Optional while left at its "
        "default: a file without it is read without ratings. Named, it is required.",
    )
    id_column: str = Field(
        default="review_id", description="Review id column, used when the file has it."
    )
    rating_min: int = 1
    rating_max: int = 5
    max_text_chars: int = Field(
        default=50_000, gt=0, description="Longer reviews are quarantined as over-long."
    )
    demo_rows: int = Field(default=4000, gt=0, description="Rows of the generated demo dataset.")

    @property
    def rating_column_named(self) -> bool:
        """Whether the rating column was set (TOML, flag, parameter) rather than defaulted."""
        return "rating_column" in self.model_fields_set

    @field_validator("rating_column", mode="before")
    @classmethod
    def _none_means_no_rating(cls, value: object) -> object:
        """'none' (any case) from a flag or TOML means no rating column."""
        return None if isinstance(value, str) and value.lower() == "none" else value

    @field_validator("text_columns")
    @classmethod
    def _at_least_one_text_column(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one text column is needed")
        return value


class TokenizerConfig(_Section):
    vocab_size: int = Field(default=10_000, ge=3, description="Ids incl. 0=padding and 1=OOV.")
    lowercase: bool = True
    min_count: int = Field(
        default=3,
        ge=1,
        description="Rarer train tokens become [UNK]: the vocabulary grows with the data instead "
        "of giving each word seen once an output row it cannot train.",
    )
    url_placeholder: bool = Field(default=False, description="URLs become the token [URL].")
    number_placeholder: bool = Field(default=False, description="Numbers become [NUM].")
    val_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)


class ModelConfig(_Section):
    embedding_dim: int = Field(default=64, gt=0, description="Embedding size.")
    units: int = Field(default=64, gt=0, description="GRU units.")
    dropout: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Dropout on the embeddings and the GRU outputs."
    )
    embedding_init: float = Field(
        default=0.5,
        gt=0.0,
        description="Embeddings start uniform in ±this (Keras' default 0.05); larger ones "
        "shorten the plateau at the unigram.",
    )
    tie_embeddings: bool = Field(
        default=True,
        description="The output layer reuses the embedding matrix (through a projection when "
        "units differ from embedding_dim).",
    )


class TrainConfig(_Section):
    epochs: int = Field(default=30, gt=0, description="At most; early stopping ends sooner.")
    batch_size: int = Field(default=16, gt=0, description="Windows per batch.")
    learning_rate: float = Field(default=5e-3, gt=0.0, description="Adam learning rate.")
    max_len: int = Field(default=40, ge=2, description="Tokens per training window.")
    buckets: int = Field(
        default=4, ge=1, description="Batch windows by length in this many widths up to max_len."
    )
    weight_decay: float = Field(
        default=0.0, ge=0.0, description="Decoupled weight decay (AdamW) when above 0."
    )
    clipnorm: float | None = Field(
        default=None, gt=0.0, description="Clip each gradient to this norm; None: no clipping."
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant", description="cosine: decays to 0 over `epochs` after the warm-up."
    )
    warmup_epochs: int = Field(
        default=0, ge=0, description="Epochs of linear learning-rate warm-up from 0."
    )
    early_stopping_patience: int = Field(default=3, ge=1)
    early_stopping_from_epoch: int = Field(
        default=5, ge=0, description="No early stop before this epoch (the unigram plateau)."
    )
    loss: Literal["exact", "sampled"] = Field(
        default="exact", description="sampled: sampled softmax in training; evaluation is exact."
    )
    sampled_negatives: int = Field(default=512, gt=0, description="Negatives of --loss sampled.")
    strategy: Literal["default", "mirrored", "multiworker"] = Field(
        default="default", description="tf.distribute strategy; multiworker reads TF_CONFIG."
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="Output-layer products of the exact loss: auto = bf16 (fp32 accumulation) "
        "where the CPU has amx_bf16 or avx512_bf16, else fp32.",
    )
    seed: int = Field(default=42, description="Random seed of training.")
    # Warm starts from the champion (tasks/train/warm_start.py).
    init: Literal["scratch", "champion", "auto"] = Field(
        default="auto",
        description="scratch: new weights; champion: warm start from the registered champion "
        "(rows mapped by word, see tasks/train/warm_start.py); auto: warm when a champion of the "
        "same model shape exists and neither scratch_every nor warm_max_new_words asks for "
        "scratch.",
    )
    warm_learning_rate: float = Field(
        default=2e-3, gt=0.0, description="Learning rate of a warm start's fresh Adam."
    )
    warm_epochs: int = Field(
        default=4,
        gt=0,
        description="At most this many epochs (and never more than epochs) "
        "when warm-started; early stopping as from scratch, allowed from the first epoch.",
    )
    scratch_every: int = Field(
        default=7,
        ge=0,
        description="auto trains every Nth run from scratch (counted over the registered "
        "versions since the newest scratch-trained one), so warm starts do not drift; 0: never.",
    )
    warm_max_new_words: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="auto trains from scratch when words the champion has no row for make up "
        "more than this share of the new train tokens (the data changed too much).",
    )


PRESETS: dict[str, dict[str, Any]] = {
    # The TensorFlow.js tutorial's recipe, for reproducing it (with validation on the val split).
    "seed": {
        "tokenizer": {"min_count": 1},
        "model": {"dropout": 0.0, "tie_embeddings": False, "embedding_init": 0.05},
        "train": {
            "epochs": 10,
            "batch_size": 32,
            "learning_rate": 1e-3,
            "weight_decay": 0.0,
            "clipnorm": None,
            "lr_schedule": "constant",
            "warmup_epochs": 0,
            "early_stopping_from_epoch": 0,
        },
    },
}


class RegistryConfig(_Section):
    model_name: str = Field(default="reviewgru", min_length=1, description="Registered model name.")
    min_improvement: float = Field(
        default=0.0, ge=0.0, description="Relative perplexity gain needed to replace the champion."
    )
    promotion: Literal["gate", "force", "never"] = Field(
        default="gate", description="gate: champion only if it wins; force / never: override."
    )
    must_beat: Literal["bigram", "unigram", "none"] = Field(
        default="bigram",
        description="Baseline the challenger's test perplexity must beat to become champion.",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.0,
        lt=1.0,
        description="Of the paired bootstrap interval of the perplexity change against the "
        "champion; promoted only when the whole interval is a gain of min_improvement or more.",
    )
    bootstrap_resamples: int = Field(default=1000, ge=100, description="Resamples of reviews.")
    bootstrap_seed: int = Field(default=0, description="Seed of the bootstrap (reproducible).")
    max_slice_regression: float = Field(
        default=0.10,
        ge=0.0,
        description="A language or star-rating slice whose perplexity is worse than the "
        "champion's by more than this (relative) blocks promotion.",
    )
    min_slice_targets: int = Field(
        default=200,
        ge=1,
        description="Slices with fewer test targets are shown but too noisy to block promotion.",
    )
    prompts: list[str] = Field(
        default=[],
        description="Prompts whose top next words the gate shows for champion and challenger; "
        "empty: drawn from the test split (prompt_count reviews, their first prompt_words words).",
    )
    prompt_count: int = Field(default=5, ge=0)
    prompt_words: int = Field(default=4, ge=1)
    prompt_top_k: int = Field(default=5, ge=1, description="Next words shown per prompt.")


class ServeConfig(_Section):
    top_k: int = Field(default=5, ge=1, description="Next words returned per text.")
    model_alias: str = Field(
        default="champion", min_length=1, description="Alias served when no model URI is given."
    )


class RunnerConfig(_Section):
    task_runner: Literal["threads", "dask"] = Field(
        default="threads", description="dask: tokenize shards as tasks on a Dask cluster."
    )
    dask_address: str | None = Field(
        default=None, description="Scheduler, e.g. tcp://host:8786; None starts a local cluster."
    )
    dask_workers: int = Field(default=2, gt=0, description="Workers of a local cluster.")
    collective_timeout_s: float = Field(
        default=300.0,
        gt=0.0,
        description="--strategy multiworker: seconds a step waits for the other workers before "
        "the run fails (a dead worker; XLA compiling a new batch shape takes tens of seconds).",
    )


class PipelineConfig(_Section):
    ingest: IngestConfig = IngestConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    registry: RegistryConfig = RegistryConfig()
    runner: RunnerConfig = RunnerConfig()
    serve: ServeConfig = ServeConfig()
    workdir: Path = Field(default=Path("work"), description="Snapshots, splits and models.")
    until: Stage = Field(default="register", description="Last stage to run.")

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> PipelineConfig:
        if self.tokenizer.val_fraction + self.tokenizer.test_fraction >= 0.5:
            raise ValueError("val_fraction + test_fraction must leave at least half for training")
        return self

    @classmethod
    def load(
        cls,
        toml_file: Path | None = None,
        overrides: dict[str, Any] | None = None,
        preset: str | None = None,
    ) -> PipelineConfig:
        """Defaults, then `preset`, then `toml_file`, then `overrides` (dotted keys like
        ``"train.epochs"``)."""
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        data: dict[str, Any] = copy.deepcopy(PRESETS[preset]) if preset else {}
        if toml_file is not None:
            with toml_file.open("rb") as fh:
                try:
                    parsed = tomllib.load(fh)
                except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
                    # tomllib's message ends "(at line L, column C)": where to fix the file.
                    raise InputError(f"{toml_file}: invalid TOML: {error}; fix the file") from None
                for section, values in parsed.items():
                    if isinstance(values, dict):
                        data.setdefault(section, {}).update(values)
                    else:
                        data[section] = values
        for dotted, value in (overrides or {}).items():
            *parents, leaf = dotted.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return cls.model_validate(data)

    def runs_stage(self, stage: Stage) -> bool:
        return STAGES.index(stage) <= STAGES.index(self.until)

    def flat(self) -> dict[str, str]:
        """Dotted key → value, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, inner)
            else:
                out[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

        walk("", self.model_dump(mode="json"))
        return out

    def training_digest(self, data_digest: str) -> str:
        """Identifies a model: the same data and training config give the same model."""
        return hashlib.sha256(
            f"{data_digest}:{self.digest('model', 'train')}".encode()
        ).hexdigest()[:16]

    def digest(self, *sections: str) -> str:
        """Stable digest of the named sections (all when none), for cache keys and tags."""
        dumped = self.model_dump(mode="json")
        chosen = {name: dumped[name] for name in sections} if sections else dumped
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]
