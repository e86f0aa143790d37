"""A full disk under Keras' h5py writes crashes the process (SIGSEGV in h5py's file close, seen
here on a full tmpfs) instead of raising: check the free space before each such write."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import keras
import numpy as np

_MARGIN_BYTES = 1 << 20  # HDF5 and zip headers, the metadata JSON


def _free_bytes(directory: Path) -> int:
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def ensure_room_for(model: keras.Model, directory: Path, copies: int = 2) -> None:
    """Raise OSError(ENOSPC) unless `directory`'s disk holds `copies` of the model's weights and
    optimizer state (a new file is written beside the old one before it replaces it)."""
    variables = list(model.weights)
    if getattr(model, "optimizer", None) is not None:
        variables += list(model.optimizer.variables)
    size = sum(
        int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
        for v in variables
    )
    need, free = copies * size + _MARGIN_BYTES, _free_bytes(directory)
    if free < need:
        message = f"No space left on device: {need} bytes needed, {free} free"
        raise OSError(errno.ENOSPC, message, str(directory))


class RoomForBackup(keras.callbacks.Callback):
    """Before BackupAndRestore's epoch-end write (put it first): enough room, or ENOSPC."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        ensure_room_for(self.model, self.directory)
