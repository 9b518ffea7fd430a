"""`skyfill demo --workers N`: the distributed demo, on its own redis-server with AOF."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_cli


def test_distributed_demo(tmp_path: Path) -> None:
    done = run_cli("demo", "--workers", "2", "--accounts", "60", "--workdir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert "2 workers" in done.stderr and "completed, 62 DIDs" in done.stdout
    aof = list((tmp_path / "demo-redis").rglob("*.aof"))
    assert aof and any(p.stat().st_size > 0 for p in aof), "the demo's Redis keeps an AOF"
