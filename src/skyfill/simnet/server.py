"""PLC directory and PDS hosts over HTTP on loopback, with the reference PDS's XRPC errors.

FAULTS an account can be given (Account.fault):
  hang              getRepo never answers
  slow_first        the first getRepo request never answers; later ones are normal
  truncate          getRepo sends the first half of the CAR, then ends normally
  bad_cid           a record block does not match its CID
  missing_block     a record block is absent from the CAR
  flaky_503         the first two getRepo requests answer 503
  flaky_429         the first two getRepo requests answer 429 as HTML, without headers
  generic_notfound  getRepo answers 404 {"error": "NotFound", "message": "Repo not found"}
  sig_wrong_key     the commit is signed by another key than the one its DID document gives
  sig_high_s        the commit's signature is in its high-S form (valid ECDSA, not atproto)
  sig_flipped_bit   one bit of the commit's signature is flipped
  sig_missing       the commit has no `sig` field
  no_signing_key    the DID document has no #atproto verification method (the repo is signed)
  key_rotated       the DID document's first answer gives an old key, every later one the
                    key the repo is signed with (a verifier that resolves again on a
                    mismatch gets the repo; one that trusts its cache does not)
  mst_invalid_key   a record is stored under a key that is not <collection>/<rkey>
  mst_unsorted      two neighbouring entries of one MST node are swapped (keys out of order)
  mst_wrong_layer   the MST is one node holding every key (keys at the wrong layer)
Every repo is signed with its account's key (simnet.keys: P-256 and secp256k1 in turn),
whose did:key the truth gives as `signing_key`; the mst_* repos are signed correctly, only
their tree is wrong (simnet.tamper). FAULT_OUTCOMES says how a correct backfill ends each.

Besides getRepo, every PDS answers listRepos, listReposByCollection and getLatestCommit
(simnet.listing; per-host ListingOptions), and these loopback-only endpoints for tests:
  POST /_simnet/edit    change a repo or an account (simnet.edits)
  GET  /_simnet/truth   the ground truth as it is now (after edits)
  GET  /_simnet/stats, /_simnet/requests, /_simnet/arrivals   what the hosts served
With `relay=RelayOptions(...)`, a relay listens too (simnet.relay): listHosts over the PDS
hosts, and GET /_simnet/requests there gives the cursor of every listHosts request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable

from aiohttp import web

from skyfill.ratelimit.spec import RateSpec
from skyfill.simnet import listing
from skyfill.simnet.edits import EditError, apply_edit
from skyfill.simnet.keys import published_key, verification_methods
from skyfill.simnet.limits import WindowLimit
from skyfill.simnet.listing import ListingOptions
from skyfill.simnet.network import SimNetwork
from skyfill.simnet.relay import RelayHost, RelayOptions, list_hosts, relay_hosts

FAULTS = (
    "hang",
    "slow_first",
    "truncate",
    "bad_cid",
    "missing_block",
    "flaky_503",
    "flaky_429",
    "generic_notfound",
    "sig_wrong_key",
    "sig_high_s",
    "sig_flipped_bit",
    "sig_missing",
    "no_signing_key",
    "key_rotated",
    "mst_invalid_key",
    "mst_unsorted",
    "mst_wrong_layer",
)
FAULT_OUTCOMES: dict[str, tuple[str, str | None]] = {
    "hang": ("failed", None),
    "slow_first": ("ok", None),
    "truncate": ("invalid_repo", "malformed_car"),
    "bad_cid": ("invalid_repo", "cid_mismatch"),
    "missing_block": ("invalid_repo", "missing_block"),
    "flaky_503": ("ok", None),
    "flaky_429": ("ok", None),
    "generic_notfound": ("not_found", None),
    "sig_wrong_key": ("invalid_repo", "bad_signature"),
    "sig_high_s": ("invalid_repo", "bad_signature"),
    "sig_flipped_bit": ("invalid_repo", "bad_signature"),
    "sig_missing": ("invalid_repo", "bad_signature"),
    "no_signing_key": ("invalid_repo", "no_signing_key"),
    "key_rotated": ("ok", None),
    "mst_invalid_key": ("invalid_repo", "mst_invalid_key"),
    "mst_unsorted": ("invalid_repo", "mst_key_order"),
    "mst_wrong_layer": ("invalid_repo", "mst_key_layer"),
}
"""Each fault's outcome in a correct backfill that verifies signatures: the repo's status
and, for an invalid_repo, its kind (RepoFault, the error class)."""
_STATUS_ERRORS = {
    "deactivated": "RepoDeactivated",
    "takendown": "RepoTakendown",
    "suspended": "RepoSuspended",
    "not_found": "RepoNotFound",
}


def _xrpc_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


def _closed_port() -> int:
    """A loopback port nothing listens on (one that was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


class SimServers:
    """Runs one PLC and `network.hosts` PDS servers on 127.0.0.1, each on a free port."""

    def __init__(
        self,
        network: SimNetwork,
        host: str = "127.0.0.1",
        limits: dict[int, RateSpec] | None = None,
        listing_options: dict[int, ListingOptions] | None = None,
        relay: RelayOptions | None = None,
    ) -> None:
        self.network = network
        self.relay = relay
        self.relay_url = ""
        self.relay_hosts: list[RelayHost] = []
        self.list_hosts_cursors: list[str | None] = []
        """The cursor of each listHosts request the relay answered (None: the first page)."""
        self.list_repos_cursors: dict[int, list[str | None]] = {}
        """The cursor of each listRepos request, by host index."""
        self.listing_options = {
            i: (listing_options or {}).get(i) or ListingOptions() for i in range(network.hosts)
        }
        self._bind = host
        self._runners: list[web.AppRunner] = []
        self.plc_url = ""
        self.pds_urls: list[str] = []
        self.limits = {i: WindowLimit(spec) for i, spec in (limits or {}).items()}
        self.served = [0] * network.hosts
        self.arrivals: dict[int, list[float]] = {}
        self.finished_at: list[float | None] = [None] * network.hosts

    async def start(self) -> None:
        self.plc_url = await self._serve(self._plc_app())
        for index in range(self.network.hosts):
            self.pds_urls.append(await self._serve(self._pds_app(index)))
        if self.relay is not None:
            dead = [f"127.0.0.1:{_closed_port()}" for _ in range(self.relay.dead_hosts)]
            self.relay_hosts = relay_hosts(self.network, self.pds_urls, self.relay, dead)
            self.relay_url = await self._serve(self._relay_app())

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, self._bind, 0)
        await site.start()
        self._runners.append(runner)
        port = runner.addresses[0][1]  # (host, port, ...) of the site's one socket
        return f"http://localhost:{port}"

    # -- relay -------------------------------------------------------------------------

    def _relay_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/xrpc/com.atproto.sync.listHosts", self._list_hosts)
        app.router.add_get("/xrpc/_health", self._health)
        app.router.add_get("/_simnet/requests", self._relay_requests)
        return app

    async def _list_hosts(self, request: web.Request) -> web.Response:
        assert self.relay is not None
        cursor = request.query.get("cursor")
        self.list_hosts_cursors.append(cursor)
        status, body = list_hosts(self.relay_hosts, self.relay, cursor, request.query.get("limit"))
        if isinstance(body, str):
            return web.Response(status=status, text=body, content_type="text/html")
        return web.json_response(body, status=status)

    async def _relay_requests(self, request: web.Request) -> web.Response:
        return web.json_response({"listHosts": self.list_hosts_cursors})

    # -- PLC ---------------------------------------------------------------------------

    def _plc_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{did}", self._plc_document)
        return app

    async def _plc_document(self, request: web.Request) -> web.Response:
        did = request.match_info["did"]
        account = self.network.accounts.get(did)
        if account is None:
            return web.json_response({"message": f"DID not registered: {did}"}, status=404)
        if account.status == "tombstoned":
            return web.json_response({"message": f"DID not available: {did}"}, status=410)
        return web.json_response(self._document(did))

    async def _did_web_document(self, request: web.Request) -> web.Response:
        """did:web:localhost%3A<port> is served by the PDS listening on that port."""
        did = f"did:web:localhost%3A{request.url.port}"
        if did not in self.network.accounts:
            return web.json_response({"message": "no did:web here"}, status=404)
        return web.json_response(self._document(did))

    def _document(self, did: str) -> dict:
        """The DID document, with the `#atproto` key its account's fault has it give now."""
        account = self.network.accounts[did]
        requests = self.network.document_requests
        requests[did] = requests.get(did, 0) + 1
        return {
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": did,
            "alsoKnownAs": [f"at://{account.handle}"],
            "verificationMethod": verification_methods(did, published_key(account, requests[did])),
            "service": [
                {
                    "id": "#atproto_pds",
                    "type": "AtprotoPersonalDataServer",
                    "serviceEndpoint": self.pds_urls[account.host],
                }
            ],
        }

    # -- PDS ---------------------------------------------------------------------------

    def _pds_app(self, index: int) -> web.Application:
        app = web.Application()
        app["host_index"] = index
        app.router.add_get("/xrpc/com.atproto.sync.getRepo", self._get_repo)
        app.router.add_get("/xrpc/com.atproto.sync.listRepos", self._list_repos)
        app.router.add_get(
            "/xrpc/com.atproto.sync.listReposByCollection", self._list_repos_by_collection
        )
        app.router.add_get("/xrpc/com.atproto.sync.getLatestCommit", self._get_latest_commit)
        app.router.add_post("/_simnet/edit", self._edit)
        app.router.add_get("/_simnet/truth", self._truth)
        app.router.add_get("/xrpc/_health", self._health)
        app.router.add_get("/_simnet/requests", self._request_counts)
        app.router.add_get("/_simnet/stats", self._stats)
        app.router.add_get("/_simnet/arrivals", self._arrivals)
        app.router.add_get("/.well-known/did.json", self._did_web_document)
        return app

    async def _request_counts(self, request: web.Request) -> web.Response:
        """getRepo requests per DID so far, across all hosts (for tests)."""
        return web.json_response(self.network.requests)

    async def _arrivals(self, request: web.Request) -> web.Response:
        """When each getRepo request reached each host (epoch seconds), by host index."""
        return web.json_response({str(i): times for i, times in sorted(self.arrivals.items())})

    async def _stats(self, request: web.Request) -> web.Response:
        """Per host: repos served, and what its rate limit admitted and refused."""
        return web.json_response(
            {
                "hosts": [
                    {
                        "index": i,
                        "url": url,
                        "served": self.served[i],
                        "list_repos_cursors": self.list_repos_cursors.get(i, []),
                        **(self.limits[i].snapshot() if i in self.limits else {}),
                    }
                    for i, url in enumerate(self.pds_urls)
                ]
            }
        )

    def _admit(self, index: int) -> tuple[web.Response | None, dict[str, str]]:
        """Count a request against host `index`'s rate limit: (429 answer or None, headers)."""
        limit = self.limits.get(index)
        if limit is None:
            return None, {}
        allowed, headers = limit.admit()
        if allowed:
            return None, headers
        refusal = web.json_response(
            {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"},
            status=429,
            headers=headers,
        )
        return refusal, headers

    async def _sync_query(
        self, request: web.Request, answer: Callable[[int], listing.Answer]
    ) -> web.Response:
        """A JSON sync query under the host's rate limit; `answer(index)` -> (status, body)."""
        index = request.app["host_index"]
        refusal, headers = self._admit(index)
        if refusal is not None:
            return refusal
        status, body = answer(index)
        return web.json_response(body, status=status, headers=headers)

    async def _list_repos(self, request: web.Request) -> web.Response:
        query = request.query
        index = request.app["host_index"]
        self.list_repos_cursors.setdefault(index, []).append(query.get("cursor"))
        return await self._sync_query(
            request,
            lambda index: listing.list_repos(
                self.network,
                index,
                self.listing_options[index],
                query.get("cursor"),
                query.get("limit"),
            ),
        )

    async def _list_repos_by_collection(self, request: web.Request) -> web.Response:
        query = request.query
        return await self._sync_query(
            request,
            lambda index: listing.list_repos_by_collection(
                self.network,
                index,
                self.listing_options[index],
                query.getall("collection", []),
                query.get("cursor"),
                query.get("limit"),
            ),
        )

    async def _get_latest_commit(self, request: web.Request) -> web.Response:
        did = request.query.get("did", "")
        return await self._sync_query(
            request, lambda index: listing.latest_commit(self.network, index, did)
        )

    async def _edit(self, request: web.Request) -> web.Response:
        """Apply one edit (simnet.edits) to the network: loopback clients only."""
        if not _loopback(request):
            return _xrpc_error(403, "Forbidden", "edits are for loopback clients only")
        try:
            edit = await request.json()
        except ValueError:
            return _xrpc_error(400, "InvalidRequest", "the body is not JSON")
        try:
            return web.json_response(apply_edit(self.network, edit))
        except EditError as exc:
            return _xrpc_error(400, "InvalidRequest", str(exc))

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"version": "simnet"})

    async def _truth(self, request: web.Request) -> web.Response:
        """The ground truth as it is now (the truth file is as it was at the start)."""
        return web.json_response(self.network.truth(self.plc_url, self.pds_urls))

    async def _get_repo(self, request: web.Request) -> web.StreamResponse:
        index = request.app["host_index"]
        self.arrivals.setdefault(index, []).append(time.time())
        refusal, headers = self._admit(index)
        if refusal is not None:
            return refusal
        request["rate_headers"] = headers
        response = await self._serve_repo(request)
        if not response.prepared:
            response.headers.update(headers)
        if response.status == 200:
            self.served[index] += 1
        return response

    async def _serve_repo(self, request: web.Request) -> web.StreamResponse:
        did = request.query.get("did", "")
        network = self.network
        network.requests[did] = network.requests.get(did, 0) + 1
        account = network.accounts.get(did)
        if account is None or account.host != request.app["host_index"]:
            return _xrpc_error(400, "RepoNotFound", f"Could not find repo for DID: {did}")
        fault = account.fault
        tries = network.requests[did]
        if fault == "hang" or (fault == "slow_first" and tries == 1):
            await asyncio.sleep(3600)
        if fault == "flaky_503" and tries <= 2:
            return _xrpc_error(503, "InternalServerError", "try again")
        if fault == "flaky_429" and tries <= 2:
            return web.Response(
                status=429,
                text="<html><body>Too Many Requests</body></html>",
                content_type="text/html",
            )
        if fault == "generic_notfound":
            return _xrpc_error(404, "NotFound", "Repo not found")
        if account.status in _STATUS_ERRORS:
            name = _STATUS_ERRORS[account.status]
            return _xrpc_error(400, name, f"Repo {account.status}: {did}")
        car = network.repos[did].car
        if fault == "truncate":
            car = car[: len(car) // 2]
        response = web.StreamResponse(
            headers={"Content-Type": "application/vnd.ipld.car", **request["rate_headers"]}
        )
        await response.prepare(request)
        for start in range(0, len(car), 1 << 16):
            await response.write(car[start : start + (1 << 16)])
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response
