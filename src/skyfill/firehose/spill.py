"""The events a host sends while a job's snapshots are fetched (`skyfill run --follow`),
recorded to disk as they come, and read back before the live stream.

A recording is a folder of files `spill-NNNNNN.bin`, each a run of records: the event's
seq (8 bytes, little-endian; -1 when the frame has none, e.g. an `#info`), its length
(4 bytes) and the websocket message itself, untouched. A file is closed at
`SPILL_FILE_BYTES` and the next one begun. Nothing is held in memory beyond the write
buffer, which is flushed and fsynced every `SYNC_SECONDS`: a recorder killed with SIGKILL
loses at most that much, and the part of a record it was writing is cut off when the
recording is opened again, which then continues after its last whole record's seq.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

SPILL_FILE_BYTES = 64 << 20
SYNC_SECONDS = 1.0
_HEAD = struct.Struct("<qI")
_NO_SEQ = -1


class SpillError(Exception):
    """A recording that cannot be read or written (the disk, not the events)."""


def spill_files(root: Path) -> list[Path]:
    return sorted(root.glob("spill-*.bin"))


def _records(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(offset after the record, seq, message) of each whole record of one file."""
    with path.open("rb") as handle:
        data = handle.read()
    offset, size = 0, len(data)
    while offset + _HEAD.size <= size:
        seq, length = _HEAD.unpack_from(data, offset)
        end = offset + _HEAD.size + length
        if end > size:
            return  # a record cut short by a crash
        yield end, seq, data[offset + _HEAD.size : end]
        offset = end


class SpillWriter:
    """Appends events to a recording; reopening one continues it after its last seq."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.last_seq: int | None = None
        self.events = 0
        files = spill_files(root)
        self._index = int(files[-1].stem.split("-")[1]) if files else 0
        if files:
            self._recover(files)
        self._file = self._open_next() if not files else self._reopen(files[-1])
        self._last_sync = time.monotonic()

    def _recover(self, files: list[Path]) -> None:
        """Count every whole record, find the last seq, and cut the last file after its
        last whole record (what a crash left half written)."""
        for path in files:
            whole = 0
            for whole, seq, _ in _records(path):  # noqa: B007 - the last one's end
                self.events += 1
                if seq != _NO_SEQ:
                    self.last_seq = seq
            if path == files[-1] and whole != path.stat().st_size:
                os.truncate(path, whole)

    def _reopen(self, path: Path) -> BinaryIO:
        return path.open("ab")

    def _open_next(self) -> BinaryIO:
        self._index += 1
        return (self.root / f"spill-{self._index:06d}.bin").open("ab")

    def append(self, message: bytes, seq: int | None) -> None:
        self._file.write(_HEAD.pack(_NO_SEQ if seq is None else seq, len(message)))
        self._file.write(message)
        self.events += 1
        if seq is not None:
            self.last_seq = seq
        if self._file.tell() >= SPILL_FILE_BYTES:
            self.sync()
            self._file.close()
            self._file = self._open_next()
        elif time.monotonic() - self._last_sync >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


def read_spill(root: Path, after: int | None) -> Iterator[tuple[int | None, bytes]]:
    """The recorded events with a seq above `after` (every one when None), and the frames
    without a seq that come after such an event, in the order they came."""
    started = after is None
    for path in spill_files(root):
        for _, seq, message in _records(path):
            if seq == _NO_SEQ:
                if started:
                    yield None, message
                continue
            if after is None or seq > after:
                started = True
                yield seq, message


def last_spilled_seq(root: Path) -> int | None:
    """The seq of the newest whole event recorded (None: nothing yet)."""
    last = None
    for path in spill_files(root):
        for _, seq, _ in _records(path):
            if seq != _NO_SEQ:
                last = seq
    return last


def drop_spill_through(root: Path, seq: int) -> int:
    """Delete the files whose events all lie at or below `seq` (applied and saved):
    how many were deleted. The newest file is kept (a recorder may still append to it)."""
    files = spill_files(root)
    dropped = 0
    for path in files[:-1]:
        seqs = [s for _, s, _ in _records(path) if s != _NO_SEQ]
        if seqs and max(seqs) <= seq:
            path.unlink()
            dropped += 1
    return dropped
