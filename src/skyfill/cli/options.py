"""Options shared by commands, and `--config FILE`: any flag's value from a YAML file.

Precedence, highest first: command-line flag, `SKYFILL_<FLAG>` environment variable,
config file, built-in default.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from skyfill.engine.definition import RESERVED_KEYS, read_yaml_mapping
from skyfill.errors import UsageError
from skyfill.storage.replica import is_url

BACKFILL_HANDLER = "skyfill.backfill.handler:BackfillHandler"
ENV_PREFIX = "SKYFILL_"


def workdir_option(f: Callable) -> Callable:
    return click.option(
        "--workdir",
        callback=_workdir,
        default="skyfill-work",
        show_default=True,
        envvar="SKYFILL_WORKDIR",
        show_envvar=True,
        help="Directory that holds jobs/<job_id>/.",
    )(f)


def _workdir(ctx: click.Context, _param: click.Parameter, value: str) -> Path | str:
    """A local directory (Path), or an fsspec URL (str) where `skyfill submit` takes one."""
    if not is_url(value):
        return Path(value)
    if ctx.info_name != "submit":
        raise UsageError(
            f"--workdir {value}: a URL job directory is for distributed mode "
            "(`skyfill submit --state redis://… --workdir URL`)"
        )
    return value


def progress_option(f: Callable) -> Callable:
    return click.option(
        "--progress",
        type=click.Choice(["auto", "rich", "log", "none"]),
        default="auto",
        show_default=True,
        help="Live progress: a bar on a terminal, JSON log lines elsewhere.",
    )(f)


def config_option(f: Callable) -> Callable:
    return click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        is_eager=True,
        expose_value=False,
        callback=_load_config,
        help="YAML file with values for any of these flags (e.g. jobs/backfill.yaml).",
    )(f)


def with_env_vars(command: click.Command) -> click.Command:
    """Give every option without one the environment variable SKYFILL_<NAME>."""
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None and param.name != "config":
            param.envvar = ENV_PREFIX + (param.name or "").upper()
            param.show_envvar = True
    return command


def _load_config(ctx: click.Context, _param: click.Parameter, path: Path | None) -> None:
    if path is None:
        return
    data = read_yaml_mapping(path)
    _check_job_type(path, data, ctx.info_name or "")
    params = {p.name: p for p in ctx.command.params if isinstance(p, click.Option)}
    defaults: dict[str, Any] = {}
    for key, raw in data.items():
        if key in RESERVED_KEYS:
            continue
        param = params.get(key)
        if param is None or key == "config":
            raise UsageError(f"{path}: unknown key {key!r}{_suggestion(key, params)}")
        defaults[key] = _convert(ctx, param, raw, path)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _check_job_type(path: Path, data: dict[str, Any], command: str) -> None:
    if command in ("firehose", "labels"):
        if data.get("job_type", command) != command:
            raise UsageError(f"{path}: job_type {data['job_type']!r}: this command runs streams")
        return
    job_type = data.get("job_type", "backfill")
    handler = data.get("handler", BACKFILL_HANDLER)
    if job_type != "backfill" or handler != BACKFILL_HANDLER:
        raise UsageError(
            f"{path}: job_type {job_type!r} with handler {handler!r}: "
            "this command runs backfill jobs"
        )


def _convert(ctx: click.Context, param: click.Option, raw: Any, path: Path) -> Any:
    if raw is None:
        return None
    if param.multiple and isinstance(raw, dict):  # e.g. hosts: {pds.example.com: 100/1m}
        raw = [f"{key}={value}" for key, value in raw.items()]
    if not param.multiple and isinstance(raw, list):  # e.g. collections: [a.b.c, d.e.*]
        raw = ",".join(str(item) for item in raw)
    if param.is_flag and not isinstance(raw, bool):
        raise UsageError(f"{path}: {param.name}: expected true or false, got {raw!r}")
    try:
        return param.type_cast_value(ctx, raw)
    except click.BadParameter as exc:
        raise UsageError(f"{path}: {param.name}: {exc.message}") from None


def _suggestion(key: str, params: dict[str, click.Option]) -> str:
    close = difflib.get_close_matches(key, [k for k in params if k != "config"], n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(params))})"
