"""`skyfill` commands for the tests, forked from a process that imported skyfill once.

A `skyfill` command starts by importing what every command needs (aiohttp, pyarrow,
redis, cryptography, …): about a second of CPU before it does anything, and the suite
runs some 270 commands. So a server process (`python tests/cliserver.py`, stopped by its
PID at the end of the session) imports `skyfill.cli.main` and then only forks: each child
takes the command's environment, working directory, argv and stdout/stderr (file
descriptors passed over the socket), runs `skyfill.cli.main.main()` as `python -m skyfill`
runs it (`__main__` is `skyfill.__main__`, so the program name and the decode processes it
spawns are those of `python -m skyfill`), and exits as the interpreter exits (non-daemon
threads joined, atexit handlers run). The child is a process of its own, with its own PID
(and, when asked, its own session): the tests signal it (SIGKILL, SIGTERM, SIGINT to its
group, SIGSTOP), and whatever a command does to its process ends with it. The server
reports how it ended, `-N` for signal N as `subprocess` says it.

`run` is `subprocess.run(..., capture_output=True, text=True, timeout=...)`; `start` is a
`subprocess.Popen` for the calls the tests make (`poll`, `wait`, `communicate`,
`send_signal`, `terminate`, `kill`, `pid`, `returncode`, `args`). tests/test_cliserver.py
checks that a forked command answers as a `python -m skyfill` of its own does, and
SKYFILL_TEST_CLI=exec makes the tests start `python -m skyfill` for every command.

Protocol, one connection per command, on a Unix socket: the client sends one JSON line
{"argv", "env", "cwd", "new_session"} with the command's stdout and stderr descriptors
(SCM_RIGHTS); the server answers {"pid": N} with a pidfd of the child (to signal it
without a race with the reuse of its PID), then {"status": S} once it has reaped it.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

START_TIMEOUT = 120.0
MAX_MESSAGE = 1 << 20


# -- the server -----------------------------------------------------------------------------


def _serve(path: str) -> None:
    """Accept, fork, answer with the PID, then with the status once the child's pidfd says
    it ended. Single-threaded: no thread of ours runs when it forks."""
    # what the commands import, once (the CLI loads a command's module when it runs)
    import importlib

    import skyfill.__main__  # noqa: F401
    from skyfill.cli.main import COMMANDS

    for target in COMMANDS.values():
        importlib.import_module(target.partition(":")[0])

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    print(json.dumps({"ready": True}), flush=True)
    parent = os.getppid()
    running: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, connection)
    while os.getppid() == parent:  # the session is gone: so is its server
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = _receive(conn)
                except (OSError, ValueError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    selector.close()
                    listener.close()
                    conn.close()
                    for pidfd, (_, other) in running.items():  # the other commands'
                        os.close(pidfd)
                        other.close()
                    _child(request, fds)  # never returns
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ, None)
                with contextlib.suppress(OSError):
                    socket.send_fds(conn, [_line({"pid": pid})], [pidfd])
            else:
                pidfd = int(key.fd)
                selector.unregister(pidfd)
                pid, conn = running.pop(pidfd)
                os.close(pidfd)
                _, wait_status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):  # the client may have gone
                    conn.sendall(_line({"status": os.waitstatus_to_exitcode(wait_status)}))
                conn.close()


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 2)
    while not data.endswith(b"\n"):
        chunk = conn.recv(MAX_MESSAGE)
        if not chunk:
            raise ValueError("the request ended mid-line")
        data += chunk
    if len(fds) != 2:
        raise ValueError(f"a request needs 2 descriptors, got {len(fds)}")
    return json.loads(data), fds


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def _child(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the command, run it, exit as the interpreter would."""
    code = 1
    try:
        import random

        import skyfill.__main__ as entry
        from skyfill.cli.main import main

        if request["new_session"]:
            os.setsid()
        random.seed()  # not the server's sequence, which every child would share
        for target, fd in zip((1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        if request["cwd"]:
            os.chdir(request["cwd"])
        sys.path[0] = os.getcwd()  # as `python -m` sets it
        sys.argv = [str(entry.__file__), *request["argv"]]
        sys.modules["__main__"] = entry
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = _exit_code(exc.code)
        except KeyboardInterrupt:  # as the interpreter ends on one: by the signal
            _flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            traceback.print_exc()
        threading._shutdown()  # type: ignore[attr-defined]  # as at interpreter exit
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        _flush()
        os._exit(code)


def _exit_code(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    print(value, file=sys.stderr)
    return 1


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


# -- the client -----------------------------------------------------------------------------


class _Lines:
    """Newline-terminated messages from a socket, read with recv (a timeout leaves it
    usable, unlike a file made of it)."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buffer = b""

    def next(self, first: bool = False) -> tuple[dict[str, Any], list[int]]:
        fds: list[int] = []
        while b"\n" not in self.buffer:
            if first:
                chunk, fds, _, _ = socket.recv_fds(self.conn, 4096, 1)
                first = False
            else:
                chunk = self.conn.recv(4096)
            if not chunk:
                raise ConnectionError("the CLI server closed the connection mid-message")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line), fds


class ForkedProcess:
    """A command forked by the server: what the tests use of `subprocess.Popen`."""

    def __init__(
        self,
        server: CliServer,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | None,
        stdout: int | IO[Any] | None,
        stderr: int | IO[Any] | None,
        text: bool,
        start_new_session: bool,
    ) -> None:
        self.args = [sys.executable, "-m", "skyfill", *argv]
        self.returncode: int | None = None
        self.text = text
        self.stdout: IO[Any] | None = None
        self.stderr: IO[Any] | None = None
        given: list[int] = []
        to_close: list[int] = []
        for which, spec in (("stdout", stdout), ("stderr", stderr)):
            if spec == subprocess.PIPE:
                read, write = os.pipe()
                setattr(self, which, open(read, "rb"))  # noqa: SIM115 (closed by communicate)
                given.append(write)
                to_close.append(write)
            elif spec == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_WRONLY)
                given.append(fd)
                to_close.append(fd)
            elif spec is None:
                given.append(1 if which == "stdout" else 2)  # inherited, as Popen does
            elif isinstance(spec, int):
                given.append(spec)
            else:
                given.append(spec.fileno())
        request = {
            "argv": argv,
            "env": env,
            "cwd": str(cwd) if cwd is not None else None,
            "new_session": start_new_session,
        }
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._conn.connect(server.path)
            socket.send_fds(self._conn, [_line(request)], given)
            self._lines = _Lines(self._conn)
            started, fds = self._lines.next(first=True)
        finally:
            for fd in to_close:
                os.close(fd)
        self.pid: int = started["pid"]
        self._pidfd = fds[0] if fds else None
        self._waiting = threading.Lock()  # one reader of the status, as Popen has

    def poll(self) -> int | None:
        """The exit status, or None while it runs (or while another thread waits)."""
        if self.returncode is None and self._waiting.acquire(blocking=False):
            try:
                if self.returncode is None:
                    self._conn.setblocking(False)
                    try:
                        self._ended(self._lines.next()[0])
                    except (BlockingIOError, InterruptedError):
                        self._conn.setblocking(True)
            finally:
                self._waiting.release()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._waiting.acquire(timeout=-1 if timeout is None else timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        try:
            if self.returncode is None:
                left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
                self._conn.settimeout(left)
                try:
                    self._ended(self._lines.next()[0])
                except TimeoutError:
                    self._conn.settimeout(None)
                    raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        finally:
            self._waiting.release()
        assert self.returncode is not None
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[Any, Any]:
        """Read stdout and stderr to their end, then wait; as Popen.communicate."""
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: dict[int, list[bytes]] = {}
        with selectors.DefaultSelector() as selector:
            for stream in (self.stdout, self.stderr):
                if stream is not None and not stream.closed:
                    selector.register(stream, selectors.EVENT_READ)
                    chunks[stream.fileno()] = []
            while selector.get_map():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0)
                for key, _ in selector.select(left):
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fileobj)
        outputs = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                outputs.append(None)
                continue
            data = b"".join(chunks.get(stream.fileno(), []))
            stream.close()
            outputs.append(_decode(data) if self.text else data)
        self.wait(None if deadline is None else max(deadline - time.monotonic(), 0.001))
        return outputs[0], outputs[1]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None and self._pidfd is not None:
            with contextlib.suppress(ProcessLookupError):  # it has just ended
                signal.pidfd_send_signal(self._pidfd, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _ended(self, message: dict[str, Any]) -> None:
        self.returncode = int(message["status"])
        self._conn.close()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()
            if self._pidfd is not None:
                os.close(self._pidfd)


class CliServer:
    """The client side: the session's server."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="skyfill-cli-"))
        self.path = str(self.directory / "cli.sock")
        with (self.directory / "server.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, __file__, self.path], stdout=subprocess.PIPE, stderr=log
            )
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as waiting:
            waiting.register(self.process.stdout, selectors.EVENT_READ)
            ready = waiting.select(timeout=START_TIMEOUT)
        line = self.process.stdout.readline() if ready else b""  # b"" if it died
        if b'"ready"' not in line:
            self.stop()
            log_text = (self.directory / "server.log").read_text(errors="replace")
            raise RuntimeError(f"the CLI server did not start: {log_text[-2000:]}")

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: Path | None = None,
        stdout: int | IO[Any] | None = None,
        stderr: int | IO[Any] | None = None,
        text: bool = False,
        start_new_session: bool = False,
    ) -> ForkedProcess:
        """`skyfill ARGV` forked; as `subprocess.Popen([*SKYFILL, *argv], ...)`."""
        return ForkedProcess(self, argv, env, cwd, stdout, stderr, text, start_new_session)

    def run(
        self, argv: list[str], env: dict[str, str], cwd: Path | None, timeout: float
    ) -> subprocess.CompletedProcess[str]:
        """`skyfill ARGV` forked; what `subprocess.run(..., capture_output=True,
        text=True, timeout=timeout)` would return (or raise)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            process = self.start(argv, env, cwd, out, err)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise subprocess.TimeoutExpired(
                    process.args, timeout, _read(out), _read(err)
                ) from None
            assert process.returncode is not None
            return subprocess.CompletedProcess(
                process.args, process.returncode, _read(out), _read(err)
            )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # by PID: the server this session started
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        for leftover in self.directory.iterdir():
            leftover.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return _decode(file.read())


def _decode(data: bytes) -> str:
    """As `subprocess` with text=True: the locale's encoding, universal newlines."""
    encoding = locale.getpreferredencoding(False)
    return io.TextIOWrapper(io.BytesIO(data), encoding=encoding).read()


_server: CliServer | None = None
_lock = threading.Lock()


def enabled() -> bool:
    return os.environ.get("SKYFILL_TEST_CLI", "fork") != "exec"


def server() -> CliServer:
    """The session's server (started now if it is not running)."""
    global _server
    with _lock:
        if _server is None or _server.process.poll() is not None:
            _server = CliServer()
        return _server


def stop() -> None:
    """Stop the session's server, if one was started."""
    global _server
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None


if __name__ == "__main__":
    sys.path[0] = os.getcwd()  # not tests/: its packages must not shadow anything
    _serve(sys.argv[1])
