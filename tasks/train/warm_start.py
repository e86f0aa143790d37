"""Warm start from the champion: whether a retrain starts from it, and how its weights get in.

Vocabulary continuity, one design: a retrain always builds its vocabulary from its own train
split, exactly as a scratch run does, and the champion's rows are **mapped by word**. Every
vocabulary-indexed weight (the embedding rows, the output layer's rows or columns and its bias;
one matrix when the embeddings are tied) takes the champion's row for each word both vocabularies
have, and keeps a fresh model's initial row for each new word; words the new vocabulary no longer
has are dropped. Every other weight (GRU, projection) is copied whole. When the two vocabularies
are the same word for word, the mapping is the identity and the warm start is exact ("kept");
otherwise it is "remapped". Why this design rather than keeping the champion's vocabulary: a
warm-started and a scratch model of the same data then share one vocabulary and one tokenized
test split, so their perplexities compare directly; and since the split is a stable hash of the
review id (tasks/tokenize/dataset.py), the train split only grows, so with a growing dump the new
vocabulary holds every word of the champion's (unless `vocab_size` caps it) plus the words that
became frequent enough.

The optimizer is always fresh (Adam at `train.warm_learning_rate`): the champion's saved Adam
moments belong to the last steps of its own data and the file keeps them only for Keras.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import keras
import numpy as np

from tasks.config import ModelConfig, TrainConfig
from tasks.records import Champion, InputError, TokenizedData
from tasks.tokenize.tokenizer import Vocab
from tasks.train.distributed import trains_across_workers
from tasks.train.fit import configured_model
from tasks.train.model import load_language_model

logger = logging.getLogger(__name__)

# The weights indexed by vocabulary id (tasks/train/model.py), and the axis the ids run along.
VOCAB_AXIS: dict[str, int] = {
    "embedding/embeddings": 0,  # untied (--preset seed)
    "logits/embeddings": 0,  # tied: embeddings and, transposed, the output layer
    "logits/kernel": 1,  # untied Dense: (units, vocab)
    "logits/bias": 0,
}

InitMode = Literal["warm", "scratch"]

# MLflow run and model version tags of a run's start (read back by tasks/registry/lineage.py).
INIT_TAG = "init.mode"  # "warm" | "scratch"
PARENT_TAG = "init.parent_version"  # warm starts: the champion it started from
VOCAB_TAG = "init.vocab"  # warm starts: "kept" | "remapped"
REASON_TAG = "init.reason"


def vocab_row_map(old: Sequence[str], new: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(new ids, old ids) of the words both vocabularies have, in new-id order."""
    old_ids = {token: i for i, token in enumerate(old)}
    pairs = [(i, old_ids[token]) for i, token in enumerate(new) if token in old_ids]
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new_rows, old_rows = zip(*pairs, strict=True)
    return np.array(new_rows, np.int64), np.array(old_rows, np.int64)


def map_rows(
    fresh: np.ndarray, champion: np.ndarray, axis: int, new_rows: np.ndarray, old_rows: np.ndarray
) -> np.ndarray:
    """`fresh` with the champion's slices along `axis` for the words both vocabularies have."""
    out = np.array(fresh, copy=True)
    index: list[slice | np.ndarray] = [slice(None)] * out.ndim
    source: list[slice | np.ndarray] = [slice(None)] * out.ndim
    index[axis], source[axis] = new_rows, old_rows
    out[tuple(index)] = champion[tuple(source)]
    return out


def shape_difference(
    champion: Mapping[str, tuple[int, ...]], fresh: Mapping[str, tuple[int, ...]]
) -> str | None:
    """Why the champion's weights cannot seed the configured model, None when they can: the same
    weights, of the same shapes but along the vocabulary axis."""
    missing, extra = sorted(fresh.keys() - champion.keys()), sorted(champion.keys() - fresh.keys())
    if missing or extra:
        return f"other weights (only in this model: {missing}, only in the champion: {extra})"
    for path, shape in fresh.items():
        theirs = champion[path]
        axis = VOCAB_AXIS.get(path)
        if axis is not None and len(shape) == len(theirs):
            shape, theirs = _without(shape, axis), _without(theirs, axis)
        if shape != theirs:
            return f"{path} is {tuple(champion[path])} in the champion, {tuple(fresh[path])} here"
    return None


