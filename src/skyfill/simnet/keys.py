"""Each simulated account's signing key, what its DID document publishes, and the keys the
signature faults use instead.

Keys are deterministic: derived from the DID, the curve and a role, so a network built
twice (or rebuilt after edits) signs with the same keys. Accounts alternate between the
two atproto curves, P-256 and secp256k1, by their index (`accounts.curve_of`).
"""

from __future__ import annotations

import functools

from skyfill.atproto.crypto import Curve, Keypair, PublicKey
from skyfill.simnet.accounts import Account


@functools.cache
def _keypair(did: str, curve: Curve, role: str) -> Keypair:
    return Keypair.from_seed(curve, f"simnet/{role}/{did}")


def signing_key(account: Account) -> Keypair:
    """The key the account's repos are signed with (its `#atproto` key)."""
    return _keypair(account.did, account.curve, "atproto")


def wrong_key(account: Account) -> Keypair:
    """Another key of the same curve, which the DID document never publishes."""
    return _keypair(account.did, account.curve, "wrong")


def old_key(account: Account) -> Keypair:
    """The key a `key_rotated` account had before: its document's first answer."""
    return _keypair(account.did, account.curve, "old")


def published_key(account: Account, request: int) -> PublicKey | None:
    """The key the DID document gives at its `request`-th answer (1 = the first): none for
    `no_signing_key`, the old one at the first answer for `key_rotated`."""
    if account.fault == "no_signing_key":
        return None
    if account.fault == "key_rotated" and request == 1:
        return old_key(account).public
    return signing_key(account).public


def verification_methods(did: str, key: PublicKey | None) -> list[dict]:
    """A DID document's `verificationMethod`: the `#atproto` Multikey, if there is one."""
    if key is None:
        return []
    return [
        {
            "id": f"{did}#atproto",
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key.multikey,
        }
    ]
