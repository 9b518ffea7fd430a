"""The interop MST vectors (`vectors/mst/`): each key's layer (`key_heights.json`, against
`mst.key_layer`) and the shared prefix of two keys (`common_prefix.json`, against
`mst.common_prefix`, which `mst.build` uses to store each entry's key suffix)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyfill.atproto import mst

VECTORS = Path(__file__).parent / "vectors" / "mst"
KEY_HEIGHTS = json.loads((VECTORS / "key_heights.json").read_text())
COMMON_PREFIXES = json.loads((VECTORS / "common_prefix.json").read_text())


@pytest.mark.parametrize("vector", KEY_HEIGHTS, ids=[repr(v["key"]) for v in KEY_HEIGHTS])
def test_key_height(vector: dict) -> None:
    assert mst.key_layer(vector["key"].encode()) == vector["height"]


@pytest.mark.parametrize(
    "vector", COMMON_PREFIXES, ids=[f"{v['left']!r}-{v['right']!r}" for v in COMMON_PREFIXES]
)
def test_common_prefix(vector: dict) -> None:
    assert mst.common_prefix(vector["left"].encode(), vector["right"].encode()) == vector["len"]
