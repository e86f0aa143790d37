"""The tokenize stage: snapshot → train/val/test Parquet of token ids + vocab.json + manifest.

Text normalization and the tokenizer live in `tokenizer.py`, shared with the served model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from tasks.config import TokenizerConfig
from tasks.files import file_sha256, write_bytes_atomically
from tasks.records import SPLITS, TokenizedData
from tasks.tokenize.tokenizer import UNK_ID, Tokenizer, Vocab

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_R = TypeVar("_R")
_SPLIT_TYPE = pl.Enum(list(SPLITS))


def unit_intervals(ids: pl.Series) -> np.ndarray:
    """sha1 of each review id → a number in [0, 1), the same in every process, version and
    platform (polars' own hash is documented as unstable across versions). Nulls hash as ""."""
    packed = b"".join(
        hashlib.sha1((i or "").encode()).digest()[:8] for i in ids.cast(pl.String).to_list()
    )
    return np.frombuffer(packed, dtype=">u8").astype(np.float64) / 2.0**64


def splits_of(ids: pl.Series, val_fraction: float, test_fraction: float) -> pl.Series:
    """ "train"/"val"/"test" of each review from its id only, so a review never moves split."""
    u = pl.Series("u", unit_intervals(ids))
    split = (
        pl.when(pl.col("u") < test_fraction)
        .then(pl.lit("test"))
        .when(pl.col("u") < test_fraction + val_fraction)
        .then(pl.lit("val"))
        .otherwise(pl.lit("train"))
        .cast(_SPLIT_TYPE)
    )
    return u.to_frame().select(split.alias("split")).to_series()


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    """Move finished `tmp` to `out_dir`; an old complete output is renamed away, then deleted."""
    old = None
    if out_dir.exists():
        if not (out_dir / "manifest.json").exists() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir}: exists and is not a tokenized dataset; not replaced")
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old)


def tokenizer_of(cfg: TokenizerConfig) -> Tokenizer:
    return Tokenizer(cfg.lowercase, cfg.url_placeholder, cfg.number_placeholder)


def tokenize_frame(frame: pl.DataFrame, cfg: TokenizerConfig) -> pl.DataFrame:
    """Snapshot rows → review_id, language, split, tokens, text and rating (test split only)."""
    split = splits_of(frame["review_id"], cfg.val_fraction, cfg.test_fraction)
    tokens = tokenizer_of(cfg).tokens_series(frame["text"])
    return frame.select(
        "review_id",
        "language",
        split,
        tokens.alias("tokens"),
        pl.when(split == "test").then(pl.col("text")).alias("text"),
        # The gate compares models per star rating on the test split (tasks/registry/gate.py).
        pl.when(split == "test").then(pl.col("rating")).alias("rating"),
    )


PERCENTILES = (0.5, 0.9, 0.99)
ROW_GROUP_ROWS = 50_000  # of the split files: ~5-20 MB of ids, neither tiny nor huge
Mapper = Callable[[Callable[[_T], _R], list[_T]], list[_R]]


def map_on_threads(work: Callable[[_T], _R], items: list[_T]) -> list[_R]:
    """`[work(item) for item in items]` on one thread per core (polars releases the GIL), with at
    most 2 × cores items in flight, so memory stays bounded whatever the number of items."""
    workers = os.cpu_count() or 1
    if workers == 1:
        return list(map(work, items))
    out: list[_R] = []
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[_R]] = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= 2 * workers:
                out.append(pending.popleft().result())
        out.extend(future.result() for future in pending)
    return out


@dataclass(frozen=True)
class Shard:
    """One row group of the snapshot, and where the files made from it go."""

    snapshot: Path
    row_group: int
    work_dir: Path

    def part(self, name: str) -> Path:
        return self.work_dir / f"{name}-{self.row_group:06d}.parquet"


def shards_of(snapshot: Path, work_dir: Path) -> list[Shard]:
    """A shard per row group (ingest writes at most `SNAPSHOT_ROW_GROUP` rows in each)."""
    groups = pq.ParquetFile(snapshot).metadata.num_row_groups
    return [Shard(snapshot, i, work_dir) for i in range(groups)]


