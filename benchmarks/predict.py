"""Next-word latency and throughput of the registered pyfunc model, warm, in process.

At seed sizes (vocab 10000, embedding 64, GRU 64) a model is saved exactly as `register` logs it
(model from code + Keras file + vocab.json), loaded with `mlflow.pyfunc.load_model` and asked for
the top 5 next words of one ~12-word review start, many times: p50 / p99 latency. Beside it, in the
same run, the reference: the same Keras model through `model.predict` (Keras' batch API, which
most code reaches for first). Then batch throughput: 256 texts per call.

    .venv/bin/python benchmarks/predict.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mlflow
import numpy as np
import pandas as pd

from tasks.registry.pyfunc import save_pyfunc
from tasks.tokenize.tokenizer import Tokenizer, Vocab
from tasks.train.model import build_language_model

VOCAB, EMBEDDING, UNITS = 10_000, 64, 64
TEXT = "i bought this blender for my mother and the blender is great and it is"


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def _time_calls(call, requests: int) -> list[float]:
    for _ in range(10):  # warm-up: graph tracing, caches
        call()
    samples = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    words = TEXT.split()
    tokens = ["[PAD]", "[UNK]", *dict.fromkeys(words)]
    tokens += [f"w{i}" for i in range(VOCAB - len(tokens))]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_language_model(VOCAB, EMBEDDING, UNITS)
        model.save(root / "model.keras")
        vocab = Vocab(tokens, [0] * len(tokens), lowercase=True)
        vocab.save(root / "vocab.json")
        save_pyfunc(root / "pyfunc", root / "model.keras", root / "vocab.json")
        pyfunc = mlflow.pyfunc.load_model(str(root / "pyfunc"))

        one = pd.DataFrame({"text": [TEXT], "top_k": [5]})
        ids = Tokenizer.of(vocab).encode([TEXT])[0][None, :]

        def reference() -> None:
            logits = model.predict(ids, verbose=0)[0, -1]
            np.argsort(-logits)[:5]

        rounds = {"reference": [], "ours": []}
        for _ in range(3):  # reference before and after ours, medians of the rounds
            rounds["reference"].append(_time_calls(reference, args.requests // 3))
            rounds["ours"].append(_time_calls(lambda: pyfunc.predict(one), args.requests // 3))
        rounds["reference"].append(_time_calls(reference, args.requests // 3))

        batch = pd.DataFrame({"text": [TEXT] * 256, "top_k": [5] * 256})
        batch_ms = statistics.median(_time_calls(lambda: pyfunc.predict(batch), 10))

    rows = []
    for name, label in (("reference", "Keras model.predict"), ("ours", "pyfunc.predict")):
        p50s, p99s = zip(*(_percentiles(samples) for samples in rounds[name]), strict=True)
        rows.append((label, statistics.median(p50s), statistics.median(p99s)))
    print(f"next-word top-5, 1 text of {len(words)} words, vocab {VOCAB}, {os.cpu_count()} cores")
    print(f"{'path':<22}{'p50 ms':>10}{'p99 ms':>10}")
    for label, p50, p99 in rows:
        print(f"{label:<22}{p50:>10.2f}{p99:>10.2f}")
    print(f"speed-up p50: {rows[0][1] / rows[1][1]:.1f}x")
    print(f"batch of 256 texts: {batch_ms:.1f} ms → {256 / batch_ms * 1000:.0f} texts/s")


if __name__ == "__main__":
    main()
