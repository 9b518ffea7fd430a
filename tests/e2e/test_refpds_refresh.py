"""`skyfill refresh` against the reference PDS: after a new post, a deletion and a profile
update made through the PDS's own API, only those repos are fetched again and the dataset
equals what `com.atproto.repo.listRecords` answers now."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import sqltables
from tests.e2e.conftest import _start_network
from tests.helpers import Server, run_cli

pytestmark = pytest.mark.refpds

PASSWORD = "hunter22"  # the reference harness's accounts (../shared/refpds/net.mjs)


@pytest.fixture(scope="module")
def small_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A network of its own (this test changes it): 6 accounts on 2 PDS hosts."""
    server = _start_network(tmp_path_factory, ["--accounts", "6", "--records", "20", "--pds", "2"])
    try:
        yield server
    finally:
        server.stop()


def _xrpc(pds: str, nsid: str, body: dict | None = None, token: str | None = None, **q: str):
    url = f"{pds}/xrpc/{nsid}" + (f"?{urllib.parse.urlencode(q)}" if q else "")
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"{}")


def _login(pds: str, handle: str) -> str:
    session = _xrpc(
        pds, "com.atproto.server.createSession", {"identifier": handle, "password": PASSWORD}
    )
    return session["accessJwt"]


def _listed_records(pds: str, did: str) -> set[tuple[str, str]]:
    """Every record of the repo as listRecords answers it now: {(collection/rkey, cid)}."""
    found = set()
    for collection in _xrpc(pds, "com.atproto.repo.describeRepo", repo=did)["collections"]:
        cursor = None
        while True:
            params = {"repo": did, "collection": collection, "limit": "100"}
            if cursor:
                params["cursor"] = cursor
            page = _xrpc(pds, "com.atproto.repo.listRecords", **params)
            for record in page["records"]:
                rkey = record["uri"].rsplit("/", 1)[1]
                found.add((f"{collection}/{rkey}", record["cid"]))
            cursor = page.get("cursor")
            if not page["records"] or not cursor:
                break
    return found


def test_refresh_after_edits_on_the_reference_pds(
    small_net: Server, tmp_path: Path, pg_url: str
) -> None:
    """Into PostgreSQL: the database ends equal to what listRecords answers now."""
    truth = small_net.ready["truth_data"]["repos"]
    dids = tmp_path / "dids.txt"
    dids.write_text("\n".join(truth) + "\n")
    base = run_cli(
        "run", "--dids", str(dids), "--workdir", str(tmp_path), "--job-id", "base",
        "--plc-url", small_net.ready["plc"], "--allow-private-network", "--progress", "none",
        "--sink", pg_url,
    )  # fmt: skip
    assert base.returncode == 0, base.stderr

    ok = sorted(d for d, r in truth.items() if r["status"] == "ok")
    poster, deleter, profiler = ok[:3]
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    token = _login(truth[poster]["pds"], truth[poster]["handle"])
    post = {"$type": "app.bsky.feed.post", "text": "after the backfill", "createdAt": now}
    _xrpc(truth[poster]["pds"], "com.atproto.repo.createRecord",
          {"repo": poster, "collection": "app.bsky.feed.post", "record": post}, token)  # fmt: skip
    token = _login(truth[deleter]["pds"], truth[deleter]["handle"])
    gone = sorted(p for p, _ in sqltables.records_by_did(pg_url)[deleter])[0]
    before = {r["did"]: r for r in sqltables.rows(pg_url, "repos")}
    collection, rkey = gone.split("/")
    _xrpc(truth[deleter]["pds"], "com.atproto.repo.deleteRecord",
          {"repo": deleter, "collection": collection, "rkey": rkey}, token)  # fmt: skip
    token = _login(truth[profiler]["pds"], truth[profiler]["handle"])
    profile = {"$type": "app.bsky.actor.profile", "description": "updated after the backfill"}
    _xrpc(truth[profiler]["pds"], "com.atproto.repo.putRecord",
          {"repo": profiler, "collection": "app.bsky.actor.profile", "rkey": "self",
           "record": profile}, token)  # fmt: skip

    again = run_cli(
        "refresh", "base", "--job-id", "again", "--workdir", str(tmp_path), "--progress", "none"
    )
    assert again.returncode == 0, again.stderr
    assert f"refresh: {len(ok) - 3} repos unchanged" in again.stdout
    now_listed = {did: _listed_records(truth[did]["pds"], did) for did in ok}
    got = sqltables.records_by_did(pg_url)
    assert {d: got.get(d, set()) for d in ok} == now_listed
    assert gone not in {p for p, _ in got[deleter]}
    after = {r["did"]: r for r in sqltables.rows(pg_url, "repos")}
    changed = {d for d in ok if after[d]["rev"] != before[d]["rev"]}
    assert changed == {poster, deleter, profiler}
