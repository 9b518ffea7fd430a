"""Decoding and verifying a stream over worker processes (`--decode-workers N`).

Each worker is a process of its own (spawned: it shares nothing with the consumer) that
reads chunks of messages from a pipe, each with the signing keys of the accounts it names,
and answers with their frames, decoded and verified as `decoding.decode_message` does it.
Two threads per worker move chunks out and results in, so the event loop never waits on a
pipe; one worker's results come back in the order its chunks went.

Over the pipe a commit travels as plain tuples: unpickling dataclasses costs about four
times more, and the consumer's process is the one that must keep up. `_commit_to_wire` and
`_commit_from_wire` are each other's inverse.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import multiprocessing
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from skyfill import gcpolicy
from skyfill.atproto import slots
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.stream.commit import CommitDelete, CommitPut, VerifiedCommit
from skyfill.atproto.stream.frames import CommitFrame, FrameError, RepoOp
from skyfill.backfill.collections import collection_filter
from skyfill.failpoints import failpoint
from skyfill.firehose.decoding import Decoded, Precheck, decode_message
from skyfill.firehose.errors import DecodeWorkerDied

STOP_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    verify: bool
    collections: tuple[str, ...] = ()
    """`--collections` patterns (empty: every collection)."""


class ProcessDecoder:
    wants_keys = True

    def __init__(self, workers: int, settings: WorkerSettings) -> None:
        context = multiprocessing.get_context("spawn")
        self._workers = [_Worker(context, settings, i) for i in range(max(1, workers))]

    async def decode(self, messages: list[bytes], keys: Mapping[str, str]) -> list[Decoded]:
        loop = asyncio.get_running_loop()
        worker = min(self._workers, key=lambda w: w.pending)
        future: asyncio.Future[list[Decoded]] = loop.create_future()
        worker.send(loop, future, (dict(keys), messages))
        return await future

    async def close(self) -> None:
        await asyncio.to_thread(_stop_all, self._workers)


class _Worker:
    def __init__(self, context: Any, settings: WorkerSettings, index: int) -> None:
        parent, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, settings), name=f"skyfill-decode-{index}", daemon=True
        )
        self.process.start()
        child.close()
        self.conn: Connection = parent
        self.pending = 0
        self._jobs: collections.deque[tuple[Any, Any, Any]] = collections.deque()
        self._jobs_ready = threading.Condition()
        self._waiting: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = (
            collections.deque()
        )
        self._closing = False
        self._sender = threading.Thread(target=self._send_loop, daemon=True)
        self._receiver = threading.Thread(target=self._receive_loop, daemon=True)
        self._sender.start()
        self._receiver.start()

    def send(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future, payload: Any) -> None:
        self.pending += 1
        future.add_done_callback(self._done)
        with self._jobs_ready:
            self._jobs.append((loop, future, payload))
            self._jobs_ready.notify()

    def _done(self, _: asyncio.Future) -> None:
        self.pending -= 1

    def stop(self) -> None:
        with self._jobs_ready:
            self._closing = True
            self._jobs_ready.notify()
        self._sender.join(STOP_SECONDS)
        self.process.join(STOP_SECONDS)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_SECONDS)
        self._receiver.join(STOP_SECONDS)
        self.conn.close()

    def _send_loop(self) -> None:
        while True:
            with self._jobs_ready:
                while not self._jobs and not self._closing:
                    self._jobs_ready.wait()
                if not self._jobs:
                    with contextlib.suppress(OSError):
                        self.conn.send(None)
                    return
                loop, future, payload = self._jobs.popleft()
            self._waiting.append((loop, future))
            try:
                self.conn.send(payload)
            except OSError:
                return  # the receiver sees the worker gone and fails what waits

    def _receive_loop(self) -> None:
        while True:
            try:
                wire = self.conn.recv()
            except (EOFError, OSError):
                self._fail_waiting()
                return
            loop, future = self._waiting.popleft()
            try:
                decoded = [_from_wire(item) for item in wire]
            except Exception as exc:  # a worker's bug: said, not a silent loss
                loop.call_soon_threadsafe(_set_exception, future, exc)
                continue
            loop.call_soon_threadsafe(_set_result, future, decoded)

    def _fail_waiting(self) -> None:
        with self._jobs_ready:
            jobs = [(loop, future) for loop, future, _ in self._jobs]
            self._jobs.clear()
        for loop, future in [*self._waiting, *jobs]:
            if self._closing:
                loop.call_soon_threadsafe(future.cancel)
                continue
            self.process.join(STOP_SECONDS)
            error = DecodeWorkerDied(
                f"decode worker {self.process.name} ended (exit {self.process.exitcode}); "
                "what was applied before is saved with its cursor: run the same command "
                "again to go on"
            )
            loop.call_soon_threadsafe(_set_exception, future, error)
        self._waiting.clear()


def _set_result(future: asyncio.Future, value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()


# -- the worker process ---------------------------------------------------------------


def _serve(conn: Connection, settings: WorkerSettings) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the consumer stops its workers
    gcpolicy.tune()
    keep = collection_filter(settings.collections)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        keys, messages = job
        failpoint("decode_chunk")  # tests: a worker that dies mid-stream
        decoded = [
            decode_message(m, keys, verify=settings.verify, keep_collection=keep) for m in messages
        ]
        conn.send([_to_wire(item, settings.verify) for item in decoded])


# -- the wire format ------------------------------------------------------------------


def _to_wire(item: Decoded, verify: bool) -> tuple:
    frame, pre = item
    if isinstance(frame, FrameError):
        return ("E", str(frame), frame.seq)
    if isinstance(frame, CommitFrame):
        # the slice goes back only if the consumer may still need it: to check a signature
        keep_blocks = pre is None or (verify and pre.key is None)
        return ("C", _commit_to_wire(frame, keep_blocks), _precheck_to_wire(pre))
    return ("F", frame)


def _from_wire(wire: tuple) -> Decoded:
    tag = wire[0]
    if tag == "C":
        return _commit_from_wire(wire[1]), _precheck_from_wire(wire[2])
    if tag == "E":
        error = FrameError(wire[1])
        error.seq = wire[2]
        return error, None
    return wire[1], None


def _commit_to_wire(f: CommitFrame, keep_blocks: bool) -> tuple:
    ops = tuple((op.action, op.path, op.cid, op.prev) for op in f.ops)
    blocks = f.blocks if keep_blocks else b""
    return (f.seq, f.repo, f.rev, f.since, f.commit, blocks, ops, f.time, f.prev_data,
            f.too_big, f.rebase)  # fmt: skip


def _commit_from_wire(w: tuple) -> CommitFrame:
    """`CommitFrame(*w)` with its ops, filled slot by slot (see `atproto/slots.py`): the
    consumer's process rebuilds every commit, and frozen dataclasses' `__init__` costs
    several times more."""
    ops = []
    for action, path, cid, prev in w[6]:
        op = new(RepoOp)
        _op_action(op, action)
        _op_path(op, path)
        _op_cid(op, cid)
        _op_prev(op, prev)
        ops.append(op)
    frame = new(CommitFrame)
    for setter, value in zip(_FRAME_SETTERS, w, strict=True):
        setter(frame, value)
    _frame_ops(frame, tuple(ops))
    return frame


def _precheck_to_wire(pre: Precheck | None) -> tuple | None:
    if pre is None:
        return None
    result = pre.result
    if isinstance(result, InvalidRepo):
        return ("bad", pre.key, _bare_message(result), result.kind.value)
    puts = tuple(
        (p.action, p.collection, p.rkey, p.cid, p.record, p.created_at) for p in result.puts
    )
    deletes = tuple((d.collection, d.rkey) for d in result.deletes)
    verified = (result.rev, result.commit_cid, result.data, puts, deletes, result.proof)
    return ("ok", pre.key, verified)


def _precheck_from_wire(wire: tuple | None) -> Precheck | None:
    if wire is None:
        return None
    if wire[0] == "bad":
        return Precheck(InvalidRepo(wire[2], RepoFault(wire[3])), wire[1])
    rev, commit_cid, data, puts, deletes, proof = wire[2]
    made_puts = []
    for fields in puts:
        put = new(CommitPut)
        for setter, value in zip(_PUT_SETTERS, fields, strict=True):
            setter(put, value)
        made_puts.append(put)
    made_deletes = []
    for collection, rkey in deletes:
        delete = new(CommitDelete)
        _delete_collection(delete, collection)
        _delete_rkey(delete, rkey)
        made_deletes.append(delete)
    verified = new(VerifiedCommit)
    for setter, value in zip(
        _VERIFIED_SETTERS,
        (rev, commit_cid, data, tuple(made_puts), tuple(made_deletes), proof),
        strict=True,
    ):
        setter(verified, value)
    pre = new(Precheck)
    _pre_result(pre, verified)
    _pre_key(pre, wire[1])
    return pre


# fmt: off
_FRAME_SETTERS = slots.setters(
    CommitFrame, "seq", "repo", "rev", "since", "commit", "blocks", "ops", "time", "prev_data",
    "too_big", "rebase",
)
"""In the order of `_commit_to_wire`'s tuple (its `ops` set again, made, after)."""
_frame_ops = _FRAME_SETTERS[6]
_op_action, _op_path, _op_cid, _op_prev = slots.setters(RepoOp, "action", "path", "cid", "prev")
_PUT_SETTERS = slots.setters(
    CommitPut, "action", "collection", "rkey", "cid", "record", "created_at"
)
_delete_collection, _delete_rkey = slots.setters(CommitDelete, "collection", "rkey")
_VERIFIED_SETTERS = slots.setters(
    VerifiedCommit, "rev", "commit_cid", "data", "puts", "deletes", "proof"
)
_pre_result, _pre_key = slots.setters(Precheck, "result", "key")
# fmt: on
new = slots.new


def _bare_message(error: InvalidRepo) -> str:
    """The message an InvalidRepo was made with (its text starts with its kind)."""
    prefix = f"{error.kind}: "
    return error.message[len(prefix) :] if error.message.startswith(prefix) else error.message
