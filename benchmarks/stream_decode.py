"""Event stream benchmark: decode and verify a firehose recording, one process, one core.

    python benchmarks/stream_decode.py DIR [--repeats 3] [--no-proof]

DIR is a recording made by `../shared/staticnet/firehose.mjs` (`frames.bin`, and `plc/<did>`
for the signing keys). Stages, each over every frame, best and median of the repeats:
  decode_frame    websocket message -> Frame (`atproto/stream/frames.py`)
  verify_commit   each #commit: slice CIDs, commit, signature, records, sync 1.1 proof
  verify_sync     each #sync
No network: the frames are read from the file.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import struct
import time
from collections.abc import Callable
from pathlib import Path

from skyfill.atproto.identity.document import identity_from_document
from skyfill.atproto.stream.commit import verify_commit, verify_sync
from skyfill.atproto.stream.frames import CommitFrame, Frame, SyncFrame, decode_frame


def read_messages(directory: Path) -> list[bytes]:
    data = (directory / "frames.bin").read_bytes()
    messages, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<I", data, pos)
        messages.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return messages


def signing_keys(directory: Path) -> dict[str, str | None]:
    keys = {}
    for path in (directory / "plc").iterdir():
        did = path.name
        keys[did] = identity_from_document(did, json.loads(path.read_text())).signing_key
    return keys


def timed(run: Callable[[], int], repeats: int) -> tuple[int, float, float]:
    seconds = []
    count = 0
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        count = run()
        seconds.append(time.perf_counter() - started)
    return count, min(seconds), statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-proof", action="store_true", help="skip the sync 1.1 inversion")
    args = parser.parse_args()
    messages = read_messages(args.dir)
    keys = signing_keys(args.dir)
    frames: list[Frame] = [decode_frame(m) for m in messages]
    commits = [f for f in frames if isinstance(f, CommitFrame)]
    syncs = [f for f in frames if isinstance(f, SyncFrame)]
    proof = not args.no_proof

    def decode_all() -> int:
        return len([decode_frame(m) for m in messages])

    def verify_all() -> int:
        return len([verify_commit(f, keys[f.repo], check_proof=proof) for f in commits])

    def verify_unsigned() -> int:
        return len([verify_commit(f, None, check_proof=proof) for f in commits])

    def syncs_all() -> int:
        return len([verify_sync(f, keys[f.did]) for f in syncs])

    size = sum(map(len, messages)) / 1e6
    print(f"{len(messages)} frames, {size:.1f} MB, {len(commits)} commits, {len(syncs)} syncs")
    stages = [
        ("decode_frame", decode_all),
        ("verify_commit", verify_all),
        ("verify_commit, no key", verify_unsigned),
        ("verify_sync", syncs_all),
    ]
    for name, run in stages:
        count, best, median = timed(run, args.repeats)
        print(
            f"{name:24} {count:>8} in {best:.3f}s best, {median:.3f}s median:"
            f" {count / best:>10,.0f}/s best, {count / median:>10,.0f}/s median"
        )


if __name__ == "__main__":
    main()
