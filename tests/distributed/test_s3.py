"""The job directory on an S3-compatible store (moto_server on loopback): same dataset."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import s3fs

from skyfill.engine.state.redis import RedisStateStore
from tests.distributed.test_workers import pds_rate, start_workers, submit, wait_all, wait_until
from tests.helpers import RedisServer, Server, free_port, truth_records

BUCKET = "skyfill-test"


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[dict[str, str]]:
    """moto's S3 server on a free loopback port; yields the environment that points at it."""
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    log = (tmp_path / "moto.log").open("wb")
    process = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start: {(tmp_path / 'moto.log').read_text()}")
                time.sleep(0.1)
        _fs(env).mkdir(BUCKET)
        yield env
    finally:
        process.terminate()  # by PID
        process.wait(10)
        log.close()


def _fs(env: dict[str, str]) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(
        key=env["AWS_ACCESS_KEY_ID"],
        secret=env["AWS_SECRET_ACCESS_KEY"],
        endpoint_url=env["AWS_ENDPOINT_URL"],
        skip_instance_cache=True,
    )


def test_workdir_on_s3_with_a_worker_killed(
    network: Server,
    redis_server: RedisServer,
    s3: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3.items():
        monkeypatch.setenv(name, value)  # inherited by the skyfill processes
    url = f"s3://{BUCKET}/runs"
    submit(network, redis_server, url, "ons3", "--batch-size", "8", *pds_rate(network, "15/1s"))
    store = RedisStateStore.from_url(redis_server.url, "ons3")
    workers = start_workers(redis_server, "ons3", 3)
    wait_until(
        lambda: (
            any(w.get("tasks") for w in store.workers())
            and store.status_counts().get("ok", 0) >= 10
        ),
        what="a worker holding a batch",
    )
    victim = next(w for w in store.workers() if w.get("tasks"))
    workers[int(victim["worker_id"][1:])].send_signal(signal.SIGKILL)
    errors = wait_all(workers)
    job = store.job()
    assert job is not None and str(job.status) == "completed", errors
    store.close()

    fs = _fs(s3)
    root = f"{BUCKET}/runs/jobs/ons3"
    done = fs.glob(f"{root}/tasks/*/*.done")
    assert len(done) == len(fs.glob(f"{root}/tasks/*/*.parquet")) == 15
    assert fs.exists(f"{root}/aggregation/manifest.json") and fs.exists(f"{root}/manifest.json")
    assert not fs.glob(f"{root}/tasks/*/segments/*"), "segments are removed once merged"
    records = ds.dataset(
        f"{root}/output/records", filesystem=fs, format="parquet", partitioning="hive"
    ).to_table(columns=["did", "collection", "rkey", "cid"])
    got: dict[str, set[tuple[str, str]]] = {}
    for row in records.to_pylist():
        got.setdefault(row["did"], set()).add((f"{row['collection']}/{row['rkey']}", row["cid"]))
    truth = truth_records(network.ready["truth_data"])
    assert {d: got.get(d, set()) for d in truth} == truth
    assert records.num_rows == sum(len(v) for v in truth.values())  # no duplicate
    with fs.open(f"{root}/output/repos.parquet", "rb") as f:
        assert pq.read_table(f).num_rows == 120
