"""Firehose recordings for tests and benchmarks: generate one with the reference
`@atproto/repo` (`../shared/staticnet/firehose.mjs`), keep it in a cache shared by test
sessions, read and write its frames, and serve it (fhserve.py + a PLC of our own).

A recording's ports are baked into its DID documents (the PDS endpoint) and its truth
(`pds`, `plc`), nowhere in the frames. So instead of regenerating when a baked port is
taken, every serve stages a copy of the recording: the big files are symlinked, the DID
documents, meta.json and truth.json are rewritten for two ports that are free right now.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import Server, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SUB_PATH = "/xrpc/com.atproto.sync.subscribeRepos"
GENERATE_TIMEOUT = 900
SETUP_TIMEOUT = 600
JOBS = min(2, os.cpu_count() or 1)
BASE_PORT = 18501
"""The port a cached recording is generated with (any: staging rewrites it)."""
LINKED = ("frames.bin", "frames.idx", "car", "repos.json", "dids.txt", "dids.map", "limits.map")
FRAME_LEN = struct.Struct("<I")
INDEX_ENTRY = struct.Struct("<QQ")
ENDPOINT = re.compile(r'"serviceEndpoint":\s*"http://127\.0\.0\.1:\d+"')
"""The `#atproto_pds` endpoint in a recording's DID documents (the only service there)."""


class RecordingError(RuntimeError):
    """The generator or a server for a recording could not be run."""


def shared_dir() -> Path:
    return Path(os.environ.get("SKYFILL_SHARED", REPO_ROOT.parent / "shared")).resolve()


def refpds_home() -> Path:
    return Path(os.environ.get("REFPDS_HOME", "/tmp/refpds"))


def cache_root() -> Path:
    """Where generated recordings are kept between sessions: $SKYFILL_FH_CACHE, else
    $TMPDIR/skyfill-fh-cache (shared by worktrees, keyed by the generator's inputs)."""
    given = os.environ.get("SKYFILL_FH_CACHE", "").strip()
    return Path(given) if given else Path(tempfile.gettempdir()) / "skyfill-fh-cache"


def find_node() -> Path:
    """$REFPDS_NODE, else the node that `refpds/setup.sh` prints (installing on first use).
    One retry: two sessions running setup.sh at once can race on the native rebuild."""
    given = os.environ.get("REFPDS_NODE", "").strip()
    if given:
        return Path(given)
    setup = shared_dir() / "refpds" / "setup.sh"
    error = ""
    for attempt in range(2):
        if attempt:
            time.sleep(15)
        done = subprocess.run(
            ["bash", str(setup)],
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT,
            env={**os.environ, "REFPDS_HOME": str(refpds_home())},
            check=False,
        )
        lines = done.stdout.strip().splitlines()
        if done.returncode == 0 and lines and Path(lines[-1]).is_file():
            return Path(lines[-1])
        error = done.stderr.strip()[-1500:]
    raise RecordingError(f"{setup} failed: {error}")


@dataclass(frozen=True, kw_only=True)
class RecordingSpec:
    """The generator's inputs (firehose.mjs options) that decide a recording's content."""

    accounts: int = 60
    """Accounts in the stream (a quarter exist before the first commit)."""
    events: int = 2000
    """Commit events, account creations not counted."""
    seed: str = "1"
    handle_changes: int | None = 4
    """`#identity` events with a new handle (None: the generator's default, accounts/100)."""
    deactivations: int | None = 3
    """Deactivate → activate cycles (None: accounts/200)."""
    deactivate_final: int | None = 2
    """Accounts deactivated near the end and left so (None: 1)."""

    def options(self) -> list[str]:
        options = ["--accounts", str(self.accounts), "--events", str(self.events)]
        options += ["--seed", self.seed]
        for flag, value in (
            ("--handle-changes", self.handle_changes),
            ("--deactivations", self.deactivations),
            ("--deactivate-final", self.deactivate_final),
        ):
            options += [] if value is None else [flag, str(value)]
        return options

    def key(self) -> str:
        """A hash of the options and of the generator's source."""
        script = (shared_dir() / "staticnet" / "firehose.mjs").read_bytes()
        digest = hashlib.sha256(script)
        digest.update(json.dumps(self.options()).encode())
        return digest.hexdigest()[:16]


