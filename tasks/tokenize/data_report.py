"""The data report: what came in, what was kept, and how it differs from the champion's data.

Users decide from the drift whether a retrain was worth it: more data, a new vocabulary (the OOV
rate of the new test reviews under the champion's vocabulary), longer or shorter reviews.
"""

from __future__ import annotations

import pyarrow.parquet as pq

from tasks.records import SPLITS, Champion, Drift, Snapshot, TokenizedData
from tasks.tokenize.tokenizer import UNK_ID, Tokenizer, Vocab

OOV_SAMPLE_REVIEWS = 20_000  # test reviews re-encoded with the champion's vocabulary, at most


def _oov_rate(texts: list[str], vocab: Vocab) -> float:
    ids = Tokenizer.of(vocab).encode(texts)
    total = sum(len(row) for row in ids)
    return sum(int((row == UNK_ID).sum()) for row in ids) / total if total else 0.0


def drift(version: str, stats: dict, vocab: Vocab, data: TokenizedData) -> Drift:
    """`data` against the champion's data (`stats` from its tag, `vocab` its vocabulary)."""
    test = pq.ParquetFile(data.split_path("test"))
    texts: list[str] = []
    for batch in test.iter_batches(batch_size=OOV_SAMPLE_REVIEWS, columns=["text"]):
        texts = batch.column("text").to_pylist()
        break
    return Drift(
        champion_version=version,
        reviews=(sum(stats["reviews"].values()), sum(data.reviews.values())),
        train_tokens=(stats["tokens"]["train"], data.tokens["train"]),
        test_oov_rate=(stats["oov_rate"]["test"], _oov_rate(texts, vocab)),
        median_length=(stats["lengths"]["train"]["p50"], data.length_percentiles["train"]["p50"]),
        p90_length=(stats["lengths"]["train"]["p90"], data.length_percentiles["train"]["p90"]),
    )


def champion_drift(champion: Champion | None, data: TokenizedData) -> Drift | None:
    """Drift against the champion's data; None without a champion or one registered before
    its data stats were recorded."""
    if champion is None or champion.data_stats is None:
        return None
    return drift(champion.version, champion.data_stats, Vocab.load(champion.vocab_path), data)


def data_report(
    snapshot: Snapshot, data: TokenizedData, drifted: Drift | None
) -> list[dict[str, object]]:
    """Rows of the report table: outcome of every row read, the splits, languages, drift."""
    rows: list[dict[str, object]] = [
        {"what": "rows read", "value": snapshot.rows_read},
        {"what": "rows ok", "value": snapshot.rows_ok},
        {"what": "rows duplicate (dropped)", "value": snapshot.rows_duplicates},
        {"what": "rows quarantined", "value": snapshot.rows_quarantined},
    ]
    rows += [
        {"what": f"  quarantined: {reason}", "value": count}
        for reason, count in sorted(snapshot.quarantine_reasons.items())
    ]
    for quoting in sorted(set(snapshot.quoting.values())):
        files = [f.rsplit("/", 1)[-1] for f, q in snapshot.quoting.items() if q == quoting]
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        rows.append({"what": f"CSV/TSV read with quoting={quoting}", "value": shown})
    rows.append({"what": "vocabulary size", "value": data.vocab_size})
    for split in SPLITS:
        lengths = data.length_percentiles.get(split, {})
        rows += [
            {"what": f"{split}: reviews", "value": data.reviews.get(split, 0)},
            {"what": f"{split}: tokens", "value": data.tokens.get(split, 0)},
            {"what": f"{split}: OOV rate", "value": round(data.oov_rate.get(split, 0.0), 4)},
            {
                "what": f"{split}: tokens per review p50 / p90 / p99",
                "value": " / ".join(str(lengths.get(p, "-")) for p in ("p50", "p90", "p99")),
            },
        ]
    rows += [
        {"what": f"language: {language}", "value": n} for language, n in data.languages.items()
    ]
    if drifted is not None:
        rows += [
            {"what": f"drift vs champion v{drifted.champion_version}: {label}", "value": value}
            for label, value in drifted.rows()
        ]
    return rows
