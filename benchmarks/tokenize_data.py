"""Ingest + tokenization throughput and memory: ours against a straightforward Python version.

Generates a review CSV of at least `--mb` MB (Amazon layout: the demo grammar plus a Zipf tail of
rare words, so the vocabulary looks like real data), then, each in its own process so that peak
RSS is its own, runs

- ours: `tasks.ingest.snapshot.ingest` + `tasks.tokenize.dataset.tokenize_snapshot` (polars,
  streaming), and
- the reference: csv module, html.unescape + re.sub + NFKC + lowercase, `re.findall`, a dict
  vocabulary from the train split, ids as Python lists, pyarrow Parquet write,

both producing train/val/test Parquet of token ids with a 10 000-word vocabulary, and

- the floor: polars' tokenizer alone, the least any polars-expression pipeline does (CSV scan,
  title + body, lowercase, the same `extract_all`, tokens as categorical codes to Parquet; no
  HTML clean-up, validation, de-duplication, split, vocabulary or ids), streaming on all cores,

and prints MB/s (input CSV size / wall time), tokens/s, peak RSS and the ratios.

    .venv/bin/python benchmarks/tokenize_data.py [--mb 200] [--only ours|reference|floor] \
        [--keep DIR]

`--mb 2048 --only ours` is the 2 GB streaming check (peak RSS must stay under 1.5 GB).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

VOCAB_SIZE = 10_000


def generate(path: Path, mb: int, seed: int = 0) -> Path:
    """A CSV of at least `mb` MB: demo reviews re-sampled with fresh ids and rare words."""
    import numpy as np
    import polars as pl

    from tasks.ingest.sample_data import write_sample_reviews

    base = pl.read_csv(
        write_sample_reviews(path.with_suffix(".base.csv"), rows=20_000, seed=seed),
        infer_schema=False,
    )
    path.with_suffix(".base.csv").unlink()
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    rare = ["".join(rng.choice(letters, size=rng.integers(4, 10))) for _ in range(200_000)]
    target = mb * 1_000_000
    batch = 100_000
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as fh:
        for i in range(10**6):
            picks = base[rng.integers(0, base.height, size=batch)]
            words = rng.zipf(1.3, size=(batch, 3)) % len(rare)
            extra = [f" Also {rare[a]} {rare[b]}, {rare[c]}." for a, b, c in words]
            frame = picks.with_columns(
                pl.format("R{}-{}", pl.lit(i), pl.int_range(batch)).alias("review_id"),
                (pl.col("review_body") + pl.Series(extra)).alias("review_body"),
            )
            frame.write_csv(fh, include_header=i == 0)
            if fh.tell() >= target:
                break
    tmp.replace(path)
    return path


def run_ours(source: Path, workdir: Path) -> dict[str, float]:
    from tasks.config import IngestConfig, TokenizerConfig
    from tasks.ingest.snapshot import ingest
    from tasks.tokenize.dataset import tokenize_snapshot

    started = time.perf_counter()
    snapshot = ingest(str(source), IngestConfig(), workdir / "snapshots")
    ingested = time.perf_counter()
    data = tokenize_snapshot(
        snapshot.path, TokenizerConfig(vocab_size=VOCAB_SIZE), workdir / "tokenized"
    )
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "ingest_s": ingested - started,
        "tokenize_s": done - ingested,
        "tokens": sum(data.tokens.values()),
        "reviews": sum(data.reviews.values()),
    }


_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")
_SPACE = re.compile(r"\s+")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|\S")


def _split(review_id: str) -> str:
    u = int.from_bytes(hashlib.sha1(review_id.encode()).digest()[:8], "big") / 2.0**64
    return "test" if u < 0.1 else ("val" if u < 0.2 else "train")


def run_reference(source: Path, workdir: Path) -> dict[str, float]:
    """The straightforward version: one Python loop over csv rows, dicts and lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    rows: list[tuple[str, str, str, list[str]]] = []
    seen: set[str] = set()
    with source.open(newline="", encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            try:
                rating = float(record["star_rating"])
            except ValueError:
                continue
            if not 1 <= rating <= 5 or record["review_id"] in seen:
                continue
            seen.add(record["review_id"])
            text = "\n".join(t for t in (record["review_title"], record["review_body"]) if t)
            text = unicodedata.normalize("NFKC", html.unescape(_TAG.sub(" ", text))).lower()
            tokens = _TOKEN.findall(_SPACE.sub(" ", text).strip())
            if tokens:
                rows.append(
                    (record["review_id"], record["language"], _split(record["review_id"]), tokens)
                )
    counts: dict[str, int] = {}
    for _, _, split, tokens in rows:
        if split == "train":
            for token in tokens:
                counts[token] = counts.get(token, 0) + 1
    kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: VOCAB_SIZE - 2]
    ids = {token: i + 2 for i, (token, _) in enumerate(kept)}
    workdir.mkdir(parents=True, exist_ok=True)
    n_tokens = 0
    for split in ("train", "val", "test"):
        part = [r for r in rows if r[2] == split]
        encoded = [[ids.get(t, 1) for t in r[3]] for r in part]
        n_tokens += sum(map(len, encoded))
        table = pa.table(
            {
                "review_id": [r[0] for r in part],
                "language": [r[1] for r in part],
                "ids": pa.array(encoded, type=pa.list_(pa.int32())),
            }
        )
        pq.write_table(table, workdir / f"{split}.parquet")
    (workdir / "vocab.json").write_text(json.dumps([t for t, _ in kept]))
    return {
        "seconds": time.perf_counter() - started,
        "tokens": n_tokens,
        "reviews": len(rows),
    }


