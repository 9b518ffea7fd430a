"""The layer rule of docs/ARCHITECTURE.md, checked on the code: every import between
skyfill's packages is one the table there allows, and the table itself points only down."""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import skyfill

PACKAGE = Path(skyfill.__file__).parent
ARCHITECTURE = PACKAGE.parents[1] / "docs" / "ARCHITECTURE.md"
ROW = re.compile(r"^\|\s*`([\w_]+)`\s*\|\s*(\d+)\s*\|([^|]*)\|\s*$")


def layer_table() -> dict[str, tuple[int, set[str]]]:
    """{package: (layer, packages it may import)} from the table between the markers."""
    text = ARCHITECTURE.read_text()
    block = text.split("<!-- layers:begin -->")[1].split("<!-- layers:end -->")[0]
    table = {}
    for line in block.splitlines():
        if match := ROW.match(line.strip()):
            allowed = {name.strip() for name in match[3].split(",") if name.strip()}
            table[match[1]] = (int(match[2]), allowed)
    return table


@functools.cache
def packages_on_disk() -> frozenset[str]:
    """skyfill's packages and top-level modules (`errors`, `failpoints`, `__main__`)."""
    return frozenset(
        p.stem if p.is_file() else p.name
        for p in PACKAGE.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    )


def package_of(module: str) -> str | None:
    """`skyfill.engine.state.redis` -> `engine`; the root package (and a name imported
    from it, such as `skyfill.__version__`) -> None."""
    parts = module.split(".")
    if parts[0] != "skyfill" or len(parts) < 2 or parts[1] not in packages_on_disk():
        return None
    return parts[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules `path` imports (relative imports resolved)."""
    here = module_name(path).split(".")
    if path.name != "__init__.py":
        here = here[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] == "skyfill"}


def edges() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the modules that make the edge."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = package_of(module_name(path))
        for target in {package_of(m) for m in imported_modules(path)}:
            if source and target and target != source:
                found.setdefault((source, target), []).append(module_name(path))
    return found


def test_the_table_names_every_package_and_points_only_down() -> None:
    table = layer_table()
    assert packages_on_disk() == set(table), "the layer table must name every package"
    upward = {
        (pkg, dep)
        for pkg, (layer, allowed) in table.items()
        for dep in allowed
        if dep not in table or table[dep][0] >= layer
    }
    assert upward == set(), "the table may only allow imports of lower layers"


def test_every_import_between_packages_is_allowed() -> None:
    table = layer_table()
    found = edges()
    assert len(found) > 20  # the parser sees the imports
    forbidden = {
        f"{source} -> {target}": modules
        for (source, target), modules in found.items()
        if target not in table[source][1]
    }
    assert forbidden == {}


def test_the_engine_knows_no_domain_code() -> None:
    """The engine is generic: no AT Protocol, job type, sink, HTTP, monitor or CLI code."""
    engine = {target for (source, target) in edges() if source == "engine"}
    domain = {"atproto", "backfill", "sinks", "net", "ratelimit", "monitor", "cli", "simnet"}
    assert engine & domain == set()
