"""http(s) sources against a real local HTTP server: transient errors retried, the rest at once."""

import http.server
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

import pytest

from tasks.ingest import sources
from tasks.ingest.sources import SourceUnavailable, check_readable, open_batches
from tasks.records import InputError

CSV = b"review_id,review_body\nR1,good kettle\nR2,bad lid\n"


class _Reviews(http.server.BaseHTTPRequestHandler):
    """/404, /403: that status; /500: always 500; /flaky: 500 for the first 2 requests."""

    requests: ClassVar[Counter[str]] = Counter()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        name = self.path.strip("/").split(".")[0]
        self.requests[name] += 1
        status = 200
        if name.isdigit():
            status = int(name)
        elif name == "flaky" and self.requests[name] <= 2:
            status = 500
        self.send_response(status)
        self.send_header("Content-Length", str(len(CSV)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(CSV)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(sources, "HTTP_RETRY_DELAYS_S", (0.01, 0.01))  # 3 attempts in all
    _Reviews.requests = Counter()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Reviews)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join()


def _one_attempt(server: str) -> int:
    """Requests fsspec makes for one failed open (a HEAD, then a GET to learn the size)."""
    with pytest.raises(InputError):
        check_readable(f"{server}/410.csv")
    return _Reviews.requests["410"]


def test_not_found_and_forbidden_fail_at_once_with_what_to_do(server: str) -> None:
    per_attempt = _one_attempt(server)
    with pytest.raises(InputError, match=r"404\.csv: not found \(HTTP 404\); check the URL$"):
        check_readable(f"{server}/404.csv")
    with pytest.raises(InputError, match=r"access denied \(HTTP 403\); check the URL and its cred"):
        check_readable(f"{server}/403.csv")
    assert _Reviews.requests["404"] == _Reviews.requests["403"] == per_attempt


def test_server_errors_are_retried_then_fail_as_unavailable(server: str) -> None:
    per_attempt = _one_attempt(server)
    with pytest.raises(SourceUnavailable, match=r"failed 3 times .*500.*run again later"):
        check_readable(f"{server}/500.csv")
    assert _Reviews.requests["500"] == 3 * per_attempt


def test_a_transient_error_heals_on_retry(server: str) -> None:
    ((columns, batch),) = list(open_batches(f"{server}/flaky.csv"))
    assert columns == ["review_id", "review_body"]
    assert batch.frame["review_body"].to_list() == ["good kettle", "bad lid"]


def test_a_refused_connection_fails_at_once() -> None:
    with socket.socket() as sock:  # a port nobody listens on: bound, never listening
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/reviews.csv"
        with pytest.raises(SourceUnavailable, match=r"cannot connect .*server is up"):
            check_readable(url)