def run_floor(source: Path, workdir: Path) -> dict[str, float]:
    """polars' tokenizer alone: the CSV's title + body → lowercase → tokens → categorical codes."""
    import polars as pl

    from tasks.tokenize.tokenizer import token_pattern

    started = time.perf_counter()
    workdir.mkdir(parents=True, exist_ok=True)
    text = pl.concat_str("review_title", "review_body", separator="\n", ignore_nulls=True)
    tokens = text.str.to_lowercase().str.extract_all(token_pattern).cast(pl.List(pl.Categorical))
    pl.scan_csv(source, infer_schema=False).select(
        "review_id", tokens.alias("tokens")
    ).sink_parquet(workdir / "tokens.parquet", compression="lz4")
    seconds = time.perf_counter() - started
    counts = pl.scan_parquet(workdir / "tokens.parquet").select(
        pl.col("tokens").list.len().sum().alias("tokens"), pl.len().alias("reviews")
    )
    return {"seconds": seconds, **counts.collect().row(0, named=True)}


RUNS = {"ours": run_ours, "reference": run_reference, "floor": run_floor}
NAMES = {
    "reference": "reference (csv + re + dict)",
    "ours": "ours (polars, streaming)",
    "floor": "floor (polars tokenizer alone)",
}


def _child(which: str, source: Path, workdir: Path) -> None:
    result = RUNS[which](source, workdir)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _measure(which: str, source: Path, workdir: Path) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--child",
        which,
        "--csv",
        str(source),
        "--keep",
        str(workdir),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median time; peak RSS is the largest of all runs."""
    ordered = sorted(runs, key=lambda r: r["seconds"])
    return {**ordered[(len(ordered) - 1) // 2], "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="Size of the generated CSV.")
    parser.add_argument("--only", choices=list(RUNS), default=None)
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each version.")
    parser.add_argument("--keep", type=Path, default=None, help="Work here and keep the files.")
    parser.add_argument("--csv", type=Path, default=None, help="Use this CSV, do not generate.")
    parser.add_argument("--child", choices=list(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.csv, args.keep)
        return

    root = args.keep or Path(tempfile.mkdtemp(prefix="reviewgru-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        source = args.csv or root / f"reviews-{args.mb}mb.csv"
        if not source.exists():
            started = time.perf_counter()
            generate(source, args.mb)
            print(f"generated {source} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        mb = source.stat().st_size / 1e6
        # Reference before and after the others, `repeats` times; medians (timings here are noisy).
        sides = [args.only] if args.only else ["reference", "ours", "floor"]
        order = [*sides * args.repeats, *sides[:1] * (len(sides) > 1)]
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for side in order:
            runs[side].append(_measure(side, source, root / side))
            shutil.rmtree(root / side, ignore_errors=True)
        results = {side: _median_run(r) for side, r in runs.items()}
        print(f"input: {source.name}, {mb:.0f} MB, {os.cpu_count()} cores, order {order}")
        print("| version | time (s) | MB/s | tokens/s | reviews | peak RSS (MB) |")
        print("|---|---|---|---|---|---|")
        for side, r in results.items():
            print(
                f"| {NAMES[side]} | {r['seconds']:.1f} | {mb / r['seconds']:.1f} | "
                f"{r['tokens'] / r['seconds'] / 1e6:.2f} M | {r['reviews']:.0f} | "
                f"{r['peak_rss_mb']:.0f} |"
            )
        if {"ours", "reference"} <= results.keys():
            ratio = results["reference"]["seconds"] / results["ours"]["seconds"]
            same = results["ours"]["tokens"] == results["reference"]["tokens"]
            print(f"ours / reference: {ratio:.1f}x faster (same token count: {same})")
        if {"ours", "floor"} <= results.keys():
            share = results["floor"]["seconds"] / results["ours"]["seconds"]
            print(f"the floor's time is {share:.0%} of ours")
        if "ours" in results:
            r = results["ours"]
            print(f"ours: ingest {r['ingest_s']:.1f} s, tokenize {r['tokenize_s']:.1f} s")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
