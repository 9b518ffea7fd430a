"""Command-line flags declared on config dataclasses: one `Flag` per field, in its metadata.

A field whose metadata is `flag(...)` carries everything the CLI needs to offer it (name,
help, metavar, the parser from text to the field's value, how its default is shown, its
range); `cli/dataclass_options.py` builds the click options, the `--config` YAML keys and
the `SKYFILL_*` variables from it. The field's type and default stay the dataclass's own,
and `check_ranges` lets the dataclass enforce the same ranges on a config made in code.
No click here: job types and the engine may declare flags without depending on the CLI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from skyfill.errors import UsageError

_KEY = "skyfill.flag"


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Flag:
    help: str
    """The flag's --help text."""
    name: str = ""
    """The flag without its dashes; default: the field's name with dashes (`batch-size`).
    Its underscored form is the `--config` YAML key and the `SKYFILL_<NAME>` variable."""
    metavar: str | None = None
    parse: Callable[[Any], Any] | None = None
    """Text (a tuple of texts when `multiple`) -> the field's value; raises UsageError.
    Without it, the field's type (int, float, bool, str) converts the text."""
    default_text: str | None = None
    """The default as one would type it (`1g`, `all`): shown, and given to `parse`."""
    shown: str | None = None
    """How --help shows a default computed when the config is made (`min(2, cores)`)."""
    min: float | None = None
    max: float | None = None
    min_open: bool = False
    """The value must be more than `min`, not equal to it."""
    multiple: bool = False
    """Repeatable on the command line (a list or mapping in YAML)."""
    negatable: bool = False
    """A boolean with both `--name` and `--no-name`."""

    def range_problem(self, value: float) -> str | None:
        """Why `value` is outside this flag's range (None when it is inside)."""
        low, high = self.min, self.max
        if low is not None and high is not None and not low <= value <= high:
            return f"must be between {low} and {high}"
        if low is not None and self.min_open and value <= low:
            return "must be positive" if low == 0 else f"must be more than {low}"
        if low is not None and value < low:
            return "must be 0 or more" if low == 0 else f"must be at least {low}"
        if high is not None and value > high:
            return f"must be at most {high}"
        return None


def flag(**spec: Any) -> dict[str, Flag]:
    """A dataclass field's metadata that makes it a command-line flag (`spec`: the Flag's
    fields): `field(default=32, metadata=flag(min=1, help="Repos fetched at once."))`."""
    return {_KEY: Flag(**spec)}


def flag_fields(cls: type) -> list[tuple[dataclasses.Field, Flag]]:
    """The flag fields of a dataclass, in declaration order, each with its named Flag."""
    found = []
    for item in dataclasses.fields(cls):
        spec = item.metadata.get(_KEY)
        if spec is not None:
            name = spec.name or item.name.replace("_", "-")
            found.append((item, dataclasses.replace(spec, name=name)))
    return found


def check_ranges(config: Any) -> None:
    """Raise UsageError for the first numeric flag field outside its declared range."""
    for item, spec in flag_fields(type(config)):
        value = getattr(config, item.name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if problem := spec.range_problem(value):
            raise UsageError(f"{spec.name} {problem}")
