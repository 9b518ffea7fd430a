"""did:web documents from `https://<host>/.well-known/did.json`."""

from __future__ import annotations

from skyfill.atproto.did import did_web_host
from skyfill.atproto.exceptions import DidNotFound, InvalidDidDocument
from skyfill.atproto.xrpc import XrpcClient


def did_web_url(did: str) -> str:
    host = did_web_host(did)
    # As the reference implementation does, localhost is served over plain http.
    scheme = "http" if host.split(":")[0] in ("localhost", "127.0.0.1") else "https"
    return f"{scheme}://{host}/.well-known/did.json"


class WebResolver:
    def __init__(self, client: XrpcClient) -> None:
        self._client = client

    async def fetch_document(self, did: str) -> dict:
        status, doc = await self._client.get_json(did_web_url(did), f"did:web {did}")
        if status in (404, 410):
            raise DidNotFound(f"{did}: the host has no DID document")
        if status != 200 or not isinstance(doc, dict):
            raise InvalidDidDocument(f"{did}: the host answered HTTP {status}")
        return doc
