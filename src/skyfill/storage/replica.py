"""Shared storage for a job's files: a local working copy replicated to an fsspec URL.

In distributed mode the job directory may live at any fsspec URL (`s3://bucket/prefix`
on any S3-compatible store, `gs://…`, `file:///mnt/shared/…`). Each process works in a
local copy of the job directory; every file is sent to the shared copy the moment it is
committed locally (`atomic.write_bytes` / `commit_file` call `published`), so the order
of commits is kept: a task's file, then its manifest, then its `.done`. An object store
PUT is atomic (readers see the whole object or none), which keeps the `.done` rule: a
file counts only once its `.done` is there. Readers call `ensure_local`, which brings a
file from the shared copy when this process does not have it (a batch another worker
started, the task files for the aggregation).

Without a replica (the embedded default) every call here is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class Replica:
    def __init__(self, local_root: Path, url: str) -> None:
        self.local_root = local_root
        self.url = url.rstrip("/")
        import fsspec  # (here: most commands never open a URL, and it takes ~50 ms to load)

        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def remote(self, path: Path) -> str:
        return f"{self.root}/{path.relative_to(self.local_root).as_posix()}"

    def publish(self, path: Path) -> None:
        self.fs.put_file(str(path), self.remote(path))

    def publish_tree(self, directory: Path) -> None:
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            self.publish(path)

    def fetch(self, path: Path) -> bool:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.fetch")
        try:
            self.fs.get_file(self.remote(path), str(tmp))
        except FileNotFoundError:
            return False
        os.replace(tmp, path)
        return True

    def remove_tree(self, directory: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.remote(directory), recursive=True)


_replicas: dict[Path, Replica] = {}


def replicate(local_root: Path, url: str) -> Replica:
    """Replicate everything committed under `local_root` to `url` (this process)."""
    replica = Replica(local_root, url)
    _replicas[local_root] = replica
    return replica


def replica_for(path: Path) -> Replica | None:
    for root, replica in _replicas.items():
        if path.is_relative_to(root):
            return replica
    return None


def published(path: Path) -> None:
    """`path` was just committed locally: send it to the shared copy, if there is one."""
    replica = replica_for(path)
    if replica is not None:
        replica.publish(path)


def published_tree(directory: Path) -> None:
    replica = replica_for(directory)
    if replica is not None:
        replica.remove_tree(directory)
        replica.publish_tree(directory)


def ensure_local(path: Path) -> bool:
    """Whether `path` exists here, after fetching it from the shared copy if need be."""
    if path.exists():
        return True
    replica = replica_for(path)
    return replica is not None and replica.fetch(path)


def refresh(path: Path) -> None:
    """Bring the shared copy of `path` here even if there is a local one (it may have
    changed: a manifest another worker updated)."""
    replica = replica_for(path)
    if replica is not None:
        replica.fetch(path)


def removed_tree(directory: Path) -> None:
    replica = replica_for(directory)
    if replica is not None:
        replica.remove_tree(directory)


def is_url(location: str) -> bool:
    """`s3://bucket/prefix`, `file:///…`: a location fsspec opens, not a local path."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum()
