"""JSON Schemas (draft 2020-12) of the job's manifests, shipped as package data.

One file per manifest kind, `<kind>.schema.json`; the result manifest is part of the task
schema (its `result`, `$defs/result`). The manifests themselves are written only by
`skyfill.engine.manifest.ManifestWriter`; docs/manifests.md describes them field by field.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

KINDS = ("job", "task", "retry", "aggregation")
"""Manifest kinds, as in each manifest's `kind` field."""


def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of the manifest `kind` (a fresh copy: callers may change it)."""
    return json.loads(_text(kind))


@functools.cache
def _text(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"no schema for manifest kind {kind!r} (known: {', '.join(KINDS)})")
    return resources.files(__name__).joinpath(f"{kind}.schema.json").read_text("utf-8")
