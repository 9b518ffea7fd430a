"""Events -> sink changes, one repo at a time, in seq order: the stream's rules.

- A commit is applied only if its rev is newer than the repo's stored rev (so a replay
  changes nothing), after it is verified (sync 1.1: the signature with the account's
  key, the ops inverted on the slice's MST giving `prevData`) and found to follow the
  stored rev (`since`). A commit that fails, a gap, a `tooBig` commit, a `#sync` to a
  newer rev or a reactivation marks the repo desynchronized: its events are held back,
  it is fetched again whole (getRepo), and the held events newer than that are applied.
- `#identity` re-resolves the DID (the handle is the DID document's, not the frame's).
- `#account` sets the status; an account that is gone (deleted, deactivated, taken down,
  suspended) loses its records, as in a backfill.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pyarrow as pa

from skyfill.atproto import slots
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.identity import Identity, IdentityResolver
from skyfill.atproto.identity.resolver import resolve_signing, with_current_key
from skyfill.atproto.stream.commit import (
    CommitPut,
    VerifiedCommit,
    check_signature,
    verify_commit,
    verify_sync,
)
from skyfill.atproto.stream.frames import (
    AccountFrame,
    CommitFrame,
    Frame,
    FrameError,
    IdentityFrame,
    SyncFrame,
)
from skyfill.errors import Outcome, SkyfillError, classify
from skyfill.firehose.book import ACTIVE, DESYNCHRONIZED, RepoBook
from skyfill.firehose.decoding import Precheck
from skyfill.firehose.stats import StreamCounters
from skyfill.sinks.changes import Change, RecordDelete, RecordPut, RepoReset, RepoUpdate

log = logging.getLogger(__name__)

GONE = frozenset(
    {Outcome.DELETED, Outcome.DEACTIVATED, Outcome.TAKENDOWN, Outcome.SUSPENDED, Outcome.NOT_FOUND}
)
"""Account statuses whose records are removed (as a backfill leaves none for them)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A repo fetched whole: its new content, or why it could not be read."""

    did: str
    rev: str | None = None
    commit_cid: str | None = None
    records: pa.Table | None = None
    """A pyarrow Table of the repo's records (RepoReset.records)."""
    identity: Identity | None = None
    error: SkyfillError | None = None