@dataclass
class ShardStats:
    """What the ids of one shard (or, added up, of all) give the manifest: per split, reviews,
    tokens, [UNK] and a histogram of review lengths; languages over all splits."""

    reviews: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    unk: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    lengths: dict[str, Counter[int]] = field(
        default_factory=lambda: {split: Counter() for split in SPLITS}
    )
    languages: Counter[str] = field(default_factory=Counter)
    without_tokens: int = 0

    def add(self, other: ShardStats) -> None:
        for split in SPLITS:
            self.reviews[split] += other.reviews[split]
            self.tokens[split] += other.tokens[split]
            self.unk[split] += other.unk[split]
            self.lengths[split].update(other.lengths[split])
        self.languages.update(other.languages)
        self.without_tokens += other.without_tokens

    def percentiles(self, split: str) -> dict[str, int]:
        """Review length percentiles (numpy's "inverted_cdf": always a length that occurs)."""
        histogram = sorted(self.lengths[split].items()) or [(0, 1)]
        lengths = np.array([length for length, _ in histogram])
        cumulative = np.cumsum([n for _, n in histogram])
        return {
            f"p{round(q * 100)}": int(lengths[np.searchsorted(cumulative, q * cumulative[-1])])
            for q in PERCENTILES
        }


def tokenize_shard(shard: Shard, cfg: TokenizerConfig) -> Shard:
    """Pass 1 on one shard: its tokens and the train split's token counts, as Parquet parts."""
    table = pq.ParquetFile(shard.snapshot).read_row_group(
        shard.row_group, columns=["review_id", "text", "language", "rating"]
    )
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    # Categorical tokens: each distinct token hashed once, then counted, written, read back and
    # mapped to ids by its code (~2x cheaper than strings at each of those steps).
    tokens = tokenize_frame(frame, cfg).with_columns(pl.col("tokens").cast(pl.List(pl.Categorical)))
    tokens.write_parquet(shard.part("tokens"), compression="lz4", statistics=False)
    counts = (
        tokens.filter(pl.col("split") == "train")
        .select(pl.col("tokens").explode().alias("token"))
        .drop_nulls()
        .group_by("token")
        .agg(pl.len().cast(pl.Int64).alias("count"))
        .with_columns(pl.col("token").cast(pl.String))
    )
    counts.write_parquet(shard.part("counts"), compression="lz4")
    return shard


def encode_shard(shard: Shard, vocab_path: Path) -> ShardStats:
    """Pass 2 on one shard: tokens → ids with the vocabulary, a Parquet part per split."""
    tokenizer = Tokenizer.load(vocab_path)
    tokens = pl.read_parquet(shard.part("tokens"))
    kept = tokens.filter(pl.col("tokens").list.len() > 0)
    ids = kept.with_columns(tokenizer.ids_expr(pl.col("tokens")).alias("ids")).drop("tokens")
    stats = ShardStats(without_tokens=tokens.height - kept.height)
    languages = ids.group_by(pl.col("language").fill_null("unknown")).len()
    stats.languages.update(dict(languages.iter_rows()))
    for split in SPLITS:
        columns = ["review_id", "language", "ids"] + (["text", "rating"] if split == "test" else [])
        part = ids.filter(pl.col("split") == split).select(columns)
        part.write_parquet(shard.part(split), compression="lz4", statistics=False)
        lengths = part["ids"].list.len()
        stats.reviews[split] = part.height
        stats.tokens[split] = int(lengths.sum())
        stats.unk[split] = int(part.select(pl.col("ids").explode().eq(UNK_ID).sum()).item() or 0)
        stats.lengths[split].update(dict(lengths.value_counts().iter_rows()))
    shard.part("tokens").unlink()
    return stats


