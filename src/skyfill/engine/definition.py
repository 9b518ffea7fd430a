"""JobDefinitions: a job type's YAML (`job_type`, `handler`, config values) and its handler.

A new job type is one handler class (see `engine.handler.Handler`) plus one YAML file:

    job_type: squares
    handler: mypackage.squares:SquaresHandler
    count: 10            # any other key is config, validated by the handler
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyfill.errors import UsageError

if TYPE_CHECKING:  # (a type only: the commands that read job files need not load the engine)
    from skyfill.engine.handler import Handler

RESERVED_KEYS = ("job_type", "handler")


@dataclass(frozen=True, slots=True)
class JobDefinition:
    job_type: str
    handler: str
    """Import path `module:Class` of the handler."""
    config: dict[str, Any] = field(default_factory=dict)

    def create_handler(self, overrides: dict[str, Any] | None = None) -> Handler:
        cls = import_handler(self.handler)
        return cls.from_config({**self.config, **(overrides or {})})


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping; UsageError with the reason otherwise."""
    import yaml  # only here: a run without a config file does not load the YAML parser

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UsageError(f"config file {path}{where}: not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"config file {path}: want a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_definition(path: Path) -> JobDefinition:
    data = read_yaml_mapping(path)
    job_type, handler = data.pop("job_type", None), data.pop("handler", None)
    if not isinstance(job_type, str) or not isinstance(handler, str):
        raise UsageError(f"{path}: a JobDefinition needs `job_type` and `handler` (module:Class)")
    return JobDefinition(job_type=job_type, handler=handler, config=data)


def import_handler(path: str) -> Any:
    """The handler class named by `module:Class`."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        raise UsageError(f"handler {path!r}: want module:Class")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"cannot load handler {path}: {exc}") from None
