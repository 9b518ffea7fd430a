"""Work ahead of a consumer in a background thread (a bounded queue between the two).

Arrow and the database drivers release the GIL while they read, sort, encode or send, so
making the next item overlaps using this one: the merge runs on one core while a Parquet
writer encodes on another, a COPY payload is built while the previous one is sent.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_END = object()


def ahead(items: Iterator[T], depth: int = 2, name: str = "skyfill-ahead") -> Iterator[T]:
    """`items`, made in a background thread at most `depth` ahead of the consumer. Errors
    are raised in the consumer; when the consumer stops early, the producer stops too."""
    ready: queue.Queue[Any] = queue.Queue(depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            if isinstance(items, Generator):
                items.close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while (item := ready.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
