"""Fixtures for the firehose tests: a recorded signed stream served on loopback (generated
once, cached across sessions), crafted copies of it, and a live reference PDS network."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import _start_network
from tests.firehose.live import LIVE_OPTIONS, LiveRun, follow_live
from tests.firehose.recording import (
    Recording,
    RecordingError,
    RecordingSpec,
    ServedRecording,
    cached_recording,
    serve,
)
from tests.pgserver import PostgresServer

SPEC = RecordingSpec()
"""60 accounts, 2000 commit events (~2150 frames), 4 handle changes, 3 deactivate/activate
cycles, 2 accounts left deactivated."""
_served = itertools.count()


@pytest.fixture(scope="session")
def fh_recording() -> Recording:
    """The generated recording (from the cache when its inputs are unchanged); its ports
    are the generator's, not served: use `fh_served` or `serve_recording`."""
    try:
        recording, seconds = cached_recording(SPEC)
    except RecordingError as exc:
        pytest.fail(f"the firehose recording could not be made: {exc}", pytrace=False)
    recording.meta["_generation_s"] = round(seconds, 2)
    return recording


ServeRecording = Callable[..., ServedRecording]


@pytest.fixture(scope="session")
def serve_recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeRecording]:
    """`serve_recording(recording_or_dir, close_at_end=False)`: stage it on free ports and
    start fhserve.py + a PLC for it; every server is stopped at the end of the session."""
    started: list[ServedRecording] = []

    def start(source: Recording | Path, close_at_end: bool = False) -> ServedRecording:
        recording = source if isinstance(source, Recording) else Recording.open(source)
        dst = tmp_path_factory.mktemp(f"served{next(_served)}")
        running = serve(recording, dst, close_at_end)
        started.append(running)
        return running

    try:
        yield start
    finally:
        for running in started:
            running.stop()


@pytest.fixture(scope="session")
def fh_served(fh_recording: Recording, serve_recording: ServeRecording) -> ServedRecording:
    """The recording served: `stream_url`, `host_url`, `plc_url`, `head_seq`, `truth`, `path`."""
    return serve_recording(fh_recording)


@pytest.fixture(scope="package")
def live_run(
    tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[LiveRun]:
    """A reference PDS network of its own, writing live (about 20 writes/s on 6 accounts,
    one PDS, for at most 120 s), followed while it writes by every consumer the tests
    check (`tests.firehose.live.follow_live`), then stopped writing: its truth. One
    network for all of them: a network writes live only until its truth is taken."""
    started = time.monotonic()
    server = _start_network(tmp_path_factory, LIVE_OPTIONS)
    server.ready["_start_s"] = round(time.monotonic() - started, 2)
    try:
        pg_url = postgres.create_database("follow_live")
        yield follow_live(server, tmp_path_factory.mktemp("live"), pg_url)
    finally:
        server.stop()