def _without(shape: tuple[int, ...], axis: int) -> tuple[int, ...]:
    return shape[:axis] + shape[axis + 1 :]


def new_word_share(old: Iterable[str], new_vocab: Vocab) -> float:
    """The share of the new train tokens that fall on words the champion has no row for."""
    known = set(old)
    total = sum(new_vocab.counts)
    pairs = zip(new_vocab.tokens, new_vocab.counts, strict=True)
    unseen = sum(count for token, count in pairs if token not in known)
    return unseen / total if total else 0.0


@dataclass(frozen=True)
class Evidence:
    """What the init decision looks at (all from the registry and the new vocabulary)."""

    champion_version: str | None
    shape_problem: str | None = None
    new_word_share: float = 0.0
    runs_since_scratch: int | None = None


def decide_init(train_cfg: TrainConfig, evidence: Evidence) -> tuple[InitMode, str]:
    """Warm or scratch, and why (one phrase, for the log, the tags and the summary).

    Raises:
        InputError: `init = "champion"` without a champion, or with one of another model shape.
    """
    mode, version = train_cfg.init, evidence.champion_version
    if mode == "scratch":
        return "scratch", "train.init = scratch"
    if version is None:
        if mode == "champion":
            raise InputError(
                "train.init = champion (--init champion), but the model has no champion yet; "
                "use --init auto or --init scratch"
            )
        return "scratch", "no champion yet"
    if evidence.shape_problem is not None:
        if mode == "champion":
            raise InputError(
                f"--init champion: champion v{version} has another model shape "
                f"({evidence.shape_problem}); use --init scratch or the champion's model settings"
            )
        return "scratch", f"champion v{version} has another model shape: {evidence.shape_problem}"
    if mode == "champion":
        return "warm", f"train.init = champion: warm start from champion v{version}"
    every, since = train_cfg.scratch_every, evidence.runs_since_scratch
    if every and (since is None or since + 1 >= every):
        return "scratch", (
            f"train.scratch_every = {every}: {since} runs since the last scratch-trained version"
        )
    share, most = evidence.new_word_share, train_cfg.warm_max_new_words
    if share > most:
        return "scratch", (
            f"{share:.1%} of the train tokens are words champion v{version} has no row for "
            f"(more than train.warm_max_new_words = {most:.1%})"
        )
    return "warm", (
        f"champion v{version} has the same model shape; {since} runs since the last scratch one"
    )


def warm_train_config(train_cfg: TrainConfig) -> TrainConfig:
    """The train settings of a warm start: a fresh Adam at `warm_learning_rate` for at most
    `warm_epochs` (never more than `epochs`), no warm-up, and early stopping allowed from the
    first epoch (the unigram plateau it waits out does not happen from a trained model)."""
    return train_cfg.model_copy(
        update={
            "learning_rate": train_cfg.warm_learning_rate,
            "epochs": min(train_cfg.warm_epochs, train_cfg.epochs),
            "warmup_epochs": 0,
            "early_stopping_from_epoch": 0,
        }
    )


