"""`python -m skyfill.simnet`: serve a simulated network until SIGTERM.

Prints one ready line on stdout: {"ready": true, "plc": URL, "pds": [URL...], "dids": PATH,
"truth": PATH}, with `--relay` also "relay": URL and "relay_hosts": [{hostname, status}...].
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import orjson

from skyfill.ratelimit.spec import RateSpec, parse_rate
from skyfill.simnet.listing import LISTING_FAULTS, ListingOptions
from skyfill.simnet.relay import HOST_STATUSES, RELAY_FAULTS, RelayOptions
from skyfill.simnet.run import SimSpec, add_did_web_account, build_network, write_files
from skyfill.simnet.server import FAULTS, SimServers


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m skyfill.simnet", description=__doc__)
    p.add_argument("--accounts", type=int, default=200)
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--mean-records", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--statuses", default="", help="comma list, e.g. deactivated,takendown")
    p.add_argument(
        "--faults",
        default="",
        help=f"comma list, one account each (the last accounts): {', '.join(FAULTS)}",
    )
    p.add_argument("--unknown-dids", type=int, default=0)
    p.add_argument("--did-web", action="store_true", help="add one did:web account")
    p.add_argument("--rate-limit", help="every PDS host enforces this fixed window, e.g. 100/2s")
    p.add_argument(
        "--throttle",
        action="append",
        default=[],
        metavar="INDEX=RATE",
        help="PDS host INDEX enforces RATE (repeatable), e.g. 0=1/1s",
    )
    p.add_argument("--big", type=int, default=0, help="account 0 gets this many records")
    p.add_argument(
        "--edits", type=int, default=0, help="rounds of edits to every repo (later versions)"
    )
    p.add_argument(
        "--no-list-by-collection",
        nargs="?",
        const="all",
        default="",
        metavar="INDEXES",
        help="these PDS hosts (comma list; default all) answer listReposByCollection with 501",
    )
    p.add_argument(
        "--listing-faults",
        default="",
        metavar="INDEX=FAULT,...",
        help=f"listing misbehaviour per PDS host: {', '.join(LISTING_FAULTS)}",
    )
    p.add_argument(
        "--relay", action="store_true", help="also serve a relay (listHosts over the PDS hosts)"
    )
    p.add_argument(
        "--relay-hosts",
        default="",
        metavar="INDEX=STATUS,...",
        help=f"the relay's status of PDS host INDEX: {', '.join(HOST_STATUSES)} (else active)",
    )
    p.add_argument(
        "--relay-dead-hosts",
        type=int,
        default=0,
        metavar="N",
        help="the relay also lists N active hosts that nobody serves",
    )
    p.add_argument("--relay-fault", choices=RELAY_FAULTS, help="the relay answers listHosts badly")
    p.add_argument("--out", type=Path, default=Path("simnet-out"))
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    spec = SimSpec(
        accounts=args.accounts,
        hosts=args.hosts,
        mean_records=args.mean_records,
        seed=args.seed,
        statuses=[s for s in args.statuses.split(",") if s],
        faults=[f for f in args.faults.split(",") if f],
        unknown_dids=args.unknown_dids,
        big=args.big,
        edits=args.edits,
    )
    network, dids = build_network(spec)
    servers = SimServers(
        network,
        limits=_limits(args),
        listing_options=_listing_options(args),
        relay=_relay(args),
    )
    await servers.start()
    if args.did_web:
        dids.append(add_did_web_account(servers, args.mean_records, args.seed))
    truth, dids_path = write_files(servers, dids, args.out)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready: dict[str, object] = {
        "ready": True,
        "plc": servers.plc_url,
        "pds": servers.pds_urls,
        "dids": str(dids_path),
        "truth": str(truth),
    }
    if servers.relay is not None:
        ready["relay"] = servers.relay_url
        ready["relay_hosts"] = [
            {"hostname": h.hostname, "status": h.status} for h in servers.relay_hosts
        ]
    sys.stdout.write(orjson.dumps(ready).decode() + "\n")
    sys.stdout.flush()
    await stop.wait()
    await servers.stop()


def _limits(args: argparse.Namespace) -> dict[int, RateSpec]:
    limits = {i: parse_rate(args.rate_limit) for i in range(args.hosts)} if args.rate_limit else {}
    for entry in args.throttle:
        index, _, rate = entry.partition("=")
        limits[int(index)] = parse_rate(rate)
    return limits


def _listing_options(args: argparse.Namespace) -> dict[int, ListingOptions]:
    options = {i: ListingOptions() for i in range(args.hosts)}
    if args.no_list_by_collection:
        off = args.no_list_by_collection
        indexes = range(args.hosts) if off == "all" else [int(i) for i in off.split(",")]
        for index in indexes:
            options[index].list_by_collection = False
    for entry in filter(None, args.listing_faults.split(",")):
        index, _, fault = entry.partition("=")
        if fault not in LISTING_FAULTS or int(index) not in options:
            raise SystemExit(f"--listing-faults: bad entry {entry!r}")
        options[int(index)].fault = fault
    return options


def _relay(args: argparse.Namespace) -> RelayOptions | None:
    if not (args.relay or args.relay_hosts or args.relay_dead_hosts or args.relay_fault):
        return None
    statuses = {}
    for entry in filter(None, args.relay_hosts.split(",")):
        index, _, status = entry.partition("=")
        if not index.isdigit() or int(index) >= args.hosts or status not in HOST_STATUSES:
            raise SystemExit(f"--relay-hosts: bad entry {entry!r}")
        statuses[int(index)] = status
    return RelayOptions(statuses=statuses, dead_hosts=args.relay_dead_hosts, fault=args.relay_fault)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_args(argv)))


if __name__ == "__main__":
    main()
