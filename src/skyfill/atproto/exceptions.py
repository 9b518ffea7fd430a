"""Errors raised while resolving, fetching and decoding one account's repository.

    TerminalError
    ├── InvalidDid          the DID string is not valid DID syntax (raised before any request)
    ├── DidNotFound         the PLC directory / did:web host does not know the DID -> not_found
    ├── DidTombstoned       the PLC directory reports the DID tombstoned -> deleted
    ├── InvalidDidDocument  the DID document has no usable #atproto_pds service -> failed
    ├── RepoNotFound        getRepo: RepoNotFound / NotFound -> not_found
    ├── RepoDeactivated     getRepo: RepoDeactivated -> deactivated
    ├── RepoTakendown       getRepo: RepoTakendown -> takendown
    ├── RepoSuspended       getRepo: RepoSuspended -> suspended
    ├── RepoTooLarge        the CAR is larger than --max-repo-bytes -> failed
    ├── XrpcRequestError    any other 4xx answer -> failed
    ├── InvalidRepo         malformed CAR, CID mismatch, missing block, bad MST -> invalid_repo
    ├── NotSupported        the host does not offer this XRPC method (404, 501, ...) -> failed
    ├── InvalidResponse     a 200 answer that is not the JSON the method promises -> failed
    └── CursorLoop          a listing's server handed back a cursor it gave before -> failed
The transient ones (RateLimited, RequestTimeout, ServerError, NetworkError) live in
`skyfill.errors`, since every layer raises them; PrivateNetworkRefused (an endpoint on a
private address) in `skyfill.net.exceptions`, where the guard raises it.
"""

from __future__ import annotations

from enum import StrEnum

from skyfill.errors import Outcome, TerminalError


class InvalidDid(TerminalError):
    """The string is not a syntactically valid DID of a supported method."""

    error_class = "invalid_did"
    outcome = Outcome.FAILED


class DidNotFound(TerminalError):
    """The DID's directory answered that it does not know it (PLC 404, did:web 404)."""

    error_class = "not_found"
    outcome = Outcome.NOT_FOUND


class DidTombstoned(TerminalError):
    """The PLC directory reports the DID tombstoned (HTTP 410): the account was deleted."""

    error_class = "deleted"
    outcome = Outcome.DELETED


class InvalidDidDocument(TerminalError):
    """The DID document cannot be used: no #atproto_pds endpoint, wrong id, bad JSON."""

    error_class = "invalid_did_document"
    outcome = Outcome.FAILED


class RepoNotFound(TerminalError):
    """The PDS does not host this repository (RepoNotFound, or a generic NotFound)."""

    error_class = "not_found"
    outcome = Outcome.NOT_FOUND


class RepoDeactivated(TerminalError):
    """The account is deactivated on its PDS."""

    error_class = "deactivated"
    outcome = Outcome.DEACTIVATED


class RepoTakendown(TerminalError):
    """The account was taken down by its PDS."""

    error_class = "takendown"
    outcome = Outcome.TAKENDOWN


class RepoSuspended(TerminalError):
    """The account is suspended on its PDS."""

    error_class = "suspended"
    outcome = Outcome.SUSPENDED


class RepoTooLarge(TerminalError):
    """The repository's CAR is larger than the configured size limit."""

    error_class = "too_large"
    outcome = Outcome.FAILED


class XrpcRequestError(TerminalError):
    """The server refused the request with a 4xx that has no more specific meaning."""

    error_class = "request_error"
    outcome = Outcome.FAILED


class RepoFault(StrEnum):
    """Which rule a repository broke: an `invalid_repo`'s error kind (its `error_class`)."""

    MALFORMED_CAR = "malformed_car"
    CID_MISMATCH = "cid_mismatch"
    MISSING_BLOCK = "missing_block"
    BAD_COMMIT = "bad_commit"
    """The commit is not a map of the required fields with their types."""
    UNSUPPORTED_VERSION = "unsupported_version"
    WRONG_DID = "wrong_did"
    """The commit names another account than the one requested."""
    BAD_SIGNATURE = "bad_signature"
    NO_SIGNING_KEY = "no_signing_key"
    """The DID document has no usable `#atproto` verification method."""
    MST_MALFORMED = "mst_malformed"
    """A node is not `{l, e: [{p, k, v, t}]}` with the right types, or a leaf has a subtree."""
    MST_KEY_ORDER = "mst_key_order"
    MST_KEY_LAYER = "mst_key_layer"
    MST_INVALID_KEY = "mst_invalid_key"
    """A key is not a valid repo path `<collection NSID>/<record key>`."""
    RECORD_TOO_LARGE = "record_too_large"
    BAD_RECORD = "bad_record"
    """A record block is not valid DAG-CBOR (atproto's: no floats), or is not a map."""
    MISSING_PROOF = "missing_proof"
    """A `#commit` event's slice lacks an MST node that inverting its ops needs."""
    BAD_OPS = "bad_ops"
    """A `#commit` event's ops do not match its tree, or an update/delete lacks `prev`."""
    EVENT_MISMATCH = "event_mismatch"
    """A stream event's fields (commit CID, rev) disagree with the commit block it carries."""
    PREV_DATA_MISMATCH = "prev_data_mismatch"
    """Inverting a `#commit` event's ops on its slice does not give the event's `prevData`."""
    INVALID_REPO = "invalid_repo"
    """No more precise kind."""


class InvalidRepo(TerminalError):
    """The repository does not verify: malformed CAR, CID mismatch, missing block, bad MST,
    bad signature. Its `kind` (a RepoFault) is its error_class and begins its message."""

    error_class = "invalid_repo"
    outcome = Outcome.INVALID_REPO

    def __init__(self, message: str = "", kind: RepoFault = RepoFault.INVALID_REPO) -> None:
        super().__init__(f"{kind}: {message}" if kind is not RepoFault.INVALID_REPO else message)
        self.kind = kind
        self.error_class = str(kind)


class NotSupported(TerminalError):
    """The host does not offer this XRPC method to us (404, 501 MethodNotImplemented,
    XRPCNotSupported, or it demands auth for a method that needs none)."""

    error_class = "not_supported"
    outcome = Outcome.FAILED


class InvalidResponse(TerminalError):
    """A 200 answer that is not what the method promises: not JSON, not an object, too big,
    or missing a required field."""

    error_class = "invalid_response"
    outcome = Outcome.FAILED


class CursorLoop(TerminalError):
    """A paged listing answered with a cursor it had already given (it would never end)."""

    error_class = "cursor_loop"
    outcome = Outcome.FAILED
