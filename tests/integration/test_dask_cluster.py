"""`--task-runner dask --dask-address` against a real Dask scheduler and two worker processes on
127.0.0.1: the tokenized files are byte-identical to the threaded run's, also when a worker is
killed while the shards are being tokenized."""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tasks.ingest.sample_data import write_sample_reviews
from tests.integration.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Cli = Callable[..., subprocess.CompletedProcess[str]]
TOKENIZED_FILES = ("vocab.json", "manifest.json", "train.parquet", "val.parquet", "test.parquet")


def _start(*args: str) -> subprocess.Popen[bytes]:
    dask = str(Path(sys.executable).with_name("dask"))
    return subprocess.Popen(
        [dask, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


@pytest.fixture
def dask_cluster(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A `dask scheduler` and two single-threaded `dask worker`s without nannies (a killed
    worker stays dead), as a team would run them on other machines."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start("scheduler", "--host", "127.0.0.1", "--port", str(port),
                       "--no-dashboard")  # fmt: skip
    worker = ["worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard"]
    workers = [_start(*worker, "--local-directory", str(tmp_path / f"dask-{i}")) for i in range(2)]
    try:
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address, workers
    finally:
        for process in (*workers, scheduler):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)


def _tokenized_dir(workdir: Path) -> Path:
    (out,) = (workdir / "tokenized").iterdir()
    return out


def test_real_scheduler_gives_the_threaded_output_and_survives_a_killed_worker(
    tmp_path: Path, reviewgru: Cli, dask_cluster: tuple[str, list[subprocess.Popen[bytes]]]
) -> None:
    address, workers = dask_cluster
    # A file per shard: ingest writes each file's batch as its own row group.
    data = tmp_path / "reviews"
    for i in range(4):
        write_sample_reviews(data / f"part-{i}.csv", rows=1000, seed=100 + i)
    common = ["--data", str(data), "--until", "tokenize", "--vocab-size", "2000", "--json"]

    threaded = reviewgru("run", *common, "--workdir", str(tmp_path / "threads"))
    assert threaded.returncode == 0, threaded.stderr[-3000:]

    dask_workdir = tmp_path / "dask"
    command = [
        str(Path(sys.executable).with_name("reviewgru")), "run", *common,
        "--workdir", str(dask_workdir), "--task-runner", "dask", "--dask-address", address,
    ]  # fmt: skip
    run = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )
    # Kill a worker once the first shard's part is written: the rest of the first pass and all
    # of the second must be done by the survivor.
    deadline = time.monotonic() + 300
    while not list((dask_workdir / "tokenized").glob(".*.tmp-*/*.parquet")):
        assert run.poll() is None, run.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no shard part written in 300 s"
        time.sleep(0.05)
    os.killpg(workers[0].pid, signal.SIGKILL)
    stderr = run.communicate(timeout=600)[1]

    assert run.returncode == 0, stderr[-3000:]
    threads_out, dask_out = _tokenized_dir(tmp_path / "threads"), _tokenized_dir(dask_workdir)
    assert threads_out.name == dask_out.name  # the same snapshot digest
    for name in TOKENIZED_FILES:
        assert (dask_out / name).read_bytes() == (threads_out / name).read_bytes(), name
    assert not list((dask_workdir / "tokenized").glob(".*.tmp-*"))  # no partial split left
    assert workers[0].wait(timeout=10) == -signal.SIGKILL
