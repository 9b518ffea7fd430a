"""The consumer's per-repo bookkeeping: each repo's facts, which changed since the last
save, and the events held back for repos waiting for a re-fetch.

A re-fetch reads the repo as it is when the fetch starts, so it covers every event that
came before: those are dropped when it starts, and only events that arrive while it runs
are replayed after it. Held events are bounded by bytes: past the limit the oldest held
events of the repo holding the most are dropped and the repo is marked `overflowed`, so
that it is fetched once more after the running fetch.
"""

from __future__ import annotations

from collections import deque

from skyfill.atproto.stream.frames import CommitFrame
from skyfill.firehose.decoding import Precheck
from skyfill.firehose.state import RepoFacts

ACTIVE = "active"
DESYNCHRONIZED = "desynchronized"


class RepoBook:
    def __init__(self, facts: dict[str, RepoFacts], max_held_bytes: int) -> None:
        self._facts = facts
        self._dirty: dict[str, RepoFacts] = {}
        self._held: dict[str, deque[tuple[CommitFrame, Precheck | None]]] = {}
        self._held_bytes = 0
        self.max_held_bytes = max_held_bytes
        self.dropped_held = 0
        self.overflowed: set[str] = set()
        self._out_of_step = {did for did, f in facts.items() if f.phase != ACTIVE}

    def __len__(self) -> int:
        return len(self._facts)

    def get(self, did: str) -> RepoFacts | None:
        return self._facts.get(did)

    def set(self, did: str, facts: RepoFacts) -> None:
        self._facts[did] = facts
        self._dirty[did] = facts
        if facts.phase == ACTIVE:
            self._out_of_step.discard(did)
        else:
            self._out_of_step.add(did)

    def update(self, did: str, **changes: object) -> RepoFacts:
        facts = self._facts.get(did) or RepoFacts(rev=None, status="ok")
        for name, value in changes.items():
            setattr(facts, name, value)
        self.set(did, facts)
        return facts

    def take_dirty(self) -> list[tuple[str, RepoFacts]]:
        dirty, self._dirty = self._dirty, {}
        return [
            (did, RepoFacts(f.rev, f.status, f.phase, f.reason, f.seq)) for did, f in dirty.items()
        ]

    def desynchronized(self) -> list[str]:
        return sorted(self._out_of_step)

    def count_desynchronized(self) -> int:
        return len(self._out_of_step)

    # -- held events ------------------------------------------------------------------

    def hold(self, frame: CommitFrame, pre: Precheck | None = None) -> None:
        """Keep a commit (and what the decode stage found of it) until the repo's re-fetch."""
        self._held.setdefault(frame.repo, deque()).append((frame, pre))
        self._held_bytes += _size(frame, pre)
        while self._held_bytes > self.max_held_bytes and self._held:
            did = max(self._held, key=lambda d: len(self._held[d]))
            oldest, oldest_pre = self._held[did].popleft()
            self._held_bytes -= _size(oldest, oldest_pre)
            self.dropped_held += 1
            self.overflowed.add(did)
            if not self._held[did]:
                del self._held[did]

    def release(self, did: str) -> list[tuple[CommitFrame, Precheck | None]]:
        held = self._held.pop(did, deque())
        self._held_bytes -= sum(_size(frame, pre) for frame, pre in held)
        return list(held)

    @property
    def held_bytes(self) -> int:
        return self._held_bytes


def _size(frame: CommitFrame, pre: Precheck | None) -> int:
    """What a held commit keeps in memory, roughly: its slice (when the decode stage sent
    it back) and its decoded records."""
    if pre is None or isinstance(pre.result, Exception):
        return len(frame.blocks)
    return len(frame.blocks) + sum(len(put.record) for put in pre.result.puts)
