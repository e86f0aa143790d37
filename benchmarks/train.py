"""Training throughput: our train step against the tutorial's straightforward Keras build.

Both train on the same windows at the seed sizes (vocab 10 000, embedding 64, GRU 64, max_len 40,
batch 32), in one process:

- reference: Embedding(mask_zero=True) → GRU → Dense(softmax), loss
  ``sparse_categorical_crossentropy`` on probabilities, ``accuracy``, adam, default compile (no
  XLA), fed the padded windows as plain (x, y) batches;
- ours: exactly the train step of ``tasks/train/fit.py`` at the default ``TrainConfig``:
  ``tasks.train.model.build_language_model`` (logits, no mask),
  ``tasks.train.fit.compile_for_training``
  (``tasks.train.fused_softmax``: the output layer and the exact cross-entropy fused in one op, the
  bias folded into the product, the logits' gradient written once; products in bf16 with fp32
  accumulation where the CPU has ``amx_bf16``/``avx512_bf16`` (``precision=auto``), else fp32;
  adam; ``jit_compile``), batches from ``tasks.train.fit.make_dataset`` (windows batched by length
  into ``buckets`` widths);
- ours with the other precision forced (``train.precision``), and round 1's unfused step (the
  Dense layer and ``tasks.train.softmax_loss``'s loss from logits, fp32);
- without ``--core``, extra rows, one lever each: no length buckets; the unfused step with Keras'
  own loss and argmax accuracy, or with the Dense layer in ``mixed_bfloat16``;
  ``steps_per_execution=8``; batch 128.

The CPU's name and its bf16 flags (from /proc/cpuinfo) are printed with the table.

Data: reviews of random ids drawn from a Zipf-like distribution (id 1..vocab-1), lengths
log-normal around 45 tokens clipped to 5..200, packed and cut by ``tasks.train.windows``
(``pack_sequences`` + ``make_windows``), shuffled once (seeded); every row trains on the same
first ``steps × 32`` windows (ours in the batches its length buckets make; batch 128 takes a
quarter of the steps).

Method (timings on this shared 2-core machine are noisy): each build is compiled and warmed up with
one epoch that is not timed (XLA compiles one program per bucket width); then each measurement is
one ``model.fit(epochs=1)`` over the windows (what training does per epoch), in rounds ``reference,
ours, extras…`` repeated ``--repeats`` times, plus a last reference round, so that drift hits both;
the medians are reported. Real tokens/s counts only non-padding targets. The time is the epoch's,
taken by ``tasks.train.fit.TrainPhaseClock`` (behind the run's ``train_tokens_per_s``), not
the whole ``fit`` call: after ``on_train_end`` a one-epoch ``fit`` here often idles up to ~10 s
more before returning (whole-``fit`` times cluster at 10.2 and 20.5 s), while the tf.data iterator
is torn down; with the datasets' AUTOTUNE turned off (``Options().autotune.enabled = False``) the
stall was gone, so it looks like waiting for tf.data's autotuning thread. Between the epochs of one
long ``fit`` it cost 0.3–1 s. The whole-``fit`` times are printed too, and the share of the CPU
other processes took during each measurement (from /proc/stat), to tell noise from signal.

FLOPs per real token (matrix products only; biases, gate non-linearities, softmax and the
embedding gather/scatter add < 5 %), with E = embedding, U = GRU units, V = vocab:

    forward  = 2·3U·(E + U)   (GRU, reset_after: input and recurrent kernels, 3 gates)
             + 2·U·V          (Dense to the vocabulary)
    training ≈ 3 × forward    (the backward pass does two products per forward product)

≈ 4.0 MFLOP per token at the seed sizes. GFLOP/s = real tokens/s × that; padded positions are
computed too, so the hardware does 1 / (1 − padding) times more (the padding left after cutting
batches to their bucket width is printed). The GEMM ceiling is the best
fp32 ``tf.matmul`` rate (tf.function, with and without XLA; median of repeats) over the Dense
layer's shape (B·T)×U @ U×V and a 2048² square; the Dense shape (inner dimension only 64) reaches
much less than the square, and it is where most of the training FLOPs are.

    .venv/bin/python benchmarks/train.py [--repeats 3] [--steps 150] [--quick] [--core]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from tasks.config import ModelConfig, TrainConfig
from tasks.train.fit import (
    JIT_COMPILE,
    TrainPhaseClock,
    compile_for_training,
    configured_model,
    make_dataset,
)
from tasks.train.fused_softmax import cpu_flags, resolve_precision
from tasks.train.model import build_language_model
from tasks.train.windows import computed_positions, make_windows, pack_sequences

VOCAB, EMBEDDING, UNITS, BATCH, MAX_LEN = 10_000, 64, 64, 32, 40
SEED = 0


def flops_per_token(vocab: int = VOCAB, embedding: int = EMBEDDING, units: int = UNITS) -> float:
    """Training FLOPs per target token (see the module docstring)."""
    forward = 2 * 3 * units * (embedding + units) + 2 * units * vocab
    return 3.0 * forward


def make_reviews_windows(n_windows: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """`n_windows` shuffled (x, y) windows cut by `tasks.train.windows` from Zipf-distributed
    reviews."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, VOCAB, dtype=np.float64)
    probabilities = 1.0 / (ranks + 2.7) ** 1.07  # Zipf–Mandelbrot, close to English word counts
    probabilities /= probabilities.sum()
    reviews: list[np.ndarray] = []
    x = y = np.zeros((0, MAX_LEN), np.int32)
    while len(x) < n_windows:
        lengths = np.clip(rng.lognormal(np.log(45), 0.8, size=1000), 5, 200).astype(np.int64)
        ids = rng.choice(np.arange(1, VOCAB, dtype=np.int32), size=lengths.sum(), p=probabilities)
        reviews += np.split(ids, np.cumsum(lengths)[:-1])
        x, y = make_windows(pack_sequences(reviews), MAX_LEN)
    order = np.random.default_rng(seed).permutation(len(x))[:n_windows]
    return x[order], y[order]


