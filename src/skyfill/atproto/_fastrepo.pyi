"""Types of the C module `_fastrepo.c` (the repo decoder's hot path)."""

import mmap
from collections.abc import Callable

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
