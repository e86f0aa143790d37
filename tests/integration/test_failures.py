"""What the CLI prints when a run cannot go on: one line, last, exit 2 for bad input, 1 else."""

import http.server
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tasks.ingest.sample_data import write_sample_reviews

pytestmark = [pytest.mark.integration]

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _last_line(result: subprocess.CompletedProcess[str]) -> str:
    return result.stderr.strip().splitlines()[-1]


class _Forbidden(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(403)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args: object) -> None:
        pass


def test_bad_config_and_dead_urls_fail_in_one_line_before_any_flow_run(
    tmp_path: Path, reviewgru: Cli
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 2\nnot = [valid toml\n")
    result = reviewgru("run", "--config", str(bad))
    assert result.returncode == 2, result.stderr
    assert _last_line(result) == (
        f"reviewgru: error: {bad}: invalid TOML: Invalid value (at line 3, column 8); fix the file"
    )

    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/reviews.csv"
        result = reviewgru("run", "--data", url)
    assert result.returncode == 1, result.stderr
    assert _last_line(result) == (
        f"reviewgru: error: {url}: cannot connect (Connection refused); check the URL and that its "
        "server is up, then run again"
    )

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/reviews.csv"
        result = reviewgru("run", "--data", url)
    finally:
        server.shutdown()
    assert result.returncode == 2, result.stderr
    assert _last_line(result) == (
        f"reviewgru: error: {url}: access denied (HTTP 403); check the URL and its credentials"
    )

    result = reviewgru("run", "--data", "s3://reviews-bucket/reviews.csv")
    assert result.returncode == 2, result.stderr
    assert _last_line(result).startswith("reviewgru: error: s3://reviews-bucket/reviews.csv: ")
    assert "s3fs" in _last_line(result)

    assert "Beginning flow run" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_damaged_cached_snapshot_is_ingested_again(tmp_path: Path, reviewgru: Cli) -> None:
    reviews = write_sample_reviews(tmp_path / "reviews.csv", rows=300, seed=5)
    args = ["run", "--data", str(reviews), "--workdir", str(tmp_path / "work"), "--json"]
    first = reviewgru(*args, "--until", "ingest")
    assert first.returncode == 0, first.stderr[-3000:]
    (snapshot,) = (tmp_path / "work" / "snapshots").glob("snapshot-*.parquet")
    snapshot.write_bytes(b"garbage" * 100)

    again = reviewgru(*args, "--until", "tokenize")

    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"cached snapshot: {snapshot.name} does not match its recorded digest (truncated or "
        "overwritten); ingesting again" in again.stderr
    )
    assert "Traceback" not in again.stderr
    assert '"tokens": {"train": ' in again.stdout
    assert snapshot.read_bytes().startswith(b"PAR1")
