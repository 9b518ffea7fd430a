"""Click options made from a config dataclass's flag fields (`skyfill/flags.py`), and the
dataclass made back from the values click parsed.

An option's name, help, metavar, default and range come from the field's `Flag`; its click
type from the field's type (int, float, bool; text when the Flag has a parser). The
option's parameter name is the `--config` YAML key, and `SKYFILL_<NAME>` its variable
(`cli/options.py`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any

import click

from skyfill.flags import Flag, flag_fields


def dataclass_options(cls: type) -> Callable[[Callable], Callable]:
    """A decorator adding one click option per flag field of `cls`, in field order."""
    hints = typing.get_type_hints(cls)
    options = [_option(item, spec, hints[item.name]) for item, spec in flag_fields(cls)]

    def decorate(f: Callable) -> Callable:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def from_options(cls: type, options: dict[str, Any], **given: Any) -> Any:
    """An instance of `cls` from click's values (a flag left unset keeps the field's
    default); `given` sets fields directly."""
    values = {}
    for item, spec in flag_fields(cls):
        value = options.get(param_name(spec))
        if value is None or value == ():
            continue
        if spec.parse is not None:
            value = spec.parse(value)
        elif spec.multiple:
            value = list(value)
        values[item.name] = value
    return cls(**{**values, **given})


def param_name(spec: Flag) -> str:
    """The click parameter's name: the YAML key and the SKYFILL_<NAME> suffix."""
    return spec.name.replace("-", "_")


def _option(item: dataclasses.Field, spec: Flag, hint: Any) -> Callable:
    declaration = f"--{spec.name}/--no-{spec.name}" if spec.negatable else f"--{spec.name}"
    kind = _scalar(hint) if spec.parse is None else str
    extra: dict[str, Any] = {}
    if kind is bool and not spec.negatable:
        extra["is_flag"] = True
    elif kind in (int, float):
        extra["type"] = _number_type(kind, spec)
    default, shown = _default(item, spec)
    return click.option(
        declaration,
        default=default,
        show_default=shown,
        metavar=spec.metavar,
        multiple=spec.multiple,
        help=spec.help,
        **extra,
    )


def _scalar(hint: Any) -> type:
    """int, float or bool for such a field (None allowed beside it); str otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        hint = args[0] if len(args) == 1 else str
    return hint if hint in (int, float, bool) else str


def _number_type(kind: type, spec: Flag) -> click.ParamType:
    if spec.min is None and spec.max is None:
        return click.INT if kind is int else click.FLOAT
    if kind is int:
        low = None if spec.min is None else int(spec.min)
        high = None if spec.max is None else int(spec.max)
        return click.IntRange(min=low, max=high)
    return click.FloatRange(min=spec.min, max=spec.max, min_open=spec.min_open)


def _default(item: dataclasses.Field, spec: Flag) -> tuple[Any, bool | str]:
    """click's default and show_default: the default as typed, a computed default shown
    by its rule, a plain default as it is; None (no default shown) for the rest."""
    if spec.default_text is not None:
        return spec.default_text, True
    if item.default_factory is not dataclasses.MISSING and spec.shown:
        return item.default_factory, spec.shown
    if item.default not in (dataclasses.MISSING, None) and not spec.multiple:
        return item.default, True
    return None, False
