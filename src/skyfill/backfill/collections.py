"""The collection filter (`--collections`): which records a job keeps, by NSID glob.

A pattern is a full NSID (`app.bsky.feed.post`) or the beginning of one followed by a single
`*` at the end (`app.bsky.graph.*`, `app.bsky.*`). A record is kept when its collection
equals one of the NSIDs or starts with one of the prefixes. `*` alone (or `all`, or nothing)
keeps every collection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from skyfill.atproto.syntax import is_nsid_prefix, is_valid_nsid
from skyfill.errors import UsageError

EVERYTHING = ("", "*", "all")


def parse_collections(value: str | Iterable[str] | None) -> list[str] | None:
    """`app.bsky.feed.post,app.bsky.graph.*` (or a list of patterns) -> the patterns, in
    order, without duplicates; None keeps every collection. Raises UsageError naming the
    first bad pattern."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    patterns: list[str] = []
    for raw in parts:
        pattern = raw.strip()
        if pattern.lower() in EVERYTHING:
            if pattern or len(parts) == 1:
                return None  # `*` or `all` anywhere keeps everything
            continue
        _check(pattern)
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns or None


def _check(pattern: str) -> None:
    stem, star, rest = pattern.partition("*")
    if star and rest:
        raise UsageError(
            f"collections: {pattern!r}: '*' may only end a pattern (e.g. app.bsky.graph.*)"
        )
    if star and not is_nsid_prefix(stem):
        raise UsageError(f"collections: {pattern!r}: {stem!r} is not the beginning of an NSID")
    if not star and not is_valid_nsid(pattern):
        raise UsageError(
            f"collections: {pattern!r} is not an NSID (want e.g. app.bsky.feed.post, "
            "or app.bsky.graph.* for every collection under app.bsky.graph)"
        )


@dataclass(frozen=True, slots=True)
class CollectionFilter:
    """Patterns split into exact NSIDs and prefixes; callable on a collection name."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> CollectionFilter:
        patterns = list(patterns)
        return cls(
            exact=frozenset(p for p in patterns if not p.endswith("*")),
            prefixes=tuple(p[:-1] for p in patterns if p.endswith("*")),
        )

    def __call__(self, collection: str) -> bool:
        return collection in self.exact or collection.startswith(self.prefixes)


def collection_filter(patterns: Iterable[str] | None) -> CollectionFilter | None:
    """`--collections` patterns as a filter; None (every collection) when there are none."""
    patterns = list(patterns or ())
    return CollectionFilter.from_patterns(patterns) if patterns else None