def _merged_counts(shards: list[Shard]) -> pl.DataFrame:
    """The train token counts of all shards, merged 16 parts at a time to bound memory."""
    merged = pl.DataFrame(schema={"token": pl.String, "count": pl.Int64})
    for start in range(0, len(shards), 16):
        parts = [pl.read_parquet(s.part("counts")) for s in shards[start : start + 16]]
        merged = pl.concat([merged, *parts]).group_by("token").agg(pl.col("count").sum())
    return merged


def _concat_parts(shards: list[Shard], out_dir: Path, split: str) -> None:
    """The shards' parts of `split`, in shard order, as one Parquet file in `out_dir`: the only
    zstd compression of the ids (the parts are lz4, cheap to write and read)."""
    parts = [shard.part(split) for shard in shards]
    path = out_dir / f"{split}.parquet"
    pl.scan_parquet(parts).sink_parquet(path, compression="zstd", row_group_size=ROW_GROUP_ROWS)
    for part in parts:
        part.unlink()


def tokenize_snapshot(
    snapshot: Path, cfg: TokenizerConfig, out_dir: Path, mapper: Mapper = map_on_threads
) -> TokenizedData:
    """Snapshot Parquet → train/val/test Parquet of ids + vocab.json + manifest.json in `out_dir`.

    Two passes over shards (the snapshot's row groups), each shard's work run by `mapper`
    (threads here, or tasks on a Dask cluster, see `task.map_as_tasks`): tokenize and count
    the train split's tokens; then, with the vocabulary of the merged counts, map tokens to ids.
    Parts are joined in shard order, so every mapper gives byte-identical files. Memory does not
    grow with the snapshot.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        shards = mapper(partial(tokenize_shard, cfg=cfg), shards_of(snapshot, tmp))
        if not shards:
            raise ValueError(f"{snapshot}: no reviews to tokenize")
        vocab = tokenizer_of(cfg).build_vocab(_merged_counts(shards), cfg.vocab_size, cfg.min_count)
        vocab.save(tmp / "vocab.json")
        stats = ShardStats()
        for shard_stats in mapper(partial(encode_shard, vocab_path=tmp / "vocab.json"), shards):
            stats.add(shard_stats)
        map_on_threads(partial(_concat_parts, shards, tmp), list(SPLITS))
        for shard in shards:
            shard.part("counts").unlink()
        if stats.without_tokens:
            log.warning("%s: %d reviews without tokens dropped", snapshot, stats.without_tokens)
        data = _finish(snapshot, cfg, vocab, stats, tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "tokenized %s: vocab %d, reviews %s, tokens %s, oov %s",
        snapshot.name,
        len(vocab),
        data.reviews,
        data.tokens,
        data.oov_rate,
    )
    return data


def _finish(
    snapshot: Path, cfg: TokenizerConfig, vocab: Vocab, stats: ShardStats, tmp: Path, out_dir: Path
) -> TokenizedData:
    """Write the manifest and move the finished files into place."""
    oov_rate = {
        split: stats.unk[split] / stats.tokens[split] if stats.tokens[split] else 0.0
        for split in SPLITS
    }
    lengths = {split: stats.percentiles(split) for split in SPLITS}
    languages = dict(sorted(stats.languages.items()))
    files = {
        name: file_sha256(tmp / name)
        for name in ("vocab.json", *(f"{split}.parquet" for split in SPLITS))
    }
    digest = hashlib.sha256("".join(files.values()).encode()).hexdigest()[:16]
    manifest = {
        "digest": digest,
        "snapshot": snapshot.name,
        "config": cfg.model_dump(mode="json"),
        "vocab_size": len(vocab),
        "reviews": stats.reviews,
        "tokens": stats.tokens,
        "oov_rate": oov_rate,
        "length_percentiles": lengths,
        "languages": languages,
        "reviews_without_tokens": stats.without_tokens,
        "files": files,
    }
    write_bytes_atomically(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
    _replace_dir(tmp, out_dir)
    return TokenizedData(
        dir=out_dir,
        digest=digest,
        vocab_size=len(vocab),
        reviews=stats.reviews,
        tokens=stats.tokens,
        oov_rate=oov_rate,
        length_percentiles=lengths,
        languages=languages,
    )