class Applier:
    def __init__(
        self,
        *,
        book: RepoBook,
        resolver: IdentityResolver,
        counters: StreamCounters,
        verify: bool,
        keep_did: Callable[[str], bool],
        keep_collection: Callable[[str], bool] | None,
        request_resync: Callable[[str], None],
        fresh_identity: Callable[[IdentityFrame], Awaitable[Identity]] | None = None,
    ) -> None:
        self._book = book
        self._resolver = resolver
        self._counters = counters
        self._verify = verify
        self._keep_did = keep_did
        self._keep_collection = keep_collection
        self._request_resync = request_resync
        self._fresh_identity = fresh_identity or self._resolve_fresh

    async def apply(self, frame: Frame, pre: Precheck | None = None) -> list[Change]:
        """The changes one event makes: none for another DID than `--dids` names, for an
        event type this version does not apply, or for an `#account`, `#identity` or
        `#sync` at or below the repo's last applied seq (they carry no rev). `pre`: what
        the decode stage found of a commit."""
        if isinstance(frame, CommitFrame):
            if self._kept(frame.repo):
                return await self.commit(frame, pre)
            return []
        if not isinstance(frame, SyncFrame | IdentityFrame | AccountFrame):
            self._counters.skipped += 1  # an event type this version does not apply
            return []
        if not self._kept(frame.did) or self._replayed(frame.did, frame.seq):
            return []
        if isinstance(frame, SyncFrame):
            return await self.sync(frame)
        if isinstance(frame, IdentityFrame):
            return await self.identity(frame)
        return await self.account(frame)

    def apply_ready(self, frame: Frame | FrameError, pre: Precheck | None) -> list[Change] | None:
        """The changes of a commit that needs nothing awaited, as `apply` makes them: the
        decode stage verified it (with its account's key, which the resolver holds), and
        it follows the repo's stored rev. None for anything else, which `apply` takes."""
        if type(frame) is not CommitFrame or pre is None or frame.too_big:
            return None
        verified, did = pre.result, frame.repo
        if type(verified) is not VerifiedCommit or not self._keep_did(did):
            return None
        identity = self._resolver.cached(did)
        if identity is None or (self._verify and pre.key != identity.signing_key):
            return None
        facts = self._book.get(did)
        if facts is not None and (
            facts.phase != ACTIVE
            or (facts.rev is not None and (frame.rev <= facts.rev or frame.since != facts.rev))
        ):
            return None
        if self._verify:
            self._count_verified(verified)
        return self._commit_changes(frame, identity, verified, first=facts is None)

    def wants(self, did: str) -> bool:
        """Whether events of `did` are applied at all (`--dids`)."""
        return self._keep_did(did)

    def _kept(self, did: str) -> bool:
        """Whether `--dids` lets the DID's events through (the others are counted skipped)."""
        if self._keep_did(did):
            return True
        self._counters.skipped += 1
        return False

    # -- commits ----------------------------------------------------------------------

    async def commit(self, frame: CommitFrame, pre: Precheck | None = None) -> list[Change]:
        did, counters = frame.repo, self._counters
        facts = self._book.get(did)
        if facts is not None and facts.phase != ACTIVE:
            self._book.hold(frame, pre)
            counters.held += 1
            return []
        if facts is not None and facts.rev is not None and frame.rev <= facts.rev:
            counters.skipped += 1
            return []
        if frame.too_big:
            self.desynchronize(did, f"commit {frame.rev} too big to be sent (seq {frame.seq})")
            return []
        if facts is not None and facts.rev is not None and frame.since != facts.rev:
            self.desynchronize(
                did,
                f"gap: commit {frame.rev} (seq {frame.seq}) follows {frame.since}, "
                f"the stored rev is {facts.rev}",
            )
            self._book.hold(frame, pre)
            return []
        try:
            identity, verified = await self._verified(frame, pre)
        except InvalidRepo as exc:
            counters.malformed += 1
            log.warning(
                "seq %s: commit of %s refused: %s",
                frame.seq,
                did,
                exc.message,
                extra={"event": "commit_refused", "did": did, "seq": frame.seq},
            )
            self.desynchronize(did, f"commit {frame.rev} (seq {frame.seq}) refused: {exc.message}")
            return []
        except SkyfillError as exc:  # the DID could not be resolved: fetch it whole later
            self.desynchronize(did, f"identity: {exc.message}")
            self._book.hold(frame, pre)
            return []
        return self._commit_changes(frame, identity, verified, first=facts is None)

    async def _verified(
        self, frame: CommitFrame, pre: Precheck | None
    ) -> tuple[Identity, VerifiedCommit]:
        keep = self._keep_collection
        if not self._verify:
            identity = await self._resolver.resolve(frame.repo)
            if pre is not None:
                return identity, _result(pre)
            return identity, verify_commit(frame, None, keep_collection=keep, check_proof=False)

        async def verify(key: str) -> VerifiedCommit:
            if pre is None:
                return verify_commit(frame, key, keep_collection=keep)
            verified = _result(pre)
            if pre.key != key:  # checked without the key, or with another one
                check_signature(frame, key)
            return verified

        identity = await resolve_signing(self._resolver, frame.repo)
        identity, verified = await with_current_key(self._resolver, identity, verify)
        self._count_verified(verified)
        return identity, verified

    def _count_verified(self, verified: VerifiedCommit) -> None:
        counters = self._counters
        counters.signatures_verified += 1
        if verified.proof == "verified":
            counters.proofs_verified += 1
        elif verified.proof == "no_prev_data":
            counters.no_prev_data += 1

    def _commit_changes(
        self, frame: CommitFrame, identity: Identity, verified: VerifiedCommit, *, first: bool
    ) -> list[Change]:
        did, seq, time, rev = frame.repo, frame.seq, frame.time, frame.rev
        changes: list[Change] = [_record_put(seq, time, did, rev, put) for put in verified.puts]
        changes.extend(
            RecordDelete(seq=seq, time=time, did=did, collection=d.collection, rkey=d.rkey, rev=rev)
            for d in verified.deletes
        )
        self._counters.ops += len(changes)
        facts = self._book.get(did)
        status = facts.status if facts is not None else Outcome.OK
        handle = identity.handle if first else None
        commit_cid, pds = verified.commit_cid, identity.pds
        changes.append(_repo_update(seq, time, did, status, rev, commit_cid, handle, pds))
        self._book.update(did, rev=rev, status=status, seq=seq)
        self._counters.applied += 1
        return changes

    # -- other events -----------------------------------------------------------------

    async def sync(self, frame: SyncFrame) -> list[Change]:
        """A repo's new state is only its commit: fetch it whole unless we hold that rev."""
        did = frame.did
        rev = frame.rev
        if self._verify:
            try:
                identity = await self._resolver.resolve(did)
                rev, _ = verify_sync(frame, identity.signing_key)
            except (InvalidRepo, SkyfillError) as exc:
                log.warning("seq %s: #sync of %s refused: %s", frame.seq, did, exc)
                self._counters.malformed += 1
        facts = self._book.get(did)
        if facts is not None and facts.rev is not None and rev <= facts.rev:
            self._counters.skipped += 1
            return []
        self.desynchronize(did, f"#sync to rev {rev} (seq {frame.seq})")
        return []

    async def identity(self, frame: IdentityFrame) -> list[Change]:
        did = frame.did
        try:
            identity = await self._fresh_identity(frame)
        except Exception as exc:
            log.warning("seq %s: #identity of %s not resolved: %s", frame.seq, did, exc)
            self._counters.skipped += 1
            return []
        facts = self._book.update(did, seq=frame.seq)
        self._counters.applied += 1
        return [
            RepoUpdate(
                seq=frame.seq,
                time=frame.time,
                did=did,
                status=facts.status,
                handle=identity.handle,
                pds=identity.pds,
            )
        ]

    async def account(self, frame: AccountFrame) -> list[Change]:
        did = frame.did
        before = self._book.get(did)
        was_gone = before is not None and before.status in GONE
        status = Outcome.OK.value if frame.active else (frame.status or Outcome.DEACTIVATED.value)
        self._book.update(did, status=status, seq=frame.seq)
        self._counters.applied += 1
        handle = pds = None
        if before is None:  # first seen here (e.g. a deleted account: its events are gone)
            try:
                identity = await self._resolver.resolve(did)
                handle, pds = identity.handle, identity.pds
            except Exception as exc:
                log.info("%s not resolved: %s", did, exc, extra={"event": "identity_unresolved"})
        update = RepoUpdate(
            seq=frame.seq,
            time=frame.time,
            did=did,
            status=status,
            handle=handle,
            pds=pds,
            erase=status in GONE,
        )
        if frame.active and was_gone:
            self.desynchronize(did, f"reactivated (seq {frame.seq})")
        return [update]

    async def _resolve_fresh(self, frame: IdentityFrame) -> Identity:
        return await self._resolver.resolve(frame.did, fresh=True)

    def _replayed(self, did: str, seq: int) -> bool:
        """An event at or below the repo's last applied seq (a replay): skipped."""
        facts = self._book.get(did)
        if facts is not None and facts.seq is not None and seq <= facts.seq:
            self._counters.skipped += 1
            return True
        return False

    # -- desynchronized repos ---------------------------------------------------------

    def desynchronize(self, did: str, reason: str) -> None:
        facts = self._book.get(did)
        if facts is not None and facts.phase != ACTIVE:
            return
        self._book.update(did, phase=DESYNCHRONIZED, reason=reason)
        self._counters.desynchronized += 1
        log.info("%s desynchronized: %s", did, reason, extra={"event": "desynchronized"})
        self._request_resync(did)

    async def snapshot(self, snap: Snapshot, seq: int, time: str) -> list[Change]:
        """A desynchronized repo fetched whole: its content replaces the stored one, then
        its held events newer than the fetched rev are applied."""
        did, book = snap.did, self._book
        if snap.error is not None:
            return self._snapshot_failed(snap, seq, time)
        assert snap.rev is not None and snap.commit_cid is not None
        self._counters.resynced += 1
        identity = snap.identity
        changes: list[Change] = [
            RepoReset(
                seq=seq,
                time=time,
                did=did,
                rev=snap.rev,
                commit_cid=snap.commit_cid,
                records=snap.records,
            ),
            RepoUpdate(
                seq=seq,
                time=time,
                did=did,
                status=Outcome.OK.value,
                rev=snap.rev,
                commit_cid=snap.commit_cid,
                handle=identity.handle if identity else None,
                pds=identity.pds if identity else None,
            ),
        ]
        book.update(did, rev=snap.rev, status=Outcome.OK.value, phase=ACTIVE, reason=None)
        for frame, pre in book.release(did):
            changes.extend(await self.commit(frame, pre))
        if did in book.overflowed:
            book.overflowed.discard(did)
            self.desynchronize(did, "events held while it was fetched overflowed the limit")
        return changes

    def _snapshot_failed(self, snap: Snapshot, seq: int, time: str) -> list[Change]:
        error, did, book = classify(snap.error), snap.did, self._book  # type: ignore[arg-type]
        if error.retryable:
            self._counters.resync_failed += 1
            book.update(did, reason=f"re-fetch failed: {error.message}")
            return []
        status = error.outcome.value
        book.release(did)
        book.update(did, status=status, phase=ACTIVE, reason=None)
        self._counters.resynced += 1
        return [
            RepoUpdate(
                seq=seq,
                time=time,
                did=did,
                status=status,
                error=error.message if status == Outcome.INVALID_REPO else None,
                erase=status in GONE,
            )
        ]


