"""Changing the simulated network while it runs (tests of refresh and discovery).

`apply_edit(network, edit)` takes what `POST /_simnet/edit` receives, a JSON object with an
`action`:
  add_post        {"did"[, "text"]}: a new post; answers its path and CID
  delete_record   {"did"[, "path"]}: removes `path` (default: the first post)
  update_profile  {"did"[, "description"]}: changes app.bsky.actor.profile/self
  set_status      {"did", "status"}: ok, deactivated, takendown, suspended, not_found
                  (deleted on its PDS) or tombstoned; no new commit
  create_account  {"host"[, "records"]}: a new account on PDS `host`; answers its DID
  tamper          {"did", "fault"}: a new commit, broken by `fault` (one of
                  simnet.tamper's SIGNATURE_FAULTS / MST_FAULTS), or null for a good one
Record edits make a new commit whose rev is one second after the repo's previous rev.
Every answer has the repo's `did`, `rev` and `commit` after the edit.
"""

from __future__ import annotations

import random

from skyfill.simnet.accounts import Account, curve_of, generate_records, plc_did
from skyfill.simnet.network import SimNetwork, later_rev
from skyfill.simnet.tamper import MST_FAULTS, SIGNATURE_FAULTS

EDIT_ACTIONS = (
    "add_post",
    "delete_record",
    "update_profile",
    "set_status",
    "create_account",
    "tamper",
)
ACCOUNT_STATES = ("ok", "deactivated", "takendown", "suspended", "not_found", "tombstoned")


class EditError(ValueError):
    """The edit cannot be applied (unknown action or DID, bad field): an HTTP 400."""


def apply_edit(network: SimNetwork, edit: object) -> dict:
    """Apply one edit to `network`; returns what changed (see the module docstring)."""
    if not isinstance(edit, dict) or edit.get("action") not in EDIT_ACTIONS:
        raise EditError(f"want an object with an action in {', '.join(EDIT_ACTIONS)}")
    action = edit["action"]
    if action == "create_account":
        return _create_account(network, edit)
    did = edit.get("did")
    account = network.accounts.get(did) if isinstance(did, str) else None
    if account is None:
        raise EditError(f"unknown DID {did!r}")
    if action == "set_status":
        status = edit.get("status")
        if status not in ACCOUNT_STATES:
            raise EditError(f"status must be one of {', '.join(ACCOUNT_STATES)}")
        account.status = status
        built = network.repos[account.did]
        return {"did": account.did, "rev": built.rev, "commit": built.commit, "status": status}
    answer: dict
    if action == "tamper":
        fault = edit.get("fault")
        if fault is not None and fault not in (*SIGNATURE_FAULTS, *MST_FAULTS):
            raise EditError(
                f"fault must be null or one of {', '.join(SIGNATURE_FAULTS + MST_FAULTS)}"
            )
        account.fault = fault
        answer = {"fault": fault}
    elif action == "add_post":
        answer = _add_post(network, account, str(edit.get("text") or "an edit"))
    elif action == "delete_record":
        answer = {"path": _delete_record(account, edit.get("path"))}
    else:
        profile = dict(account.records.get("app.bsky.actor.profile/self", {}))
        profile["$type"] = "app.bsky.actor.profile"
        profile["description"] = str(edit.get("description") or "edited by simnet")
        account.records["app.bsky.actor.profile/self"] = profile
        answer = {"path": "app.bsky.actor.profile/self"}
    built = network.commit(account.did)
    if "path" in answer and answer["path"] in built.paths:
        answer["cid"] = built.paths[answer["path"]]
    return {"did": account.did, "rev": built.rev, "commit": built.commit, **answer}


def _add_post(network: SimNetwork, account: Account, text: str) -> dict:
    rkey = later_rev(network.repos[account.did].rev)  # the new rev's TID: unique in the repo
    path = f"app.bsky.feed.post/{rkey}"
    account.records[path] = {
        "$type": "app.bsky.feed.post",
        "text": text,
        "createdAt": "2026-01-02T00:00:00.000Z",
        "langs": ["en"],
    }
    return {"path": path}


def _delete_record(account: Account, path: object) -> str:
    if path is None:
        posts = sorted(p for p in account.records if p.startswith("app.bsky.feed.post/"))
        if not posts:
            raise EditError(f"{account.did} has no post to delete")
        path = posts[0]
    if not isinstance(path, str) or path not in account.records:
        raise EditError(f"{account.did} has no record {path!r}")
    del account.records[path]
    return path


def _create_account(network: SimNetwork, edit: dict) -> dict:
    host, count = edit.get("host", 0), edit.get("records", 10)
    if not isinstance(host, int) or not 0 <= host < network.hosts:
        raise EditError(f"host must be a PDS index 0..{network.hosts - 1}")
    if not isinstance(count, int) or not 1 <= count <= 10_000:
        raise EditError("records must be 1..10000")
    number = len(network.accounts)
    did = plc_did(f"simnet-created-{number}")
    while did in network.accounts:
        number += 1
        did = plc_did(f"simnet-created-{number}")
    account = Account(
        did=did, handle=f"created{number}.sim.test", host=host, curve=curve_of(number)
    )
    account.records = generate_records(random.Random(did), count, [did])
    network.add(account)
    built = network.repos[did]
    return {"did": did, "rev": built.rev, "commit": built.commit, "host": host}
