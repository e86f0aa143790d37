"""Reviews as flat ids + offsets, and the training windows cut from them.

Reviews are cut into windows of ``max_len + 1`` tokens with stride ``max_len``: consecutive windows
share one token (the last target of one is the first input of the next), so every token of a review
except its first is a target exactly once. Windows are right-padded with 0; padding targets get
sample weight 0 in training and are skipped in evaluation (see ``model.py`` for why the model
itself does not mask). Training batches windows of similar length and cuts each batch to a bucket
width (`bucket_widths`), so that most of the padding is never computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

Sequences = tuple[np.ndarray, np.ndarray]
"""Reviews as (flat ids, offsets): review i is ``values[offsets[i]:offsets[i + 1]]``."""


def read_sequences(split_path: Path) -> Sequences:
    """The ``ids`` column of a split as flat int32 values and int64 offsets starting at 0."""
    column = pq.read_table(split_path, columns=["ids"]).column("ids").combine_chunks()
    if column.null_count:
        raise ValueError(f"{split_path}: {column.null_count} rows have null ids")
    offsets = column.offsets.to_numpy().astype(np.int64)
    values = column.values.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    # `.values` ignores a slice offset of the list array; rebase so offsets[0] == 0.
    values = values[offsets[0] : offsets[-1]]
    return values, offsets - offsets[0]


def pack_sequences(sequences: list[np.ndarray]) -> Sequences:
    """A list of per-review id arrays as (flat values, offsets)."""
    lengths = np.array([len(seq) for seq in sequences], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = (
        np.concatenate(sequences).astype(np.int32) if sequences else np.zeros(0, dtype=np.int32)
    )
    return values, offsets


def window_owners(sequences: Sequences, max_len: int) -> np.ndarray:
    """The review index of each window `make_windows` cuts, in the same order."""
    lengths = np.diff(sequences[1])
    per_review = (np.maximum(lengths - 1, 0) + max_len - 1) // max_len
    return np.repeat(np.arange(len(lengths)), per_review)


def make_windows(sequences: Sequences, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets (N, max_len) int32 from every review's windows, right-padded with 0."""
    values, offsets = sequences
    lengths = np.diff(offsets)
    review = window_owners(sequences, max_len)
    per_review = np.bincount(review, minlength=len(lengths))
    rank = np.arange(len(review)) - np.repeat(np.cumsum(per_review) - per_review, per_review)
    starts = offsets[:-1][review] + rank * max_len
    positions = starts[:, None] + np.arange(max_len + 1)
    # Positions past the review's end read a 0 appended after the last value.
    positions = np.where(positions < offsets[1:][review][:, None], positions, len(values))
    windows = np.append(values, np.int32(0)).astype(np.int32)[positions]
    return np.ascontiguousarray(windows[:, :-1]), np.ascontiguousarray(windows[:, 1:])


def bucket_widths(y: np.ndarray, buckets: int) -> np.ndarray:
    """Each window's width in training: its real targets rounded up to one of `buckets` widths
    spread evenly up to the window length (at max_len 40 and 4 buckets: 10, 20, 30, 40).

    A window's targets are a real prefix then padding, so cutting it to a width ≥ that prefix
    changes no loss. Few widths keep XLA compiling few shapes (one per width)."""
    max_len = y.shape[1]
    edges = -(-max_len * np.arange(1, buckets + 1) // buckets)  # ceil, last == max_len
    real = np.count_nonzero(y, axis=1)
    return edges[np.searchsorted(edges, real)].astype(np.int32)


def batches_per_width(widths: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct bucket widths and how many batches each makes (its last one partial)."""
    distinct, counts = np.unique(widths, return_counts=True)
    return distinct, -(-counts // batch_size)


def computed_positions(y: np.ndarray, batch_size: int, buckets: int) -> int:
    """Positions a training epoch computes: each bucket's batches are batch_size × its width,
    the last one filled up with all-padding rows."""
    widths, batches = batches_per_width(bucket_widths(y, buckets), batch_size)
    return int(np.sum(batches * batch_size * widths))


def load_windows(split_path: Path, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """`make_windows` over the reviews of one split's Parquet file."""
    return make_windows(read_sequences(split_path), max_len)
