"""The DID file: strict DID syntax per line; a bad line is reported with its number and left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfill.backfill.input import read_did_file

GOOD = "did:plc:abcdefghijklmnopqrstuvwx"
OTHER = "did:web:example.com"


def _read(tmp_path: Path, text: str):
    path = tmp_path / "dids.txt"
    path.write_bytes(text.encode())
    return read_did_file(path)


def test_layout_around_dids_is_allowed(tmp_path: Path) -> None:
    parsed = _read(tmp_path, f"# comment\n  {GOOD}\t\r\n\n{OTHER}  # where\n{GOOD}\n")
    assert parsed.dids == [GOOD, OTHER]
    assert parsed.duplicates == 1
    assert parsed.malformed == []


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"{GOOD} x", "not a valid DID"),
        (f"{GOOD}\u00a0", "not a valid DID"),
        ("did:plc:abcdefghij klmnopqrstuvwx", "not a valid DID"),
        ("did:PLC:abcdefghijklmnopqrstuvwx", "not a valid DID"),
        ("DID:plc:abcdefghijklmnopqrstuvwx", "not a valid DID"),
        ("did:plc:abcdefghijklmnopqrstuv", "malformed did:plc"),
        ("did:plc:ABCDEFGHIJKLMNOPQRSTUVWX", "malformed did:plc"),
        ("did:web:example.com:", "not a valid DID"),
        ("did:web:exa%mple.com", "not a valid DID"),
        ("did:web:example.com/path", "not a valid DID"),
        ("did:web:exa_mple.com", "malformed did:web"),
        ("did:key:zQ3shokFTS3brHcD", "unsupported DID method"),
        ("at://did:plc:abcdefghijklmnopqrstuvwx", "not a valid DID"),
    ],
)
def test_a_malformed_line_is_reported_with_its_number(
    tmp_path: Path, line: str, reason: str
) -> None:
    parsed = _read(tmp_path, f"{GOOD}\n{line}\n{OTHER}\n")
    assert parsed.dids == [GOOD, OTHER]
    assert [n for n, _ in parsed.malformed] == [2]
    assert reason in parsed.malformed[0][1]
    assert parsed.warnings()[0].startswith(f"{tmp_path / 'dids.txt'}:2: ")


def test_a_line_break_inside_a_did_makes_two_bad_lines(tmp_path: Path) -> None:
    parsed = _read(tmp_path, f"did:plc:abcdefghijkl\u2028mnopqrstuvwx\n{GOOD}\n")
    assert parsed.dids == [GOOD]
    assert [n for n, _ in parsed.malformed] == [1, 2]
