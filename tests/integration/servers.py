"""Small helpers for tests that start real servers on 127.0.0.1."""

import socket
import subprocess
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    """Until `url` answers; fails at once if the server process exits first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            assert server.poll() is None, f"the server for {url} exited"
            assert time.monotonic() < deadline, f"{url} did not answer in {seconds:.0f} s"
            time.sleep(1)
