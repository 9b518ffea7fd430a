"""What a resolved identity is, and the seam each DID method implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Identity:
    did: str
    pds: str
    handle: str | None
    signing_key: str | None = None
    """The `#atproto` verification method's key as a did:key (commits are signed with it);
    None when the document has no usable one."""


@dataclass(frozen=True, slots=True)
class LabelerIdentity:
    """A labeler's DID, as its document says: where it serves labels, and its key."""

    did: str
    endpoint: str | None
    """The `#atproto_labeler` service endpoint (http or https, no trailing slash)."""
    label_key: str | None
    """The `#atproto_label` verification method's key as a did:key (labels are signed
    with it); None when the document has no usable one."""


class DidMethodResolver(Protocol):
    """Fetches the DID document of one DID method."""

    async def fetch_document(self, did: str) -> dict:
        """The DID document; raises DidNotFound, DidTombstoned or a transient error."""
        ...
