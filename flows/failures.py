"""How a CLI command ends on an error: one line on stderr, printed last, naming the thing and
what to do; exit 2 for bad input or usage, 1 for anything else, 128 + N after signal N.

The full traceback of an error inside a flow is in the Prefect run's log (the API handler
receives it; the terminal's handlers drop tracebacks, see `quiet_console_tracebacks`);
REVIEWGRU_TRACEBACK=1 prints it on the terminal too.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
import traceback
from collections.abc import Iterator

import typer

from flows.interrupts import Interrupted, stop_temporary_server

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# Cloud SDK exception names (botocore, google-auth): matched by name, not imported, since the
# s3/gs filesystems are optional.
_CREDENTIAL_ERRORS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "DefaultCredentialsError",
    "RefreshError",
}


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _disk_full(error: BaseException) -> bool:
    # polars (ComputeError) and pyarrow report ENOSPC without an errno: match their message too.
    text = str(error)
    return (
        getattr(error, "errno", None) == errno.ENOSPC
        or "No space left on device" in text
        or "os error 28" in text
    )


def _first_line(error: BaseException) -> str:
    return next(iter(str(error).strip().splitlines()), "") or type(error).__name__


def explain(error: BaseException) -> tuple[str, int]:
    """The one line to print for `error`, and the exit code."""
    from pydantic import ValidationError

    from tasks.records import InputError

    for cause in _chain(error):
        if isinstance(cause, Interrupted) or type(cause).__name__ == "TerminationSignal":
            # Prefect's TerminationSignal keeps its number in `signal`.
            signum = int(getattr(cause, "signum", 0) or getattr(cause, "signal", signal.SIGTERM))
            name = signal.Signals(signum).name
            return (
                f"stopped by {name}; nothing was registered. Run the same command again to "
                "resume training from its last finished epoch",
                128 + signum,
            )
        if _disk_full(cause):
            where = getattr(cause, "filename", None)
            return (
                f"disk full{f' writing {where}' if where else ''} ({_first_line(cause)}); free "
                "space there or choose another --workdir, then run again (no partial file is "
                "kept)",
                EXIT_FAILED,
            )
        if type(cause).__name__ in _CREDENTIAL_ERRORS:
            return (
                f"cloud credentials missing or invalid ({_first_line(cause)}); set them (AWS_* "
                "variables or ~/.aws for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://) and "
                "run again",
                EXIT_BAD_INPUT,
            )
    if isinstance(error, InputError):
        return str(error), EXIT_BAD_INPUT
    if type(error).__name__ == "SourceUnavailable":  # tasks.ingest.sources: its message says it all
        return str(error), EXIT_FAILED
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        return f"invalid config value for {where}: {first['msg']}", EXIT_BAD_INPUT
    if isinstance(error, FileNotFoundError):
        return f"{error.filename}: no such file", EXIT_BAD_INPUT
    if isinstance(error, PermissionError):
        return f"{error.filename}: permission denied; check its owner and mode", EXIT_BAD_INPUT
    return (
        f"{type(error).__name__}: {_first_line(error)} (the full traceback is in the Prefect "
        "run's log; REVIEWGRU_TRACEBACK=1 prints it here)",
        EXIT_FAILED,
    )


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Turn any error escaping a command into its one line, printed after everything else."""
    try:
        yield
    except (SystemExit, typer.Exit):
        raise
    except BaseException as error:  # each one becomes its line and exit code
        message, code = explain(error)
        if os.environ.get("REVIEWGRU_TRACEBACK"):
            traceback.print_exception(error)
        with contextlib.suppress(Exception):
            stop_temporary_server()
        sys.stdout.flush()
        print(f"reviewgru: error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(code) from None


class _ConsoleWithoutTracebacks(logging.Formatter):
    """The console handler's own formatter, minus tracebacks: the CLI's last line says what
    happened; the API handler, which formats the record itself, still sends them to the run log."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info or record.exc_text or record.stack_info):
            return self.inner.format(record)
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info = bare.exc_text = bare.stack_info = None
        return self.inner.format(bare)


class _WithoutInputErrors(logging.Filter):
    """Prefect logs a failed task and flow; for bad input the CLI's one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tasks.records import InputError

        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, InputError) and "InputError" not in record.getMessage()


def quiet_console_tracebacks() -> None:
    """Prefect's terminal handlers print log lines without tracebacks, and none about bad input.

    Only the terminal is spared: the Prefect API still receives the full log for the UI.
    """
    from prefect.logging import configuration

    if not configuration.PROCESS_LOGGING_CONFIG:  # make Prefect's handlers now, not at flow start
        configuration.setup_logging()
    for name in ["", *logging.root.manager.loggerDict]:
        for handler in getattr(logging.getLogger(name), "handlers", []):
            if not isinstance(handler, logging.StreamHandler) or isinstance(
                handler.formatter, _ConsoleWithoutTracebacks
            ):
                continue
            inner = handler.formatter or logging.Formatter()
            handler.setFormatter(_ConsoleWithoutTracebacks(inner))
            handler.addFilter(_WithoutInputErrors())
