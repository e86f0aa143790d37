"""What a training run under test has backed up so far."""

import json
from pathlib import Path

from tasks.train.fit import BACKUP_METADATA


def backed_up_epoch(workdir: Path) -> int:
    """The epoch in the training backup under `workdir`, 0 while there is none (or half written)."""
    for metadata in workdir.glob(f"models/*/backup/{BACKUP_METADATA}"):
        try:
            return int(json.loads(metadata.read_text())["epoch"])
        except (OSError, ValueError, KeyError):
            pass
    return 0
