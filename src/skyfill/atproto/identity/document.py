"""Reading a DID document: the #atproto_pds endpoint, the #atproto signing key, the handle;
for a labeler, its #atproto_labeler endpoint and #atproto_label key."""

from __future__ import annotations

from urllib.parse import urlsplit

from skyfill.atproto.crypto import DID_KEY_PREFIX, InvalidKey, parse_did_key, parse_multikey
from skyfill.atproto.exceptions import InvalidDidDocument
from skyfill.atproto.identity.base import Identity, LabelerIdentity
from skyfill.atproto.syntax import is_valid_handle


def identity_from_document(did: str, doc: object) -> Identity:
    """Identity of `did` from its document; raises InvalidDidDocument if it is unusable."""
    if not isinstance(doc, dict):
        raise InvalidDidDocument(f"{did}: DID document is not a JSON object")
    if doc.get("id") != did:
        raise InvalidDidDocument(f"{did}: DID document is for {str(doc.get('id'))[:80]!r}")
    return Identity(
        did=did,
        pds=_pds_endpoint(did, doc),
        handle=_handle(doc),
        signing_key=_signing_key(did, doc),
    )


def _pds_endpoint(did: str, doc: dict) -> str:
    services = doc.get("service")
    for service in services if isinstance(services, list) else []:
        if not isinstance(service, dict):
            continue
        if service.get("id") not in ("#atproto_pds", f"{did}#atproto_pds"):
            continue
        endpoint = service.get("serviceEndpoint")
        if not isinstance(endpoint, str):
            break
        if not _is_http_url(endpoint):
            raise InvalidDidDocument(f"{did}: PDS endpoint is not an http(s) URL: {endpoint[:80]}")
        return endpoint.rstrip("/")
    raise InvalidDidDocument(f"{did}: DID document has no #atproto_pds service endpoint")


def labeler_from_document(did: str, doc: object) -> LabelerIdentity:
    """The labeler `did` from its document (no #atproto_pds needed); raises
    InvalidDidDocument if the document is not `did`'s."""
    if not isinstance(doc, dict):
        raise InvalidDidDocument(f"{did}: DID document is not a JSON object")
    if doc.get("id") != did:
        raise InvalidDidDocument(f"{did}: DID document is for {str(doc.get('id'))[:80]!r}")
    return LabelerIdentity(
        did=did,
        endpoint=_service(did, doc, "atproto_labeler"),
        label_key=_signing_key(did, doc, "atproto_label"),
    )


def _service(did: str, doc: dict, name: str) -> str | None:
    """The http(s) endpoint of the service `#name`, without a trailing slash, or None."""
    services = doc.get("service")
    for service in services if isinstance(services, list) else []:
        if isinstance(service, dict) and service.get("id") in (f"#{name}", f"{did}#{name}"):
            endpoint = service.get("serviceEndpoint")
            if not isinstance(endpoint, str):
                return None
            return endpoint.rstrip("/") if _is_http_url(endpoint) else None
    return None


def _is_http_url(text: str) -> bool:
    try:
        split = urlsplit(text)
        return split.scheme in ("http", "https") and bool(split.hostname)
    except ValueError:
        return False


def _signing_key(did: str, doc: dict, name: str = "atproto") -> str | None:
    """The public key of the verification method `#name` (`#atproto`: commits,
    `#atproto_label`: labels) as a did:key, if it is usable: a multikey, or the legacy
    form naming its curve in the method's type with the bare point."""
    methods = doc.get("verificationMethod")
    for method in methods if isinstance(methods, list) else []:
        if not isinstance(method, dict) or method.get("id") not in (f"#{name}", f"{did}#{name}"):
            continue
        value = method.get("publicKeyMultibase")
        if not isinstance(value, str):
            return None
        method_type = str(method.get("type", "Multikey"))
        try:
            if method_type == "Multikey":
                # parsed through the did:key cache, where the commit's check finds it again
                return parse_did_key(DID_KEY_PREFIX + value).did_key
            return parse_multikey(value, method_type).did_key
        except InvalidKey:
            return None
    return None


def _handle(doc: dict) -> str | None:
    """The first `at://` alias, lower-cased, if it is handle syntax: else no handle (an
    invalid one is not trusted, and a later alias is not a fallback for it)."""
    aliases = doc.get("alsoKnownAs")
    for alias in aliases if isinstance(aliases, list) else []:
        if isinstance(alias, str) and alias.startswith("at://"):
            handle = alias.removeprefix("at://")
            return handle.lower() if is_valid_handle(handle) else None
    return None
