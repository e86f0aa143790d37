"""The tokenize stage: snapshot → train/val/test Parquet of token ids + vocab.json + manifest.

Text normalization and the tokenizer live in `text.py`, shared with the served model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from prefect import task

from tasks.config import TokenizerConfig
from tasks.records import SPLITS, Snapshot, TokenizedData
from tasks.text import UNK_ID, Vocab, tokens_series, write_bytes_atomically

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


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


PERCENTILES = (0.5, 0.9, 0.99)
BATCH_ROWS = 50_000  # also the row group size: ~5-20 MB of ids, neither tiny nor huge


def _in_order(work: Callable[[_T], _R], items: Iterator[_T], workers: int) -> Iterator[_R]:
    """`map(work, items)` on `workers` threads (polars releases the GIL), in order, with at most
    2 × workers batches in flight, so memory stays bounded."""
    if workers <= 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque[Future[_R]] = deque()
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _batches(path: Path, columns: list[str]) -> Iterator[pl.DataFrame]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=columns):
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        yield frame


def tokenize_frame(frame: pl.DataFrame, cfg: TokenizerConfig) -> pl.DataFrame:
    """Snapshot rows → review_id, language, split, tokens, text (test split only)."""
    split = splits_of(frame["review_id"], cfg.val_fraction, cfg.test_fraction)
    tokens = tokens_series(
        frame["text"], cfg.lowercase, cfg.url_placeholder, cfg.number_placeholder
    )
    return frame.select(
        "review_id",
        "language",
        split,
        tokens.alias("tokens"),
        pl.when(split == "test").then(pl.col("text")).alias("text"),
    )


def _count(tokens: pl.DataFrame) -> pl.DataFrame:
    return (
        tokens.filter(pl.col("split") == "train")
        .select(pl.col("tokens").explode().alias("token"))
        .drop_nulls()
        .group_by("token")
        .agg(pl.len().cast(pl.Int64).alias("count"))
    )


def _merge(counts: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(counts).group_by("token").agg(pl.col("count").sum())


class _SplitStats:
    """Reviews, tokens, [UNK] and languages of one split, and the review lengths."""

    def __init__(self) -> None:
        self.tokens = self.unk = 0
        self.lengths: list[np.ndarray] = []
        self.languages: dict[str, int] = {}

    def add(self, part: pl.DataFrame) -> None:
        lengths = part["ids"].list.len()
        self.lengths.append(lengths.to_numpy())
        self.tokens += int(lengths.sum())
        self.unk += int(part.select(pl.col("ids").explode().eq(UNK_ID).sum()).item() or 0)
        languages = part.group_by(pl.col("language").fill_null("unknown")).len()
        for language, n in languages.iter_rows():
            self.languages[language] = self.languages.get(language, 0) + n

    def percentiles(self) -> dict[str, int]:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(1, np.int64)
        return {
            f"p{round(q * 100)}": int(np.quantile(lengths, q, method="inverted_cdf"))
            for q in PERCENTILES
        }


def tokenize_snapshot(
    snapshot: Path, cfg: TokenizerConfig, out_dir: Path, workers: int | None = None
) -> TokenizedData:
    """Snapshot Parquet → train/val/test Parquet of ids + vocab.json + manifest.json in `out_dir`.

    Streams in batches of rows on `workers` threads (default: one per core): the snapshot is
    tokenized once into a temporary Parquet of tokens while the train split's token counts are
    summed; the vocabulary comes from those counts (train only); then each batch of tokens is
    mapped to ids and appended to its split's file. Memory does not grow with the snapshot. The
    same snapshot and config give byte-identical files.
    """
    workers = workers or os.cpu_count() or 1
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        tokens_path = tmp / "tokens.parquet"
        writer: pq.ParquetWriter | None = None
        counts: list[pl.DataFrame] = []
        batches = _batches(snapshot, ["review_id", "text", "language"])
        for tokens, batch_counts in _in_order(
            lambda f: (lambda t: (t, _count(t)))(tokenize_frame(f, cfg)), batches, workers
        ):
            table = tokens.to_arrow()
            writer = writer or pq.ParquetWriter(tokens_path, table.schema, compression="lz4")
            writer.write_table(table)
            counts.append(batch_counts)
            if len(counts) >= 16:
                counts = [_merge(counts)]
        if writer is None:
            raise ValueError(f"{snapshot}: no reviews to tokenize")
        writer.close()
        vocab = Vocab.from_counts(
            _merge(counts),
            cfg.vocab_size,
            cfg.lowercase,
            cfg.min_count,
            urls=cfg.url_placeholder,
            numbers=cfg.number_placeholder,
        )
        vocab.save(tmp / "vocab.json")
        stats, empty = _write_splits(tokens_path, vocab, tmp, workers)
        tokens_path.unlink()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if empty:
        log.warning("%s: %d reviews without tokens dropped", snapshot, empty)
    try:
        data = _finish(snapshot, cfg, vocab, stats, empty, tmp, out_dir)
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


def _write_splits(
    tokens_path: Path, vocab: Vocab, tmp: Path, workers: int
) -> tuple[dict[str, _SplitStats], int]:
    stats = {split: _SplitStats() for split in SPLITS}
    writers: dict[str, pq.ParquetWriter] = {}
    empty = 0

    def to_ids(tokens: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        kept = tokens.filter(pl.col("tokens").list.len() > 0)
        ids = kept.with_columns(vocab.ids_expr(pl.col("tokens")).alias("ids"))
        return ids.drop("tokens"), tokens.height - kept.height

    batches = _batches(tokens_path, ["review_id", "language", "split", "tokens", "text"])
    for ids, dropped in _in_order(to_ids, batches, workers):
        empty += dropped
        for split in SPLITS:
            columns = ["review_id", "language", "ids"] + (["text"] if split == "test" else [])
            part = ids.filter(pl.col("split") == split).select(columns)
            table = part.to_arrow()
            if split not in writers:
                writers[split] = pq.ParquetWriter(tmp / f"{split}.parquet", table.schema)
            writers[split].write_table(table)
            stats[split].add(part)
    for writer in writers.values():
        writer.close()
    return stats, empty


def _finish(
    snapshot: Path,
    cfg: TokenizerConfig,
    vocab: Vocab,
    stats: dict[str, _SplitStats],
    empty: int,
    tmp: Path,
    out_dir: Path,
) -> TokenizedData:
    reviews = {split: sum(len(a) for a in stats[split].lengths) for split in SPLITS}
    counts = {split: stats[split].tokens for split in SPLITS}
    oov_rate = {
        split: stats[split].unk / counts[split] if counts[split] else 0.0 for split in SPLITS
    }
    lengths = {split: stats[split].percentiles() for split in SPLITS}
    languages: dict[str, int] = {}
    for split in SPLITS:
        for language, n in stats[split].languages.items():
            languages[language] = languages.get(language, 0) + n
    languages = dict(sorted(languages.items()))
    files = {
        name: _sha256_file(tmp / name)
        for name in ("vocab.json", *(f"{split}.parquet" for split in SPLITS))
    }
    digest = hashlib.sha256("".join(files.values()).encode()).hexdigest()[:16]
    manifest = {
        "digest": digest,
        "snapshot": snapshot.name,
        "config": cfg.model_dump(mode="json"),
        "vocab_size": len(vocab),
        "reviews": reviews,
        "tokens": counts,
        "oov_rate": oov_rate,
        "length_percentiles": lengths,
        "languages": languages,
        "reviews_without_tokens": empty,
        "files": files,
    }
    write_bytes_atomically(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
    _replace_dir(tmp, out_dir)
    return TokenizedData(
        dir=out_dir,
        digest=digest,
        vocab_size=len(vocab),
        reviews=reviews,
        tokens=counts,
        oov_rate=oov_rate,
        length_percentiles=lengths,
        languages=languages,
    )


@task(name="tokenize")
def tokenize_task(snapshot: Snapshot, cfg: TokenizerConfig, out_dir: Path) -> TokenizedData:
    return tokenize_snapshot(snapshot.path, cfg, out_dir)
