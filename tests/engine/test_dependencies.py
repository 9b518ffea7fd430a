"""The engine is generic: it imports no AT Protocol, backfill, sink or CLI code."""

from __future__ import annotations

import ast
from pathlib import Path

import skyfill

PACKAGE = Path(skyfill.__file__).parent
FORBIDDEN = (
    "skyfill.atproto",
    "skyfill.backfill",
    "skyfill.sinks",
    "skyfill.cli",
    "skyfill.net",
    "skyfill.simnet",
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_engine_imports_no_domain_code() -> None:
    modules = list((PACKAGE / "engine").rglob("*.py"))
    assert len(modules) > 5
    offending = {
        str(path.relative_to(PACKAGE)): sorted(n for n in _imports(path) if n.startswith(FORBIDDEN))
        for path in modules
    }
    assert {k: v for k, v in offending.items() if v} == {}


def test_atproto_imports_no_engine_or_backfill_code() -> None:
    for path in (PACKAGE / "atproto").rglob("*.py"):
        bad = [n for n in _imports(path) if n.startswith(("skyfill.engine", "skyfill.backfill"))]
        assert bad == [], path