@dataclass
class WarmStart:
    """The champion's weights by path and the row map into the new vocabulary; `apply` puts
    them into a freshly built model (whose own rows stay for new words)."""

    version: str
    weights: dict[str, np.ndarray]
    new_rows: np.ndarray
    old_rows: np.ndarray
    vocab: Literal["kept", "remapped"]
    counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_champion(
        cls, version: str, champion: keras.Model, old: Vocab, new: Vocab
    ) -> WarmStart:
        new_rows, old_rows = vocab_row_map(old.tokens, new.tokens)
        kept = old.tokens == new.tokens
        counts = {
            "copied": len(new_rows),
            "new": len(new.tokens) - len(new_rows),
            "dropped": len(old.tokens) - len(new_rows),
        }
        weights = {w.path: np.asarray(w.numpy()) for w in champion.weights}
        return cls(version, weights, new_rows, old_rows, "kept" if kept else "remapped", counts)

    def apply(self, model: keras.Model) -> None:
        """Set `model`'s weights from the champion's (call it right after building `model`)."""
        for variable in model.weights:
            theirs = self.weights[variable.path]
            axis = VOCAB_AXIS.get(variable.path)
            if axis is None:
                variable.assign(theirs)
            else:
                fresh = np.asarray(variable.numpy())
                variable.assign(map_rows(fresh, theirs, axis, self.new_rows, self.old_rows))

    def description(self) -> str:
        return (
            f"vocabulary {self.vocab}: {self.counts['copied']} rows from v{self.version}, "
            f"{self.counts['new']} new, {self.counts['dropped']} dropped"
        )


def weight_shapes(model: keras.Model) -> dict[str, tuple[int, ...]]:
    return {w.path: tuple(int(d) for d in w.shape) for w in model.weights}


@dataclass(frozen=True)
class InitPlan:
    """How this training starts: the mode, why, and the warm start when there is one."""

    mode: InitMode
    reason: str
    warm: WarmStart | None = None

    def tags(self) -> dict[str, str]:
        tags = {INIT_TAG: self.mode, REASON_TAG: self.reason}
        if self.warm is not None:
            tags[PARENT_TAG] = self.warm.version
            tags[VOCAB_TAG] = self.warm.vocab
        return tags

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        return warm_train_config(train_cfg) if self.warm is not None else train_cfg

    def out_dir_suffix(self) -> str:
        """Keys the model directory (and its crash backup) on the parent: a backup of a warm
        start resumes only a warm start from the same champion."""
        return f"-warm-v{self.warm.version}" if self.warm is not None else ""


def plan_init(
    train_cfg: TrainConfig,
    fresh: keras.Model,
    new_vocab: Vocab,
    champion: Champion | None,
) -> InitPlan:
    """Decide warm or scratch for a model like `fresh` on data with `new_vocab`.

    Args:
        champion: The champion with its downloaded files, None without one.
    """
    if champion is None or train_cfg.init == "scratch":
        mode, reason = decide_init(train_cfg, Evidence(None))
        logger.info("training from scratch: %s", reason)
        return InitPlan(mode, reason)
    version = champion.version
    old_model = load_language_model(champion.keras_path)
    old_vocab = Vocab.load(champion.vocab_path)
    evidence = Evidence(
        champion_version=version,
        shape_problem=shape_difference(weight_shapes(old_model), weight_shapes(fresh)),
        new_word_share=new_word_share(old_vocab.tokens, new_vocab),
        runs_since_scratch=champion.runs_since_scratch,
    )
    mode, reason = decide_init(train_cfg, evidence)
    if mode == "scratch":
        logger.info("training from scratch: %s", reason)
        return InitPlan(mode, reason)
    warm = WarmStart.from_champion(version, old_model, old_vocab, new_vocab)
    reason = f"{reason}; {warm.description()}"
    logger.info("warm start from champion v%s: %s", version, reason)
    return InitPlan(mode, reason, warm)


def init_plan(
    train_cfg: TrainConfig, model_cfg: ModelConfig, data: TokenizedData, champion: Champion | None
) -> InitPlan:
    """This run's start (`train.init`) on `data`, from the champion the flow resolved."""
    if trains_across_workers(train_cfg):
        # Before any TF op: the multi-worker loop configures collectives at program startup.
        if train_cfg.init == "champion":
            raise InputError(
                "--init champion: multi-worker training starts from scratch; use --init auto or "
                "--init scratch with --strategy multiworker"
            )
        return InitPlan("scratch", "multi-worker training starts from scratch")
    fresh = configured_model(data.vocab_size, model_cfg)  # its weight shapes meet the champion's
    return plan_init(train_cfg, fresh, Vocab.load(data.vocab_path), champion)
