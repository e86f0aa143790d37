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
from pathlib import Path

import polars as pl
from prefect import task

from tasks.config import TokenizerConfig
from tasks.records import SPLITS, Snapshot, TokenizedData
from tasks.text import UNK_ID, Vocab, tokens_expr, write_bytes_atomically

log = logging.getLogger(__name__)


def _unit_interval(review_id: str) -> float:
    """sha1 of the id → a number in [0, 1): the same in every process, version and platform."""
    return int.from_bytes(hashlib.sha1(review_id.encode()).digest()[:8], "big") / 2.0**64


def split_of(review_id: str, val_fraction: float, test_fraction: float) -> str:
    u = _unit_interval(review_id)
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def split_expr(review_id: pl.Expr, val_fraction: float, test_fraction: float) -> pl.Expr:
    """ "train"/"val"/"test" from a sha1 of the review id only, so a review never moves split.

    polars' own hash is documented as unstable across versions, so the digest is hashlib's, run
    once per review (not per token) on each batch.
    """

    def batch(ids: pl.Series) -> pl.Series:
        return pl.Series([_unit_interval(i) for i in ids.to_list()], dtype=pl.Float64)

    u = review_id.map_batches(batch, return_dtype=pl.Float64)
    return (
        pl.when(u < test_fraction)
        .then(pl.lit("test"))
        .when(u < test_fraction + val_fraction)
        .then(pl.lit("val"))
        .otherwise(pl.lit("train"))
    )


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


def tokenize_snapshot(snapshot: Path, cfg: TokenizerConfig, out_dir: Path) -> TokenizedData:
    """Snapshot Parquet → train/val/test Parquet of ids + vocab.json + manifest.json in `out_dir`.

    The vocabulary comes from the train split only. The same snapshot and config give
    byte-identical files.
    """
    frame = (
        pl.scan_parquet(snapshot)
        .select(
            "review_id",
            "language",
            "text",
            tokens_expr(pl.col("text"), cfg.lowercase).alias("tokens"),
            split_expr(pl.col("review_id"), cfg.val_fraction, cfg.test_fraction).alias("split"),
        )
        .collect()
    )
    empty = frame.filter(pl.col("tokens").list.len() == 0).height
    if empty:
        log.warning("%s: %d reviews without tokens dropped", snapshot, empty)
    frame = frame.filter(pl.col("tokens").list.len() > 0)
    vocab = Vocab.build(
        frame.filter(pl.col("split") == "train")["tokens"], cfg.vocab_size, cfg.lowercase
    )
    frame = frame.with_columns(vocab.ids_expr(pl.col("tokens")).alias("ids")).drop("tokens")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        vocab.save(tmp / "vocab.json")
        reviews: dict[str, int] = {}
        tokens: dict[str, int] = {}
        oov_rate: dict[str, float] = {}
        for split in SPLITS:
            columns = ["review_id", "language", "ids"] + (["text"] if split == "test" else [])
            part = frame.filter(pl.col("split") == split).select(columns)
            part.write_parquet(tmp / f"{split}.parquet")
            flat = part["ids"].explode().drop_nulls()
            reviews[split] = part.height
            tokens[split] = flat.len()
            oov_rate[split] = float((flat == UNK_ID).sum()) / flat.len() if flat.len() else 0.0
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
            "tokens": tokens,
            "oov_rate": oov_rate,
            "reviews_without_tokens": empty,
            "files": files,
        }
        write_bytes_atomically(tmp / "manifest.json", json.dumps(manifest, indent=2).encode())
        _replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "tokenized %s: vocab %d, reviews %s, tokens %s, oov %s",
        snapshot.name,
        len(vocab),
        reviews,
        tokens,
        oov_rate,
    )
    return TokenizedData(
        dir=out_dir,
        digest=digest,
        vocab_size=len(vocab),
        reviews=reviews,
        tokens=tokens,
        oov_rate=oov_rate,
    )


@task(name="tokenize")
def tokenize_task(snapshot: Snapshot, cfg: TokenizerConfig, out_dir: Path) -> TokenizedData:
    return tokenize_snapshot(snapshot.path, cfg, out_dir)