def reference_model() -> keras.Model:
    """The tutorial's build: masked embedding, softmax output, loss on probabilities, no XLA."""
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype="int32"),
            keras.layers.Embedding(VOCAB, EMBEDDING, mask_zero=True),
            keras.layers.GRU(UNITS, return_sequences=True, recurrent_initializer="glorot_uniform"),
            keras.layers.Dense(VOCAB, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def our_model(
    train_cfg: TrainConfig,
    steps_per_execution: int = 1,
    keras_loss: bool = False,
    fused: bool = True,
    model_cfg: ModelConfig | None = None,
) -> keras.Model:
    """The model and compile of `tasks/train/fit.py`; `fused=False`: round 1's step (the Dense layer
    and `tasks.train.softmax_loss`); `keras_loss`: that step with Keras' own loss and argmax
    accuracy instead of `tasks.train.softmax_loss` (the lever that module is). The model is the
    seed's layers (untied, no dropout) unless `model_cfg` gives the pipeline's regularized
    default."""
    keras.utils.set_random_seed(SEED)
    if model_cfg is None:
        model = build_language_model(VOCAB, EMBEDDING, UNITS)
    else:
        model = configured_model(VOCAB, model_cfg)
    if not keras_loss:
        return compile_for_training(model, train_cfg, steps_per_execution, fused=fused)
    model.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"
        ),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=JIT_COMPILE,
    )
    return model


def bf16_output_model(train_cfg: TrainConfig) -> keras.Model:
    """Ours with the output layer computing in bfloat16 (``mixed_bfloat16``; weights fp32)."""
    keras.utils.set_random_seed(SEED)
    model = build_language_model(VOCAB, EMBEDDING, UNITS, output_dtype="mixed_bfloat16")
    return compile_for_training(model, train_cfg, fused=False)


