"""Types of the C module `_fastrepo.c` (the repo decoder's hot path)."""

import mmap
from collections.abc import Callable

RELEASE_GIL_BYTES: int
"""CARs this big or bigger are indexed without the GIL (smaller ones, e.g. a stream's
slice, with it: releasing it costs more than indexing them)."""

class CarIndex:
    def __init__(self, car: bytes | mmap.mmap, *, drop_pages: bool = False) -> None: ...
    @property
    def root(self) -> bytes: ...
    def block(self, cid: bytes, /) -> bytes | None: ...
    def walk(
        self,
        data: bytes,
        nsid_ok: Callable[[str], bool],
        keep: Callable[[str], bool] | None,
        max_record: int,
        /,
    ) -> int: ...
    def counts(self) -> dict[str, int]: ...
    def columns(
        self, start: int, stop: int, uri_prefix: bytes, max_bytes: int, /
    ) -> tuple | None: ...
    def check_all(self) -> bool: ...
    def record(self, cid: bytes, max_bytes: int, /) -> tuple[str, int | str | None] | None: ...
    def invert(
        self, data: bytes, ops: list[tuple[int | None, bytes, bytes | None, bytes | None]], /
    ) -> bytes | None: ...

def peek_frame(message: bytes, /) -> tuple[str | None, int | None, str | None] | None: ...
def commit_event(
    message: bytes,
    max_frame: int,
    max_record: int,
    nsid_ok: Callable[[str], bool],
    keep: Callable[[str], bool] | None,
    check: bool,
    /,
) -> tuple[object, object | None] | None: ...
def bind_commit_types(
    frame: tuple[type, tuple[str, ...]],
    op: tuple[type, tuple[str, ...]],
    verified: tuple[type, tuple[str, ...]],
    put: tuple[type, tuple[str, ...]],
    delete: tuple[type, tuple[str, ...]],
    created_of: Callable[[str], object],
    skipped: str,
    /,
) -> None: ...
