"""CPU a DID of skyfill's two HTTP transports on staticnet, in one invocation, alternating.

Each DID is what the fetch path asks for it: its DID document from the PLC, then its repo
(`getRepo`) from its host, 16 at once, through `net.transport.make_transport` (the lean
client, aiohttp) with nothing else around them (no limiter, no decode): the transport's own
cost. Prints CPU µs a DID (user+sys of this process; nginx's is not counted) and wall.

    PYTHONPATH=src SKYFILL_SHARED=/work/shared .venv/bin/python benchmarks/http_clients.py \\
        --data /tmp/bigrepo/sn-3000 --rounds 3

staticnet is generated (as benchmarks/staticnet.py does) when `--data` has none, and
served for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from pathlib import Path

import orjson

import skyfill  # noqa: F401  (before pyarrow anywhere: skyfill's allocator settings)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import staticnet
from skyfill.net.http import HttpSettings
from skyfill.net.transport import HTTP_CLIENTS, HttpClient, make_transport

IN_FLIGHT = 16


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _fetch_all(kind: HttpClient, plc: str, dids: list[str]) -> tuple[float, float, int]:
    """(CPU µs a DID, wall s, bytes) of fetching every DID's document and repo, after a
    warm-up of 200 DIDs (connections opened)."""
    transport = make_transport(HttpSettings(allow_private_network=True), kind)
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def get(url: str) -> bytes:
        async with transport.get(url) as answer:
            body = await answer.read()
            if answer.status != 200:
                raise SystemExit(f"{url}: HTTP {answer.status}")
            return body

    async def one(did: str) -> int:
        async with gate:
            document = orjson.loads(await get(f"{plc}/{did}"))
            pds = document["service"][0]["serviceEndpoint"]
            return len(await get(f"{pds}/xrpc/com.atproto.sync.getRepo?did={did}"))

    try:
        await asyncio.gather(*(one(d) for d in dids[:200]))
        cpu, wall = _cpu(), time.perf_counter()
        received = sum(await asyncio.gather(*(one(d) for d in dids)))
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
    finally:
        await transport.close()
    return cpu / len(dids) * 1e6, wall, received


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", help="staticnet data dir (default /tmp/skyfill-staticnet-3000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each client once a round")
    p.add_argument("--dids", type=int, default=None, help="first N DIDs (all)")
    args = p.parse_args()
    net_args = staticnet.parse_args(["--data", args.data] if args.data else [])
    shared = staticnet._shared()
    net = staticnet.open_network(net_args, shared)
    dids = net.dids(args.dids)
    results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in HTTP_CLIENTS}
    with staticnet.serving(shared, net):
        for round_ in range(1, args.rounds + 1):
            for kind in HTTP_CLIENTS:
                us, wall, received = asyncio.run(_fetch_all(kind, net.plc, dids))
                results[kind].append((us, wall))
                print(
                    f"round {round_} {kind:8s} {us:6.1f} µs CPU/DID  wall {wall:5.2f} s  "
                    f"{received / 1e6:.0f} MB",
                    flush=True,
                )
    print(f"\n{len(dids)} DIDs (a document and a repo each), {IN_FLIGHT} in flight")
    print(f"{'client':8s} {'best µs/DID':>12s} {'median':>8s} {'best wall s':>12s}")
    for kind, rows in results.items():
        cpu = [r[0] for r in rows]
        print(
            f"{kind:8s} {min(cpu):12.1f} {statistics.median(cpu):8.1f} "
            f"{min(r[1] for r in rows):12.2f}"
        )
    lean, aio = min(r[0] for r in results["lean"]), min(r[0] for r in results["aiohttp"])
    print(f"aiohttp / lean CPU, best against best: {aio / lean:.2f}")


if __name__ == "__main__":
    main()