@dataclass
class Build:
    """One row of the table: a compiled model and the dataset it trains on."""

    name: str
    model: keras.Model
    dataset: tf.data.Dataset
    warmup_seconds: float = 0.0
    seconds: list[float] = field(default_factory=list)  # the epoch, by TrainPhaseClock
    fit_seconds: list[float] = field(default_factory=list)  # the whole `fit` call
    others_cpu: list[float] = field(default_factory=list)

    def warm_up(self) -> None:
        started = time.perf_counter()
        self.model.fit(self.dataset, epochs=1, shuffle=False, verbose=0)
        self.warmup_seconds = time.perf_counter() - started

    def measure(self) -> None:
        clock = TrainPhaseClock()
        busy, own = _cpu_seconds()
        started = time.perf_counter()
        self.model.fit(self.dataset, epochs=1, shuffle=False, verbose=0, callbacks=[clock])
        elapsed = time.perf_counter() - started
        self.fit_seconds.append(elapsed)
        self.seconds.append(clock.seconds[0])
        busy_after, own_after = _cpu_seconds()
        cores = os.cpu_count() or 1
        self.others_cpu.append(max(0.0, busy_after - busy - (own_after - own)) / elapsed / cores)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown CPU"


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine was busy or stolen by the host, CPU seconds of this process).

    Their difference over a measurement is what other processes took: the noise indicator."""
    own = sum(os.times()[:2])
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:  # not Linux: no indicator
        return own, own
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy, own


def gemm_ceiling(repeats: int, min_seconds: float) -> dict[str, float]:
    """Best fp32 GFLOP/s of tf.matmul per shape (median of `repeats`), jit'd or not."""
    rng = np.random.default_rng(SEED)
    shapes = {
        f"({BATCH}·{MAX_LEN})x{UNITS} @ {UNITS}x{VOCAB}": (BATCH * MAX_LEN, UNITS, VOCAB),
        "2048x2048 @ 2048x2048": (2048, 2048, 2048),
    }
    results: dict[str, float] = {}
    for label, (m, k, n) in shapes.items():
        a = tf.constant(rng.standard_normal((m, k), dtype=np.float32))
        b = tf.constant(rng.standard_normal((k, n), dtype=np.float32))
        for jit in (False, True):
            matmul = tf.function(tf.linalg.matmul, jit_compile=jit)
            matmul(a, b).numpy()  # trace and compile
            rates = []
            for _ in range(repeats):
                calls, started = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - started) < min_seconds:
                    matmul(a, b).numpy()
                    calls += 1
                rates.append(2.0 * m * k * n * calls / elapsed / 1e9)
            results[f"{label}{' (XLA)' if jit else ''}"] = statistics.median(rates)
    return results


