"""DIDs skyfill can resolve (did:plc, did:web), and the host a did:web names.

The DID syntax itself is `syntax.validate_did`; this module adds the methods policy."""

from __future__ import annotations

import re
from urllib.parse import unquote

from skyfill.atproto.exceptions import InvalidDid
from skyfill.atproto.syntax import validate_did

# did:plc is 24 chars of base32 (a-z, 2-7); did:web is a hostname, optionally with an
# encoded port (%3A). Paths in did:web are not allowed by atproto.
_PLC = re.compile(r"did:plc:[a-z2-7]{24}")
_WEB = re.compile(r"did:web:[a-zA-Z0-9.\-]+(%3[aA][0-9]{1,5})?")


def validate_supported_did(did: str) -> str:
    """`did` if it is valid DID syntax of a method skyfill resolves (did:plc, did:web), else
    raise InvalidDid saying which rule it breaks."""
    validate_did(did)
    if did.startswith("did:plc:"):
        if _PLC.fullmatch(did) is None:
            raise InvalidDid(f"malformed did:plc (want 24 base32 characters): {did[:80]!r}")
        return did
    if did.startswith("did:web:"):
        if _WEB.fullmatch(did) is None:
            raise InvalidDid(f"malformed did:web (want a hostname): {did[:80]!r}")
        return did
    raise InvalidDid(f"unsupported DID method (want did:plc or did:web): {did[:80]!r}")


def did_web_host(did: str) -> str:
    """The host (with port, if any) named by a did:web."""
    return unquote(did.removeprefix("did:web:"))
