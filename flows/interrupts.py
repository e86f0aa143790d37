"""Ctrl-C, `docker stop`, a Kubernetes eviction: a run stops within seconds, recorded as such.

SIGINT and SIGTERM raise `Interrupted` in the main thread, where the flow runs: Keras' fit stops
at the step it is in (its backup of the last finished epoch stays: an exception skips the
`on_train_end` that would delete it), Prefect records the flow run as Crashed (any
BaseException that is not an Exception), the retrain flow ends its MLflow run as KILLED, and the
CLI prints how to resume. `Interrupted` is not a KeyboardInterrupt, which click would swallow
into "Aborted!".
"""

from __future__ import annotations

import contextlib
import functools
import signal
import subprocess
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The process was asked to stop by a signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _raise_interrupted(signum: int, frame: FrameType | None) -> None:
    # A second signal while the first one's cleanup runs gets Python's default behaviour.
    for other in SIGNALS:
        signal.signal(other, signal.SIG_DFL)
    raise Interrupted(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise `Interrupted` (Prefect's own SIGTERM bridge, installed
    while a flow runs, raises its TerminationSignal instead: the same outcome)."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def start_temporary_server_in_own_session() -> None:
    """Start Prefect's temporary server (when no PREFECT_API_URL is set) outside this terminal's
    process group: Ctrl-C reaches the whole foreground group, and a server stopped by it could
    not record the interrupted flow run, which would then show Running forever."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return
    from prefect.server.api.server import SubprocessASGIServer

    popen = subprocess.Popen
    # Prefect starts the server with subprocess.Popen and offers no option for its session; the
    # client started later finds this running singleton and uses it.
    subprocess.Popen = functools.partial(popen, start_new_session=True)  # type: ignore[assignment,misc]
    try:
        SubprocessASGIServer().start()
    finally:
        subprocess.Popen = popen  # type: ignore[misc]


def stop_temporary_server() -> None:
    """Send the run's pending log lines, then stop Prefect's temporary server now (it logs a
    line when it stops) rather than at exit, so that the CLI's own last line comes after it."""
    import sys

    if "prefect.logging.handlers" in sys.modules:
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)
    if "prefect.server.api.server" in sys.modules:
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().stop()