def _run_rounds(builds: list[Build], repeats: int, log: Callable[[str], None]) -> None:
    reference, others = builds[0], builds[1:]
    for round_ in range(repeats):
        for build in (reference, *others):
            build.measure()
            log(
                f"round {round_ + 1}/{repeats}: {build.name}: {build.seconds[-1]:.1f} s "
                f"(fit {build.fit_seconds[-1]:.1f} s) "
                f"(other processes: {100 * build.others_cpu[-1]:.0f} % of the CPU)"
            )
    reference.measure()  # reference after the last round too
    log(
        f"final: {reference.name}: {reference.seconds[-1]:.1f} s "
        f"(fit {reference.fit_seconds[-1]:.1f} s) "
        f"(other processes: {100 * reference.others_cpu[-1]:.0f} % of the CPU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="rounds of measurements")
    parser.add_argument(
        "--steps",
        type=int,
        default=150,
        help="batches of 32 per measurement (rounded up to a multiple of 8)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 steps, 1 round")
    parser.add_argument(
        "--core",
        action="store_true",
        help="only the reference, ours and the precision/fusion rows (a busy machine's run)",
    )
    args = parser.parse_args()
    repeats, steps = (1, 16) if args.quick else (args.repeats, args.steps)
    steps = -(-steps // 8) * 8  # whole executions of 8 and whole batches of 128
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {message}", file=sys.stderr, flush=True)

    x, y = make_reviews_windows(steps * BATCH)
    real_tokens = int(np.count_nonzero(y))
    padding = 1.0 - real_tokens / y.size
    cfg = TrainConfig(batch_size=BATCH, max_len=MAX_LEN)
    bucketed_padding = 1.0 - real_tokens / computed_positions(y, BATCH, cfg.buckets)
    log(
        f"{len(x)} windows, {real_tokens} real targets, {100 * padding:.1f}% padding, "
        f"{100 * bucketed_padding:.1f}% in {cfg.buckets} buckets"
    )

    gemm = gemm_ceiling(repeats=1 if args.quick else 5, min_seconds=0.3 if args.quick else 1.5)
    ceiling = max(gemm.values())
    log("GEMM " + ", ".join(f"{label}: {rate:.0f} GFLOP/s" for label, rate in gemm.items()))

    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).prefetch(tf.data.AUTOTUNE)
    buckets = cfg.buckets

    def ours_data(batch: int = BATCH, buckets: int = buckets) -> tf.data.Dataset:
        return make_dataset(x, y, batch, shuffle=False, seed=SEED, buckets=buckets)

    flags = cpu_flags()
    precision = resolve_precision(cfg.precision, flags)
    seen = sorted(flag for flag in flags if "bf16" in flag or flag.startswith(("amx", "avx512f")))
    log(f"CPU: {_cpu_name()}; flags: {', '.join(seen) or 'none'}; precision auto → {precision}")
    other = "fp32" if precision == "bf16" else "bf16"
    builds = [
        Build("reference (tutorial: mask, softmax, no XLA)", reference_model(), plain),
        Build(
            f"ours ({buckets} length buckets, fused output layer + loss, {precision} products, "
            f"jit={JIT_COMPILE})",
            our_model(cfg),
            ours_data(),
        ),
        Build(
            f"ours, fused, {other} products (precision={other})",
            our_model(cfg.model_copy(update={"precision": other})),
            ours_data(),
        ),
        Build(
            "ours unfused (round 1: Dense + tasks.train.softmax_loss, fp32)",
            our_model(cfg, fused=False),
            ours_data(),
        ),
        Build(
            f"ours, the pipeline's default model (tied embeddings, dropout "
            f"{ModelConfig().dropout}), {precision} products",
            our_model(cfg, model_cfg=ModelConfig()),
            ours_data(),
        ),
    ]
    if not args.core:
        builds += [
            Build(
                "ours without buckets (every batch max_len wide)",
                our_model(cfg),
                ours_data(buckets=1),
            ),
            Build(
                "ours unfused with Keras' loss and argmax accuracy",
                our_model(cfg, keras_loss=True),
                ours_data(),
            ),
            Build(
                "ours unfused, Dense in bfloat16 (mixed_bfloat16)",
                bf16_output_model(cfg),
                ours_data(),
            ),
            Build(
                "ours, steps_per_execution=8", our_model(cfg, steps_per_execution=8), ours_data()
            ),
            Build("ours, batch 128", our_model(cfg), ours_data(batch=4 * BATCH)),
        ]
    for build in builds:
        build.warm_up()
        log(f"warm-up {build.name}: {build.warmup_seconds:.1f} s")
    _run_rounds(builds, repeats, log)

    per_token = flops_per_token()
    reference_rate = real_tokens / statistics.median(builds[0].seconds)
    print(
        f"\nTraining throughput, vocab {VOCAB}, embedding {EMBEDDING}, GRU {UNITS}, "
        f"max_len {MAX_LEN}, {len(x)} windows per measurement, median of "
        f"{len(builds[1].seconds)} ({len(builds[0].seconds)} for the reference), "
        f"{os.cpu_count()} cores, {_cpu_name()} (bf16 flags: "
        f"{', '.join(f for f in seen if 'bf16' in f) or 'none'})\n"
    )
    print("| build | real tokens/s | × reference | GFLOP/s | % of GEMM ceiling |")
    print("|---|---:|---:|---:|---:|")
    for build in builds:
        rate = real_tokens / statistics.median(build.seconds)
        gflops = rate * per_token / 1e9
        print(
            f"| {build.name} | {rate:,.0f} | {rate / reference_rate:.2f}× | {gflops:.1f} | "
            f"{100 * gflops / ceiling:.0f} % |"
        )
    print(
        f"\nPadding: {100 * padding:.1f} % of target positions "
        f"({real_tokens:,} real of {y.size:,}), {100 * bucketed_padding:.1f} % after cutting "
        f"batches to {cfg.buckets} bucket widths. "
        f"FLOPs per real token: {per_token / 1e6:.2f} M (3 × forward matmuls). "
        f"GEMM ceiling: {ceiling:.0f} GFLOP/s fp32 ("
        + "; ".join(f"{label}: {rate:.0f}" for label, rate in gemm.items())
        + ")."
    )
    print(
        "Measurements, epoch s / whole fit s (% of the CPU taken by other processes): "
        + "; ".join(
            f"{build.name}: "
            + ", ".join(
                f"{sec:.1f}/{fit:.1f} ({100 * other:.0f} %)"
                for sec, fit, other in zip(
                    build.seconds, build.fit_seconds, build.others_cpu, strict=True
                )
            )
            for build in builds
        )
        + "."
    )
    print(
        "Warm-up (compile + one epoch, not timed): "
        + "; ".join(f"{build.name}: {build.warmup_seconds:.1f} s" for build in builds)
        + f". Wall time: {time.perf_counter() - started:.0f} s."
    )


if __name__ == "__main__":
    main()
