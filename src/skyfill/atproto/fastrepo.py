"""The repo decoder's fast path: whole repositories to column buffers in C (`_fastrepo.c`).

The Python decoder (`repo.decode_repo`) is the definition of what a repository decodes
to. `decode_columns` gives the same records for every repository the C module is sure
about, and None for the others (anything irregular, invalid or unusual), which the caller
then decodes with the Python path, getting the same rows or the same InvalidRepo. The
commit (and its signature) is read by the Python code in both paths.

The records come as chunks of Arrow-layout buffers (`Chunk`), which `backfill/decode.py`
wraps into Arrow arrays without touching a record in Python.

`SKYFILL_PURE_PYTHON=1` turns the fast path off (for A/B runs); without a built C module
(no compiler or libcrypto at install time) it is off too.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.record import MAX_RECORD_BYTES
from skyfill.atproto.repo import Commit, read_commit
from skyfill.atproto.syntax import is_valid_nsid, parse_datetime

try:
    from skyfill.atproto import _fastrepo
except ImportError:  # built without a compiler or libcrypto: setup.py's extension is optional
    _fastrepo = None

AVAILABLE = _fastrepo is not None
"""Whether the C module is built into this install."""

CHUNK_BYTES = 256 << 20
"""Record JSON per chunk: string offsets are 32-bit, so a chunk stays well below 2 GB."""


ENABLED = AVAILABLE and os.environ.get("SKYFILL_PURE_PYTHON", "") != "1"
"""Whether the C path is taken: read once (the stream asks for every commit, and a look-up
in os.environ costs it ~1–4 µs); tests switch it with monkeypatch.setattr."""


if TYPE_CHECKING:
    from skyfill.atproto._fastrepo import CarIndex


def peek_frame() -> Callable[[bytes], tuple[str | None, int | None, str | None] | None] | None:
    """The C reader of an event frame's type, seq and DID, when the fast path is on."""
    return _fastrepo.peek_frame if _fastrepo is not None and ENABLED else None


def commit_event() -> Callable[..., Any] | None:
    """The C reader of a whole `#commit` message (`_fastrepo_event.h`), None without the C
    module; `stream/commit_event.py` is its caller, and checks ENABLED at each call."""
    return _fastrepo.commit_event if _fastrepo is not None else None


FieldOrder = tuple[type, tuple[str, ...]]
"""A class the C module fills, with its fields in the order it fills them."""


def bind_commit_types(
    frame: FieldOrder,
    op: FieldOrder,
    verified: FieldOrder,
    put: FieldOrder,
    delete: FieldOrder,
    created_of: Callable[[str], object],
    skipped: str,
) -> None:
    """Tell the C module the classes `commit_event` makes (see `stream/commit_event.py`)."""
    assert _fastrepo is not None
    _fastrepo.bind_commit_types(frame, op, verified, put, delete, created_of, skipped)


def indexed_commit(
    index: CarIndex, root: bytes, expected_did: str, signing_key: str | None
) -> Commit | None:
    """`repo.read_commit` of the commit block at `root`, its blocks from the C index; None
    when a block is missing or the commit does not check out (the Python path then gives
    the verdict, in its words)."""

    def get_block(cid: bytes) -> bytes:
        block = index.block(cid)
        if block is None:
            raise _Declined
        return block

    try:
        return read_commit(get_block, root, expected_did, signing_key)
    except (_Declined, InvalidRepo):
        return None


def slice_index(car: bytes) -> CarIndex | None:
    """A `#commit` event's CAR slice indexed by the C module (`_fastrepo_slice.h` has the
    methods the stream uses), or None: no C module, or not a plain CAR."""
    if _fastrepo is None or not ENABLED:
        return None
    try:
        return _fastrepo.CarIndex(car)
    except ValueError:
        return None


