"""The simulated network's data: accounts, their built repos, faults and the ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from skyfill.atproto.cid import cid_from_str
from skyfill.atproto.tid import encode_tid, tid_timestamp
from skyfill.simnet.accounts import BASE_TIME, Account
from skyfill.simnet.keys import signing_key
from skyfill.simnet.tamper import build_served_repo

# Faults after which a correct backfill still has the repo (the others lose it).
RECOVERABLE_FAULTS = (None, "flaky_503", "flaky_429", "slow_first", "key_rotated")
REV_TIME = BASE_TIME + timedelta(days=365)
REV = encode_tid(int(REV_TIME.timestamp() * 1_000_000))


@dataclass(slots=True)
class BuiltRepo:
    car: bytes
    commit: str
    paths: dict[str, str]
    rev: str = REV


def later_rev(rev: str, seconds: int = 1) -> str:
    """The TID `seconds` after the TID `rev`."""
    when = tid_timestamp(rev)
    assert when is not None, rev
    return encode_tid(round(when.timestamp() * 1_000_000) + seconds * 1_000_000)


def corrupt_block(car: bytes, record_cid: str) -> bytes:
    """Flip one byte inside the block of `record_cid`, so it no longer matches its CID."""
    cid = cid_from_str(record_cid)
    at = car.index(cid) + len(cid) + 4
    return car[:at] + bytes([car[at] ^ 0xFF]) + car[at + 1 :]


def drop_block(car: bytes, record_cid: str) -> bytes:
    """Remove the section holding `record_cid` (its length varint is one or two bytes)."""
    from skyfill.atproto.car import read_car, write_car

    parsed = read_car(car)
    cid = cid_from_str(record_cid)
    return write_car(parsed.roots, [(c, b) for c, b in parsed.blocks.items() if c != cid])


class SimNetwork:
    """Accounts by DID, with their repos built once (each signed with its account's key)."""

    def __init__(self, accounts: list[Account], hosts: int, rev: str = REV) -> None:
        self.accounts = {a.did: a for a in accounts}
        self.hosts = hosts
        self.rev = rev
        self.repos: dict[str, BuiltRepo] = {}
        self.requests: dict[str, int] = {}
        """getRepo requests per DID so far."""
        self.document_requests: dict[str, int] = {}
        """DID document requests per DID so far (PLC or did:web)."""
        for account in accounts:
            self._build(account)

    def add(self, account: Account) -> None:
        self.accounts[account.did] = account
        self._build(account)

    def _build(self, account: Account, rev: str | None = None) -> None:
        rev = rev or self.rev
        car, commit, paths = build_served_repo(account, rev)
        if account.fault == "bad_cid":
            car = corrupt_block(car, next(iter(paths.values())))
        elif account.fault == "missing_block":
            car = drop_block(car, next(iter(paths.values())))
        self.repos[account.did] = BuiltRepo(car, commit, paths, rev)

    def commit(self, did: str) -> BuiltRepo:
        """Rebuild `did`'s repo from its records as a new commit, one second after its
        current rev (after an edit)."""
        account = self.accounts[did]
        self._build(account, later_rev(self.repos[did].rev))
        return self.repos[did]

    def truth(self, plc_url: str, pds_urls: list[str]) -> dict:
        """Ground truth in the format of ../shared/refpds (what a correct backfill returns)."""
        repos = {}
        for did, account in self.accounts.items():
            built = self.repos[did]
            ok = account.status == "ok" and account.fault in RECOVERABLE_FAULTS
            repos[did] = {
                "pds": pds_urls[account.host],
                "handle": account.handle,
                "rev": built.rev,
                "commit": built.commit,
                "status": account.status,
                "fault": account.fault,
                "signing_key": signing_key(account).did_key,
                "records": [{"path": p, "cid": c} for p, c in sorted(built.paths.items())]
                if ok
                else [],
            }
        return {"plc": plc_url, "pds": pds_urls, "repos": repos}
