"""Whether a label may be written: signed by the labeler it came from.

A labeler is followed by its URL; its DID is learnt from its first label whose `src`'s
DID document names that URL as its `#atproto_labeler` endpoint (and kept: later labels
must have that `src`). Each label's `sig` must verify with the `#atproto_label` key of
that document. When it does not (or the document has no key), the DID is resolved once
more, bypassing the cache, since keys rotate: at most once per `FRESH_SECONDS`, so that
a stream of bad labels does not become a stream of directory requests. What fails is a
`Refusal`; a directory that cannot be reached (a transient error) is raised, for the
follower to read the label again later rather than refuse it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from yarl import URL

from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.identity.base import LabelerIdentity
from skyfill.atproto.labels import Label, verify_label
from skyfill.errors import TerminalError

log = logging.getLogger(__name__)

FRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str
    """`bad_signature`, `no_label_key`, `wrong_src`, `unresolvable` or `malformed`."""
    message: str


class LabelChecker:
    def __init__(
        self,
        resolver: IdentityResolver,
        labeler: str,
        did: str | None = None,
        pinned: Callable[[str], None] = lambda did: None,
    ) -> None:
        self._resolver = resolver
        self._url = labeler
        self.did = did
        """The labeler's DID once known."""
        self._pinned = pinned
        self._fresh_at = -FRESH_SECONDS
        self.refreshes = 0

    async def check(self, label: Label) -> Refusal | None:
        """None if the label may be written, else why not. Raises TransientError when the
        DID document cannot be read now."""
        if self.did is not None and label.src != self.did:
            return Refusal("wrong_src", f"src {label.src} is not the labeler's DID {self.did}")
        try:
            labeler = await self._resolver.resolve_labeler(label.src)
        except TerminalError as exc:
            return Refusal("unresolvable", f"src {label.src} cannot be resolved: {exc}")
        if self.did is None:
            if not same_endpoint(labeler.endpoint, self._url):
                return Refusal(
                    "wrong_src",
                    f"src {label.src} is not this labeler: its DID document names "
                    f"{labeler.endpoint or 'no #atproto_labeler endpoint'}, not {self._url}",
                )
            self.did = label.src
            self._pinned(label.src)
        key = labeler.label_key
        if key is not None and verify_label(label, key):
            return None
        fresh = await self._refresh(label.src)
        if fresh is not None and fresh.label_key not in (None, key):
            assert fresh.label_key is not None
            if verify_label(label, fresh.label_key):
                log.info("label key of %s rotated", label.src, extra={"event": "key_rotated"})
                return None
        if key is None and (fresh is None or fresh.label_key is None):
            return Refusal(
                "no_label_key", f"the DID document of {label.src} has no usable #atproto_label key"
            )
        return Refusal(
            "bad_signature", f"the signature does not verify with {label.src}'s #atproto_label key"
        )

    async def _refresh(self, did: str) -> LabelerIdentity | None:
        """The labeler's document read again, unless it was less than FRESH_SECONDS ago."""
        now = time.monotonic()
        if now - self._fresh_at < FRESH_SECONDS:
            return None
        self._fresh_at = now
        self.refreshes += 1
        try:
            return await self._resolver.resolve_labeler(did, fresh=True)
        except TerminalError:
            return None


def same_endpoint(endpoint: str | None, url: str) -> bool:
    """Whether a DID document's endpoint is the URL a labeler is followed at (scheme,
    host, port and path; a trailing slash aside)."""
    if endpoint is None:
        return False
    return _parts(endpoint) == _parts(url)


def _parts(url: str) -> tuple[str, str, int | None, str]:
    try:
        parsed = URL(url)
    except ValueError:
        return ("", url, None, "")
    return (parsed.scheme, (parsed.host or "").lower(), parsed.port, parsed.path.rstrip("/"))
