"""The decode stage: websocket messages -> frames the applier takes, in chunks, in order.

Reading a frame and verifying the commit it carries (the slice's CIDs, the records, the
sync 1.1 proof, and the signature with the account's key, which the consumer resolves
before it hands the chunk over) is CPU work on one message alone. `InlineDecoder` only
reads frames, in the consumer's own process (the applier verifies); `workers.ProcessDecoder`
also verifies, spread over worker processes, while the consumer applies what came before.
What a worker found travels as a `Precheck`, which the applier trusts only for what it
covers: a signature checked with another key than the account's current one (or not at
all) is checked again with it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.stream.commit import VerifiedCommit, verify_commit
from skyfill.atproto.stream.commit_event import read_commit_event
from skyfill.atproto.stream.frames import CommitFrame, Frame, FrameError, decode_frame


@dataclass(frozen=True, slots=True)
class Precheck:
    """A commit verified in the decode stage: its result, and the signing key its
    signature verified with (None: the signature is not checked yet)."""

    result: VerifiedCommit | InvalidRepo
    key: str | None


Decoded = tuple[Frame | FrameError, Precheck | None]
"""A message read: its frame (or why it is not one) and, for a commit, its precheck."""


class Decoder(Protocol):
    """Turns a chunk of messages into decoded frames, in order."""

    wants_keys: bool
    """Whether `decode` verifies signatures with the `keys` it is given (worth waiting for)."""

    async def decode(self, messages: list[bytes], keys: Mapping[str, str]) -> list[Decoded]:
        """`keys`: the signing keys of the accounts the messages name, as far as known."""
        ...

    async def close(self) -> None: ...


class InlineDecoder:
    """Frames read in the consumer's process. With `check` (a stream that does not verify
    signatures), commits are also checked as a decode worker checks them (the slice, the
    ops, the records), so that the applier takes most of them without a coroutine
    (`Applier.apply_ready`). A stream that verifies leaves them to the applier, which
    checks each whole with the account's key in one pass (less work than a check here and
    the signature there)."""

    wants_keys = False

    def __init__(
        self, check: bool = False, keep_collection: Callable[[str], bool] | None = None
    ) -> None:
        self._check = check
        self._keep = keep_collection

    async def decode(self, messages: list[bytes], keys: Mapping[str, str]) -> list[Decoded]:
        if not self._check:
            return [(_read(message), None) for message in messages]
        keep = self._keep
        return [decode_message(m, {}, verify=False, keep_collection=keep) for m in messages]

    async def close(self) -> None:
        pass


def _read(message: bytes) -> Frame | FrameError:
    fast = read_commit_event(message, None, check=False)
    if fast is not None:
        return fast[0]
    try:
        return decode_frame(message)
    except FrameError as exc:
        return exc


def decode_message(
    message: bytes,
    keys: Mapping[str, str],
    *,
    verify: bool,
    keep_collection: Callable[[str], bool] | None,
) -> Decoded:
    """A message read and, when it is a commit, verified as far as the stage can: with
    its account's key when `keys` holds it (and `verify`), else all but the signature."""
    # the C module reads a commit and, without `verify`, checks all but its signature
    fast = read_commit_event(message, keep_collection, check=not verify)
    if fast is not None and fast[1] is not None:
        return fast[0], Precheck(fast[1], None)
    frame = _read(message) if fast is None else fast[0]
    if not isinstance(frame, CommitFrame) or frame.too_big:
        return frame, None
    key = keys.get(frame.repo) if verify else None
    return frame, precheck(frame, key, verify=verify, keep_collection=keep_collection)


def precheck(
    frame: CommitFrame,
    key: str | None,
    *,
    verify: bool,
    keep_collection: Callable[[str], bool] | None,
) -> Precheck:
    try:
        verified = verify_commit(frame, key, keep_collection=keep_collection, check_proof=verify)
    except InvalidRepo as exc:
        if key is not None and exc.kind is RepoFault.BAD_SIGNATURE:
            # the key may have rotated: all the rest is checked, the applier asks again
            return precheck(frame, None, verify=verify, keep_collection=keep_collection)
        return Precheck(exc, key)
    return Precheck(verified, key)