@dataclass
class Recording:
    """A recording directory (firehose.mjs's layout) and its meta.json."""

    path: Path
    meta: dict[str, Any]
    _truth: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Path) -> Recording:
        return cls(path, json.loads((path / "meta.json").read_text()))

    @property
    def head_seq(self) -> int:
        return int(self.meta["head_seq"])

    @property
    def frame_count(self) -> int:
        return int(self.meta["frames"])

    @property
    def port(self) -> int:
        return int(self.meta["port"])

    @property
    def plc_port(self) -> int:
        return int(self.meta["plc_port"])

    @property
    def truth(self) -> dict[str, Any]:
        truth = self._truth
        if truth is None:
            truth = self._truth = json.loads((self.path / "truth.json").read_text())
        return truth


def generate(spec: RecordingSpec, out: Path, port: int = BASE_PORT) -> float:
    """Run firehose.mjs into `out`; returns the wall seconds it took."""
    node = find_node()
    script = shared_dir() / "staticnet" / "firehose.mjs"
    command = [
        str(node), str(script), "--out", str(out), *spec.options(),
        "--port", str(port), "--plc-port", str(port - 1), "--jobs", str(JOBS),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=GENERATE_TIMEOUT,
        env={**os.environ, "ATPROTO_HOME": str(refpds_home())},
        check=False,
    )
    if done.returncode != 0:
        raise RecordingError(f"firehose.mjs failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.monotonic() - started


def _complete(path: Path) -> bool:
    try:
        meta = json.loads((path / "meta.json").read_text())
        return (path / "frames.idx").stat().st_size == INDEX_ENTRY.size * int(meta["frames"])
    except (OSError, ValueError, KeyError):
        return False


def cached_recording(spec: RecordingSpec, root: Path | None = None) -> tuple[Recording, float]:
    """The recording for `spec` from the cache, generated there first if missing (under a
    file lock, into a temporary directory renamed into place). Returns it and the seconds
    spent generating (0.0 on a cache hit)."""
    root = root or cache_root()
    root.mkdir(parents=True, exist_ok=True)
    final = root / spec.key()
    if _complete(final):
        return Recording.open(final), 0.0
    with (root / f"{final.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(final):
            return Recording.open(final), 0.0
        shutil.rmtree(final, ignore_errors=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{final.name}.", dir=root))
        try:
            seconds = generate(spec, scratch)
            (scratch / "spec.json").write_text(json.dumps(spec.options()))
            scratch.rename(final)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return Recording.open(final), seconds


# -- frames ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One websocket message of the recording, with the seq its index entry gives it."""

    seq: int
    message: bytes


def read_frames(path: Path) -> list[Frame]:
    """Every frame of the recording at `path`, in file order."""
    data = (path / "frames.bin").read_bytes()
    index = (path / "frames.idx").read_bytes()
    frames = []
    for seq, offset in INDEX_ENTRY.iter_unpack(index):
        (length,) = FRAME_LEN.unpack_from(data, offset)
        start = offset + FRAME_LEN.size
        frames.append(Frame(seq, data[start : start + length]))
    return frames


def write_frames(path: Path, frames: Sequence[Frame]) -> None:
    """frames.bin (u32 LE length + message) and frames.idx (u64 LE seq, u64 LE offset)."""
    offset = 0
    with (path / "frames.bin").open("wb") as data, (path / "frames.idx").open("wb") as index:
        for frame in frames:
            index.write(INDEX_ENTRY.pack(frame.seq, offset))
            data.write(FRAME_LEN.pack(len(frame.message)))
            data.write(frame.message)
            offset += FRAME_LEN.size + len(frame.message)


# -- staging and serving ------------------------------------------------------------------


def _rebase_url(url: str, port: int) -> str:
    return url.rsplit(":", 1)[0] + f":{port}"


def stage(recording: Recording, dst: Path, port: int, plc_port: int) -> Recording:
    """A copy of `recording` in `dst` whose DID documents, meta and truth name `port` (the
    stream and PDS) and `plc_port`; the frames and CARs are symlinks, unless `dst` already
    holds its own (a crafted recording is staged in place)."""
    dst.mkdir(parents=True, exist_ok=True)
    src = recording.path.resolve()
    for name in LINKED:
        target = dst / name
        if (src / name).exists() and not (target.exists() or target.is_symlink()):
            target.symlink_to(src / name)
    new_pds = _rebase_url(recording.meta["pds_url"], port)
    plc_dir = dst / "plc"
    plc_dir.mkdir(exist_ok=True)
    for doc in (src / "plc").iterdir():
        text = ENDPOINT.sub(f'"serviceEndpoint":"{new_pds}"', doc.read_text())
        (plc_dir / doc.name).write_text(text)
    new_plc = _rebase_url(recording.meta["plc_url"], plc_port)
    meta = {**recording.meta, "port": port, "plc_port": plc_port}
    meta |= {"pds_url": new_pds, "plc_url": new_plc}
    (dst / "meta.json").write_text(json.dumps(meta, indent=1))
    truth = recording.truth
    truth = {**truth, "plc": new_plc, "pds": [new_pds]}
    truth["repos"] = {did: {**repo, "pds": new_pds} for did, repo in truth["repos"].items()}
    (dst / "truth.json").write_text(json.dumps(truth))
    return Recording(dst, meta, truth)


@dataclass
class ServedRecording:
    """A staged recording with fhserve.py and a PLC running for it (stopped by PID)."""

    recording: Recording
    stream: Server
    plc: Server

    @property
    def path(self) -> Path:
        return self.recording.path

    @property
    def host_url(self) -> str:
        """The PDS (`--from-host`): http://127.0.0.1:PORT."""
        return str(self.recording.meta["pds_url"])

    @property
    def stream_url(self) -> str:
        """ws://127.0.0.1:PORT/xrpc/com.atproto.sync.subscribeRepos."""
        return str(self.stream.ready["url"])

    @property
    def plc_url(self) -> str:
        return str(self.recording.meta["plc_url"])

    @property
    def head_seq(self) -> int:
        return int(self.stream.ready["head"])

    @property
    def frame_count(self) -> int:
        return int(self.stream.ready["frames"])

    @property
    def truth(self) -> dict[str, Any]:
        return self.recording.truth

    @property
    def pid(self) -> int:
        return self.stream.process.pid

    def stop(self) -> None:
        for server in (self.stream, self.plc):
            server.stop()


def start_logged(command: list[str], log: Path, timeout: float = 60) -> Server:
    """Start a server that prints a `{"ready": true}` line on stdout; its stderr goes to
    `log` (fhserve writes a line per connection there: a pipe nobody reads would fill)."""
    with log.open("ab") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise RecordingError(f"{command[:3]} exited {process.returncode}: see {log}")
        if line.startswith("{") and json.loads(line).get("ready"):
            return Server(process, json.loads(line))
    process.kill()
    process.wait(5)
    raise RecordingError(f"{command[:3]} not ready after {timeout} s")


def _start_servers(staged: Recording, close_at_end: bool) -> ServedRecording:
    plcserve = Path(__file__).with_name("plcserve.py")
    plc_command = [sys.executable, str(plcserve), str(staged.path / "plc")]
    plc = start_logged([*plc_command, "--port", str(staged.plc_port)], staged.path / "plc.log")
    fhserve = shared_dir() / "staticnet" / "fhserve.py"
    command = [sys.executable, str(fhserve), str(staged.path), "--port", str(staged.port)]
    try:
        command += ["--close-at-end"] * close_at_end
        stream = start_logged(command, staged.path / "fhserve.log")
    except BaseException:
        plc.stop()
        raise
    return ServedRecording(staged, stream, plc)


def serve(recording: Recording, dst: Path, close_at_end: bool = False) -> ServedRecording:
    """Stage `recording` into `dst` on two free ports and start its servers. A port taken
    between the choice and the bind makes a server exit: then new ports, up to 3 tries."""
    error: Exception | None = None
    for _ in range(3):
        staged = stage(recording, dst, free_port(), free_port())
        try:
            return _start_servers(staged, close_at_end)
        except RecordingError as exc:
            error = exc
    raise RecordingError(f"could not serve {recording.path}: {error}")


@contextlib.contextmanager
def served(
    recording: Recording, dst: Path, close_at_end: bool = False
) -> Iterator[ServedRecording]:
    """`serve` as a context: the servers are stopped on exit, also on failure."""
    running = serve(recording, dst, close_at_end)
    try:
        yield running
    finally:
        running.stop()
