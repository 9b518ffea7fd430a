"""DID syntax: validation before any request, and the pieces of did:plc / did:web."""

from __future__ import annotations

import re
from urllib.parse import unquote

from skyfill.atproto.exceptions import InvalidDid

# did:plc is 24 chars of base32 (a-z, 2-7); did:web is a hostname, optionally with an
# encoded port (%3A). Paths in did:web are not allowed by atproto.
_PLC = re.compile(r"^did:plc:[a-z2-7]{24}$")
_WEB = re.compile(r"^did:web:[a-zA-Z0-9.\-]+(%3[aA][0-9]{1,5})?$")
_GENERIC = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%\-]*[a-zA-Z0-9._\-]$")
MAX_DID_LENGTH = 2048


def validate_did(did: str) -> str:
    """Return `did` if it is a valid did:plc or did:web, else raise InvalidDid."""
    if len(did) > MAX_DID_LENGTH or not _GENERIC.match(did):
        raise InvalidDid(f"not a valid DID: {did[:80]!r}")
    if did.startswith("did:plc:"):
        if not _PLC.match(did):
            raise InvalidDid(f"malformed did:plc (want 24 base32 characters): {did[:80]!r}")
        return did
    if did.startswith("did:web:"):
        if not _WEB.match(did):
            raise InvalidDid(f"malformed did:web (want a hostname): {did[:80]!r}")
        return did
    raise InvalidDid(f"unsupported DID method (want did:plc or did:web): {did[:80]!r}")


def did_web_host(did: str) -> str:
    """The host (with port, if any) named by a did:web."""
    return unquote(did.removeprefix("did:web:"))
