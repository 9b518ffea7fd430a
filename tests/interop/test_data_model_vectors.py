"""The interop data-model vectors (`vectors/data-model/`) through the repo decoder.

A record reaches the `record` column as `repo._decode_records` makes it: the block is
DAG-CBOR, decoded by `cbrrr.decode_dag_cbor(block, atjson_mode=True)` and written as JSON
by orjson. Each vector is put in a repository built with `build_repo` and read back with
`decode_repo`, so that it goes through that very path (CAR, commit, MST, hot loop).

- `data-model-fixtures.json` (JSON ↔ DAG-CBOR ↔ CID): the JSON, encoded with cbrrr's
  atjson mode (the mode the decoder reads with), gives the fixture's bytes and CID; the
  fixture's bytes, as a record, decode to the fixture's JSON with the fixture's CID.
- `data-model-valid.json`: each value, as a record, decodes to the same JSON. JSON numbers
  are read as the data model reads them: an integral one (`123.0`) is the integer 123.
- `data-model-invalid.json`: JSON values that are not atproto data. The CBOR an adversary
  would send for one is the same value encoded literally (a float as a CBOR float, a
  `{"$link": …}` as a map with a `$link` key). Where the rule is one of decoding, the record
  must be refused (InvalidRepo, BAD_RECORD) and not become a row:
    * a record that is not a map (`top-level not an object`);
    * a float (atproto data has none);
    * a map with a `$link` or `$bytes` key (`bytes/link with wrong field type`, `… with
      extra fields`, `link with bogus CID`): as JSON it would read as a link or bytes.
  Not applicable (a test checks such a value is transcoded faithfully): `$type` null, not
  a string or empty, and blobs with a string size or a missing `ref`. These are rules on
  what a `$type` or a blob object holds (schema-level validation); the decoder transcodes
  CBOR to JSON faithfully and validates no field values, so such a record decodes as it is.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import cbrrr
import orjson
import pytest

from skyfill.atproto.cid import cid_for_block, cid_to_str
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.repo import RepoRecords, build_repo, decode_repo

VECTORS = Path(__file__).parent / "vectors" / "data-model"
DID = "did:plc:abcdefghijklmnopqrstuvwx"
REV = "3kabcdefghijk"
PATH = "com.example.record/3kabcdefghijk"


def _integral_as_int(text: str) -> float | int:
    number = float(text)
    return int(number) if number.is_integer() else number


def _load(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text(), parse_float=_integral_as_int)


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


FIXTURES = _load("data-model-fixtures.json")
VALID = _load("data-model-valid.json")
INVALID = _load("data-model-invalid.json")

NOT_APPLICABLE = {
    "record with $type null": "a $type's value: schema-level validation, not decoding",
    "record with $type wrong type": "a $type's value: schema-level validation, not decoding",
    "record with empty $type string": "a $type's value: schema-level validation, not decoding",
    "blob with string size": "a blob's fields: schema-level validation, not decoding",
    "blob with missing key": "a blob's fields: schema-level validation, not decoding",
}


def _as_record(block: bytes) -> RepoRecords:
    """Decode `block` as the one record of a repository, through decode_repo."""
    car, _, paths = build_repo(DID, REV, {PATH: cbrrr.decode_dag_cbor(block)})
    assert paths[PATH] == cid_to_str(cid_for_block(block)), "build_repo re-encoded the block"
    return decode_repo(car, DID)


def _ids(vectors: list[dict], key: str) -> list[str]:
    return [f"{i}-{v[key]}" if key in v else str(i) for i, v in enumerate(vectors)]


@pytest.mark.parametrize("fixture", FIXTURES, ids=_ids(FIXTURES, "cid"))
def test_fixture_json_encodes_to_its_cbor_and_cid(fixture: dict) -> None:
    block = cbrrr.encode_dag_cbor(fixture["json"], atjson_mode=True)
    assert block == _b64(fixture["cbor_base64"])
    assert cid_to_str(cid_for_block(block)) == fixture["cid"]


@pytest.mark.parametrize("fixture", FIXTURES, ids=_ids(FIXTURES, "cid"))
def test_fixture_cbor_decodes_to_its_json_as_a_record(fixture: dict) -> None:
    repo = _as_record(_b64(fixture["cbor_base64"]))
    assert len(repo) == 1
    assert repo.cids == [fixture["cid"]]
    assert orjson.loads(repo.records[0]) == fixture["json"]


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID, "note"))
def test_valid_value_decodes_to_its_json_as_a_record(vector: dict) -> None:
    repo = _as_record(cbrrr.encode_dag_cbor(vector["json"], atjson_mode=True))
    assert len(repo) == 1
    assert orjson.loads(repo.records[0]) == vector["json"]


def _invalid(applicable: bool) -> list:
    return [
        pytest.param(vector, id=f"{i}-{vector['note']}")
        for i, vector in enumerate(INVALID)
        if (vector["note"] not in NOT_APPLICABLE) == applicable
    ]


@pytest.mark.parametrize("vector", _invalid(applicable=True))
def test_invalid_value_is_refused_as_a_record(vector: dict) -> None:
    block = cbrrr.encode_dag_cbor(vector["json"])  # literally: no $link/$bytes conversion
    with pytest.raises(InvalidRepo) as refused:
        repo = _as_record(block)
        pytest.fail(f"decoded into a row: {repo.records}")
    assert refused.value.kind is RepoFault.BAD_RECORD


@pytest.mark.parametrize("vector", _invalid(applicable=False))
def test_schema_level_invalid_value_is_transcoded_faithfully(vector: dict) -> None:
    """What the decoder does with a value only a schema check would refuse: the row holds
    exactly what the block holds (nothing dropped, nothing invented)."""
    repo = _as_record(cbrrr.encode_dag_cbor(vector["json"], atjson_mode=True))
    assert len(repo) == 1
    assert orjson.loads(repo.records[0]) == vector["json"]


def test_every_invalid_vector_is_either_tested_or_named_not_applicable() -> None:
    notes = {vector["note"] for vector in INVALID}
    assert set(NOT_APPLICABLE) <= notes
