"""did:plc documents from a PLC directory."""

from __future__ import annotations

from skyfill.atproto.exceptions import DidNotFound, DidTombstoned, InvalidDidDocument
from skyfill.atproto.xrpc import XrpcClient

DEFAULT_PLC_URL = "https://plc.directory"


class PlcResolver:
    def __init__(self, client: XrpcClient, plc_url: str = DEFAULT_PLC_URL) -> None:
        self._client = client
        self._plc_url = plc_url.rstrip("/")

    async def fetch_document(self, did: str) -> dict:
        status, doc = await self._client.get_json(f"{self._plc_url}/{did}", f"PLC {did}")
        if status == 404:
            raise DidNotFound(f"{did}: the PLC directory does not know this DID")
        if status == 410:
            raise DidTombstoned(f"{did}: the PLC directory reports this DID tombstoned")
        if status != 200 or not isinstance(doc, dict):
            raise InvalidDidDocument(f"{did}: PLC directory answered HTTP {status}")
        return doc
