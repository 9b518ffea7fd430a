"""Crafted labelers and a PLC on one loopback port (aiohttp, in a thread of the test
process): each labeler serves `subscribeLabels` under its own path with the reference
labeler's cursor rules (after `cursor`, the frames with a higher seq, then silence, or a
close with `close_at_end`; above the head, a FutureCursor error frame and close 1008),
and its DID document (multikey or the legacy uncompressed-key form) from the PLC at
`/<did>`. The host also serves an empty `subscribeRepos` (head 0), for `skyfill firehose
--labels`.

Labels are signed as a labeler signs them: sha256 ECDSA (low-S) over the DAG-CBOR of the
label without `sig`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import cbrrr
import libipld
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from skyfill.atproto.crypto import Curve, Keypair
from tests.helpers import free_port

LEGACY_TYPES = {
    Curve.K256: "EcdsaSecp256k1VerificationKey2019",
    Curve.P256: "EcdsaSecp256r1VerificationKey2019",
}
CURVES = {Curve.K256: ec.SECP256K1(), Curve.P256: ec.SECP256R1()}
CTS = "2026-01-01T00:00:00.000Z"


def frame(header: dict[str, Any], body: dict[str, Any]) -> bytes:
    return cbrrr.encode_dag_cbor(header) + cbrrr.encode_dag_cbor(body)


def labels_frame(seq: int, *labels: dict[str, Any]) -> bytes:
    return frame({"op": 1, "t": "#labels"}, {"seq": seq, "labels": list(labels)})


def error_frame(error: str, message: str) -> bytes:
    return frame({"op": -1}, {"error": error, "message": message})


def sign(label: dict[str, Any], key: Keypair) -> dict[str, Any]:
    unsigned = {k: v for k, v in label.items() if k != "sig"}
    return {**unsigned, "sig": key.sign(libipld.encode_dag_cbor(unsigned))}


def flip_bit(label: dict[str, Any]) -> dict[str, Any]:
    sig = bytearray(label["sig"])
    sig[5] ^= 0x01
    return {**label, "sig": bytes(sig)}


def plc_did(name: str) -> str:
    digest = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode().lower()
    return "did:plc:" + digest[:24]


def uncompressed(key: Keypair) -> bytes:
    point = ec.EllipticCurvePublicKey.from_encoded_point(CURVES[key.curve], key.public.point)
    return point.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def document(did: str, endpoint: str | None, key: Keypair | None, legacy: bool) -> dict:
    methods = []
    if key is not None:
        methods.append(
            {
                "id": "#atproto_label",
                "type": LEGACY_TYPES[key.curve] if legacy else "Multikey",
                "controller": did,
                "publicKeyMultibase": libipld.encode_multibase("z", uncompressed(key))
                if legacy
                else key.public.multikey,
            }
        )
    services = []
    if endpoint is not None:
        services.append(
            {"id": "#atproto_labeler", "type": "AtprotoLabeler", "serviceEndpoint": endpoint}
        )
    return {"id": did, "alsoKnownAs": [], "verificationMethod": methods, "service": services}


@dataclass
class FakeLabeler:
    network: FakeNetwork
    name: str
    did: str
    key: Keypair
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    close_at_end: bool = False
    """Close each connection (1000) once its frames are sent, instead of staying silent."""

    @property
    def url(self) -> str:
        return f"{self.network.url}/{self.name}"

    def label(self, uri: str, val: str, key: Keypair | None = None, **fields: Any) -> dict:
        """A label of this labeler, signed with its key (or `key`)."""
        body = {"ver": 1, "src": self.did, "uri": uri, "val": val, "cts": CTS, **fields}
        return sign({k: v for k, v in body.items() if v is not None}, key or self.key)

    def send(self, seq: int, *labels: dict[str, Any]) -> None:
        self.frames.append((seq, labels_frame(seq, *labels)))

    def raw(self, seq: int, message: bytes) -> None:
        """A crafted message, served after cursors below `seq`."""
        self.frames.append((seq, message))

    def publish(self, key: Keypair | None = None, legacy: bool = False) -> None:
        """(Re)write the DID document with `key` (default: the labeler's own)."""
        self.network.docs[self.did] = document(self.did, self.url, key or self.key, legacy)

    @property
    def head(self) -> int:
        return max((seq for seq, _ in self.frames), default=0)


class FakeNetwork:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.docs: dict[str, dict] = {}
        self.outages: dict[str, int] = {}
        self.labelers: dict[str, FakeLabeler] = {}
        self.connections: list[tuple[str, str | None]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def labeler(
        self, name: str, curve: Curve = Curve.K256, legacy: bool = False, publish: bool = True
    ) -> FakeLabeler:
        made = FakeLabeler(self, name, plc_did(name), Keypair.from_seed(curve, name))
        self.labelers[name] = made
        if publish:
            made.publish(legacy=legacy)
        return made

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.subscribeRepos", self._repos)
        app.router.add_get("/{name}/xrpc/com.atproto.label.subscribeLabels", self._labels)
        app.router.add_get("/{did}", self._plc)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _plc(self, request: web.Request) -> web.Response:
        did = request.match_info["did"]
        if self.outages.get(did, 0) > 0:  # the directory is down for this many requests
            self.outages[did] -= 1
            return web.json_response({"message": "unavailable"}, status=503)
        doc = self.docs.get(did)
        if doc is None:
            return web.json_response({"message": "DID not registered"}, status=404)
        return web.json_response(doc)

    async def _labels(self, request: web.Request) -> web.StreamResponse:
        labeler = self.labelers.get(request.match_info["name"])
        if labeler is None:
            raise web.HTTPNotFound()
        cursor = request.query.get("cursor")
        self.connections.append((labeler.name, cursor))
        ordered = sorted(labeler.frames, key=lambda item: item[0])
        frames = [] if cursor is None else [m for s, m in ordered if s > int(cursor)]
        future = cursor is not None and int(cursor) > labeler.head
        return await self._serve(request, frames, future, labeler.close_at_end)

    async def _repos(self, request: web.Request) -> web.StreamResponse:
        cursor = request.query.get("cursor")
        return await self._serve(request, [], cursor is not None and int(cursor) > 0)

    async def _serve(
        self, request: web.Request, frames: list[bytes], future: bool, close: bool = False
    ) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if future:
            await ws.send_bytes(error_frame("FutureCursor", "Cursor in the future."))
            await ws.close(code=1008)
            return ws
        for message in frames:
            await ws.send_bytes(message)
        if close:
            await ws.close()
            return ws
        async for message in ws:  # silent until the client leaves
            if message.type == aiohttp.WSMsgType.ERROR:
                break
        return ws
