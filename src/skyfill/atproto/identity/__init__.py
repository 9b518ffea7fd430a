"""Identity: from a DID to its handle and PDS endpoint (did:plc and did:web)."""

from skyfill.atproto.identity.base import Identity
from skyfill.atproto.identity.resolver import IdentityResolver

__all__ = ["Identity", "IdentityResolver"]
