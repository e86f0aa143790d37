"""The one line and exit code the CLI gives each kind of failure."""

import errno
import signal

from prefect.exceptions import TerminationSignal

from flows.failures import explain
from flows.interrupts import Interrupted


class NoCredentialsError(Exception):
    """Named like botocore's (s3fs is not installed here): matched by name."""


def test_each_failure_gets_its_line_and_exit_code() -> None:
    full = OSError(errno.ENOSPC, "No space left on device", "/data/work/snapshots/x.tmp")
    assert explain(full) == (
        "disk full writing /data/work/snapshots/x.tmp ([Errno 28] No space left on device: "
        "'/data/work/snapshots/x.tmp'); free space there or choose another --workdir, then run "
        "again (no partial file is kept)",
        1,
    )
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = full
    assert explain(wrapped)[0].startswith("disk full writing /data/work/snapshots/x.tmp")

    message, code = explain(NoCredentialsError("Unable to locate credentials"))
    assert code == 2 and message.startswith("cloud credentials missing or invalid (Unable to")

    assert explain(Interrupted(signal.SIGINT))[1] == 130
    message, code = explain(TerminationSignal(signal.SIGTERM))
    assert code == 143 and message.startswith("stopped by SIGTERM; nothing was registered.")

    message, code = explain(KeyError("model"))
    assert code == 1 and message.startswith("KeyError: 'model' (the full traceback is in")