# The two changes of every commit, made slot by slot (see `atproto/slots.py`): a frozen
# dataclass's keyword `__init__` costs about three times more, once per op and per event.
_PUT_SETTERS = slots.setters(
    RecordPut, "seq", "time", "did", "rev", "collection", "rkey", "cid", "record", "created_at",
    "action",
)  # fmt: skip
_UPDATE_SETTERS = slots.setters(
    RepoUpdate, "seq", "time", "did", "status", "rev", "commit_cid", "handle", "pds", "error",
    "erase",
)  # fmt: skip


def _record_put(seq: int, time: str, did: str, rev: str, put: CommitPut) -> RecordPut:
    """`RecordPut(seq=seq, time=time, did=did, rev=rev, **put's fields)`."""
    change = slots.new(RecordPut)
    values = (seq, time, did, rev, put.collection, put.rkey, put.cid, put.record,
              put.created_at, put.action)  # fmt: skip
    for setter, value in zip(_PUT_SETTERS, values, strict=True):
        setter(change, value)
    return change


def _repo_update(
    seq: int, time: str, did: str, status: str, rev: str, commit_cid: str, handle: str | None,
    pds: str,
) -> RepoUpdate:  # fmt: skip
    """`RepoUpdate(...)` of a commit: no error, not erased."""
    change = slots.new(RepoUpdate)
    values = (seq, time, did, status, rev, commit_cid, handle, pds, None, False)
    for setter, value in zip(_UPDATE_SETTERS, values, strict=True):
        setter(change, value)
    return change


def _result(pre: Precheck) -> VerifiedCommit:
    if isinstance(pre.result, InvalidRepo):
        raise pre.result
    return pre.result
