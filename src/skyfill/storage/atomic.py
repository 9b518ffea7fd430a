"""Crash-safe file writes: write a temporary file, fsync, rename over the target (then
replicate it to the job's shared storage, if any: `replica`); and the read-back check
every written Parquet file passes before it is trusted."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from skyfill.storage.replica import published


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_path(path: Path) -> Path:
    """A temporary name beside `path`, private to this process: two workers writing the
    same file never write into one temporary file."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.tmp")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    published(path)


def write_json(path: Path, value: object) -> None:
    write_bytes(path, orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def commit_file(tmp: Path, path: Path) -> None:
    """fsync an already written temporary file and move it into place."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    published(path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class OutputValidationError(RuntimeError):
    """A written file did not read back as written."""


def validate_parquet(path: Path, expected_rows: int) -> int:
    """Reopen a Parquet file and check its row count."""
    rows = pq.ParquetFile(path).metadata.num_rows
    if rows != expected_rows:
        raise OutputValidationError(f"{path.name}: wrote {expected_rows} rows, read back {rows}")
    return rows
