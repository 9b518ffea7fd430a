"""A throwaway PostgreSQL server for tests and benchmarks: initdb into a temporary
directory, `postgres` on a free port of 127.0.0.1, stopped by its PID.

PostgreSQL refuses to run as root: as root, the server runs as the `postgres` system user
(created by the Debian package; `skyfill-pg` is created if there is none), which owns the
temporary directory. Binaries are found on PATH, else in /usr/lib/postgresql/<v>/bin.
Authentication: `trust` for everyone on loopback, except the role `secret_user`, which
needs the password `PASSWORD` (scram-sha-256), to test password handling.

The tests' server lives in memory (`memory_dir()`, /dev/shm when it has room): a session
writes some 400 MB (a copy of the template per test database), and deleting that from a
disk mounted with `discard` took 15-25 s at the end of every session.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

SUPERUSER = "skyfill"
SECRET_USER = "secret_user"
PASSWORD = "s3cr3t-Pa55"
START_TIMEOUT = 60.0
MEMORY_ROOT = Path("/dev/shm")
MEMORY_NEEDED = 2 << 30
"""Room a tmpfs must have for the tests' server to use it (a session writes ~400 MB)."""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed or did not start (the message says what to do)."""


def find_bindir() -> Path:
    """The directory holding initdb and postgres (PATH first, then Debian's layout)."""
    candidates: list[Path] = []
    for name in ("initdb", "pg_ctl", "postgres"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found).resolve().parent)
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += versions
    for directory in candidates:
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return directory
    raise PostgresUnavailable(
        "PostgreSQL is not installed (no initdb/postgres on PATH or in "
        "/usr/lib/postgresql/*/bin): `make system-deps` or `apt-get install postgresql`"
    )


def memory_dir() -> Path | None:
    """A tmpfs directory with room for a throwaway server (/dev/shm), else None."""
    try:
        if shutil.disk_usage(MEMORY_ROOT).free >= MEMORY_NEEDED and os.access(MEMORY_ROOT, os.W_OK):
            return MEMORY_ROOT
    except OSError:
        pass
    return None


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "skyfill-pg"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "skyfill-pg"],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam("skyfill-pg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server; `url(db)` for clients, `stop()` ends it by PID."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]

    def url(self, dbname: str = "postgres", user: str = SUPERUSER) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A new empty database (owned by the superuser); returns its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
            conn.execute(f'GRANT ALL ON DATABASE "{name}" TO {SECRET_USER}')
        with psycopg.connect(self.url(name), autocommit=True) as conn:
            conn.execute(f"GRANT ALL ON SCHEMA public TO {SECRET_USER}")
        return self.url(name)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres(
    settings: dict[str, str] | None = None, parent: Path | None = None
) -> PostgresServer:
    """initdb + postgres on a free loopback port, its files in a new directory under
    `parent` (default: the system's temporary directory); raises PostgresUnavailable."""
    bindir = find_bindir()
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="skyfill-pg-", dir=parent))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if user is not None:
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    as_user = (
        {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user is not None else {}
    )
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C", "HOME": str(root)}
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust"]
    init = subprocess.run(
        [*initdb, "--encoding=UTF8", "--locale=C", "--no-sync"],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        check=False,
        **as_user,
    )
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-1500:]}")
    (data / "pg_hba.conf").write_text(
        f"local all all trust\n"
        f"host all {SECRET_USER} 127.0.0.1/32 scram-sha-256\n"
        f"host all all 127.0.0.1/32 trust\n"
    )
    options = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(sockets),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "shared_buffers": "128MB",
        "max_connections": "40",
        **(settings or {}),
    }
    last_error = ""
    for _ in range(3):  # a port taken between choosing it and binding: try another
        port = free_port()
        command = [str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
        for key, value in options.items():
            command += ["-c", f"{key}={value}"]
        log = open(root / "postgres.log", "ab")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=log, **as_user)
        log.close()
        server = PostgresServer(root, port, process)
        if _wait_ready(server):
            _create_roles(server)
            return server
        last_error = (root / "postgres.log").read_text(errors="replace")[-1500:]
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
    shutil.rmtree(root, ignore_errors=True)
    raise PostgresUnavailable(f"postgres did not start: {last_error}")


def _wait_ready(server: PostgresServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            time.sleep(0.1)
    return False


def _create_roles(server: PostgresServer) -> None:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {SECRET_USER} LOGIN PASSWORD '{PASSWORD}'")