@dataclass(slots=True)
class Chunk:
    """Consecutive records as Arrow buffers: for each string column its int32 offsets and
    its UTF-8 data; `created_us` int64 microseconds with `created_valid` its validity
    bitmap (`created_nulls` unset bits), and `created_other`: the createdAt values of
    another form than `YYYY-MM-DDTHH:MM:SS.sssZ`, parsed by the Python rule, by index."""

    length: int
    collection: tuple[bytes, bytes]
    rkey: tuple[bytes, bytes]
    uri: tuple[bytes, bytes]
    cid: tuple[bytes, bytes]
    record: tuple[bytes, bytes]
    created_us: bytes
    created_valid: bytes
    created_nulls: int
    created_other: dict[int, datetime]


@dataclass(slots=True)
class RecordColumns:
    """The kept records of one repository (`uri`s of its DID), in MST key order."""

    commit: Commit
    chunks: list[Chunk]
    counts: dict[str, int]
    """Records by collection."""

    def __len__(self) -> int:
        return sum(chunk.length for chunk in self.chunks)


class _Declined(Exception):
    """The C module is not sure about this repository."""


def decode_columns(
    car: bytes,
    expected_did: str,
    keep_collection: Callable[[str], bool] | None = None,
    signing_key: str | None = None,
) -> RecordColumns | None:
    """`decode_repo`'s records as column buffers, or None when the fast path declines the
    repository (then `decode_repo` decides)."""
    records = open_records(car, expected_did, keep_collection, signing_key)
    if records is None:
        return None
    chunks = records.chunks(0, len(records))
    if chunks is None:
        return None
    return RecordColumns(records.commit, chunks, records.counts)


class CheckedRepo:
    """A repository whose commit, MST and record blocks the C module has checked: its kept
    records, `len()` of them in MST key order, turned into column buffers a range at a time
    (`chunks`), so that a caller can hold a bounded part of a huge repository at once."""

    def __init__(self, index: CarIndex, commit: Commit, kept: int, prefix: bytes) -> None:
        self._index = index
        self.commit = commit
        self._kept = kept
        self._prefix = prefix
        self.counts: dict[str, int] = index.counts()
        """Kept records by collection."""

    def __len__(self) -> int:
        return self._kept

    def chunks(self, start: int, stop: int) -> list[Chunk] | None:
        """Records [start, stop) as chunks (one at least), or None when the C module
        declines one of them (then the whole repository goes to `decode_repo`)."""
        chunks: list[Chunk] = []
        while start < stop or not chunks:
            buffers = self._index.columns(start, stop, self._prefix, CHUNK_BYTES)
            if buffers is None:
                return None
            chunks.append(_chunk(buffers))
            start += buffers[0]
        return chunks


def open_records(
    car: bytes | mmap.mmap,
    expected_did: str,
    keep_collection: Callable[[str], bool] | None = None,
    signing_key: str | None = None,
) -> CheckedRepo | None:
    """The repository's commit read and checked, its MST walked and its record blocks
    checked, the records not yet decoded; None when the fast path declines it. `car` is
    bytes or a read-only mmap of a file (whose pages the C module then drops from the
    process as it reads them), which must stay unchanged while the result is used."""
    if _fastrepo is None or not ENABLED:
        return None
    try:
        index = _fastrepo.CarIndex(car, drop_pages=isinstance(car, mmap.mmap))
    except ValueError:
        return None
    commit = indexed_commit(index, index.root, expected_did, signing_key)
    if commit is None:
        return None
    kept = index.walk(commit.data, is_valid_nsid, keep_collection, MAX_RECORD_BYTES)
    if kept < 0:
        return None
    return CheckedRepo(index, commit, kept, f"at://{expected_did}/".encode())


def _chunk(buffers: tuple) -> Chunk:
    n, co, cd, ro, rd, uo, ud, io, idata, jo, jd, created, valid, nulls, odd = buffers
    other = {i: when for i, text in odd if (when := parse_datetime(text)) is not None}
    return Chunk(
        n, (co, cd), (ro, rd), (uo, ud), (io, idata), (jo, jd), created, valid, nulls, other
    )
