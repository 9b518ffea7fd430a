"""The simulated network signs its repos: what its PLC directory publishes and its PDS hosts
serve, read over HTTP and checked with `skyfill.atproto.crypto` and libipld, for accounts of
both curves and for each signature and MST fault (simnet.tamper)."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Iterator

import cbrrr
import libipld
import pytest

from skyfill.atproto import mst
from skyfill.atproto.car import read_car
from skyfill.atproto.cid import block_matches_cid, cid_to_str
from skyfill.atproto.crypto import Curve, high_s, is_low_s, parse_multikey, verify_signature
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.repo import decode_repo
from skyfill.simnet.keys import signing_key
from skyfill.simnet.network import RECOVERABLE_FAULTS
from skyfill.simnet.run import SimSpec, build_network
from skyfill.simnet.server import FAULT_OUTCOMES, FAULTS
from skyfill.simnet.tamper import INVALID_PATH, MST_FAULTS, SIGNATURE_FAULTS, flip_bit
from tests.helpers import Server, get_json, start_simnet

TRUST_FAULTS = (*SIGNATURE_FAULTS, "no_signing_key", "key_rotated", *MST_FAULTS)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(
        tmp_path_factory.mktemp("signed-net"),
        accounts=24,
        hosts=2,
        mean_records=20,
        faults=",".join(TRUST_FAULTS),
        did_web="",
    )
    try:
        yield server
    finally:
        server.stop()


def _repos(net: Server) -> dict[str, dict]:
    return net.ready["truth_data"]["repos"]


def _by_fault(net: Server) -> dict[str, str]:
    return {r["fault"]: did for did, r in _repos(net).items() if r["fault"]}


def _document(net: Server, did: str) -> dict:
    if did.startswith("did:web:"):
        return get_json(f"{_repos(net)[did]['pds']}/.well-known/did.json")
    return get_json(f"{net.ready['plc']}/{did}")


def _atproto_key(document: dict) -> str | None:
    """The `#atproto` verification method's publicKeyMultibase, checked to be a Multikey."""
    did = document["id"]
    for method in document["verificationMethod"]:
        if method["id"] == f"{did}#atproto":
            assert (method["type"], method["controller"]) == ("Multikey", did), method
            return method["publicKeyMultibase"]
    return None


def _car(net: Server, did: str) -> bytes:
    query = urllib.parse.urlencode({"did": did})
    url = f"{_repos(net)[did]['pds']}/xrpc/com.atproto.sync.getRepo?{query}"
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def _commit(car: bytes) -> tuple[bytes, dict]:
    """The root CID and the commit, as libipld reads the CAR."""
    header, blocks = libipld.decode_car(car)
    root = header["roots"][0]
    return root, blocks[root]


def _unsigned(commit: dict) -> bytes:
    """What the signature signs: the DAG-CBOR of the commit without `sig` (made afresh)."""
    return cbrrr.encode_dag_cbor(
        {
            "did": commit["did"],
            "version": commit["version"],
            "data": cbrrr.CID(commit["data"]),
            "rev": commit["rev"],
            "prev": None,
        }
    )


def _verifies(key: str, car: bytes) -> bool:
    _, commit = _commit(car)
    assert commit["version"] == 3 and isinstance(commit["sig"], bytes), commit
    return verify_signature(key, _unsigned(commit), commit["sig"])


def test_every_repo_verifies_with_the_key_its_document_publishes_on_both_curves(
    net: Server,
) -> None:
    curves = set()
    normal = [did for did, repo in _repos(net).items() if repo["fault"] is None]
    assert any(did.startswith("did:web:") for did in normal)
    for did in normal:
        key = _atproto_key(_document(net, did))
        assert key is not None, did
        assert "did:key:" + key == _repos(net)[did]["signing_key"]
        car = _car(net, did)
        assert _verifies(key, car), did
        root, commit = _commit(car)
        assert cid_to_str(root) == _repos(net)[did]["commit"] and commit["did"] == did
        curves.add(parse_multikey(key).curve)
    assert curves == {Curve.P256, Curve.K256}


def test_each_signature_fault_does_not_verify_with_the_published_key(net: Server) -> None:
    faulty = _by_fault(net)
    for fault in SIGNATURE_FAULTS:
        did = faulty[fault]
        key = _atproto_key(_document(net, did))
        assert key is not None, fault
        car = _car(net, did)
        _, commit = _commit(car)
        if fault == "sig_missing":
            assert "sig" not in commit
            continue
        assert not _verifies(key, car), fault
        signature = commit["sig"]
        curve = parse_multikey(key).curve
        if fault == "sig_high_s":  # the high-S form of a valid signature
            assert not is_low_s(curve, signature)
            assert verify_signature(key, _unsigned(commit), high_s(curve, signature))
        elif fault == "sig_flipped_bit":  # one bit away from a valid signature
            assert verify_signature(key, _unsigned(commit), flip_bit(signature))
        else:
            assert is_low_s(curve, signature)


def test_no_signing_key_publishes_no_atproto_method_but_signs(net: Server) -> None:
    did = _by_fault(net)["no_signing_key"]
    document = _document(net, did)
    assert _atproto_key(document) is None and document["verificationMethod"] == []
    assert _verifies(_repos(net)[did]["signing_key"], _car(net, did))


def test_key_rotated_gives_an_old_key_first_then_the_signing_one(net: Server) -> None:
    did = _by_fault(net)["key_rotated"]
    first, second, third = (_atproto_key(_document(net, did)) for _ in range(3))
    assert first is not None and second is not None
    assert first != second == third
    assert "did:key:" + second == _repos(net)[did]["signing_key"]
    assert parse_multikey(first).curve == parse_multikey(second).curve
    car = _car(net, did)
    assert _verifies(second, car) and not _verifies(first, car)


@pytest.mark.parametrize("fault", MST_FAULTS)
def test_mst_faults_are_signed_and_break_their_rule(net: Server, fault: str) -> None:
    did = _by_fault(net)[fault]
    key = _atproto_key(_document(net, did))
    assert key is not None
    car = _car(net, did)
    assert _verifies(key, car)  # the commit is valid: only the tree is wrong
    parsed = read_car(car)
    assert all(block_matches_cid(cid, block) for cid, block in parsed.blocks.items())
    _, commit = _commit(car)
    if fault == "mst_invalid_key":
        keys, _ = mst.collect(parsed.blocks.__getitem__, commit["data"])
        assert INVALID_PATH.encode() in keys
        assert INVALID_PATH.count("/") == 2
    else:
        with pytest.raises(InvalidRepo) as broken:
            mst.collect(parsed.blocks.__getitem__, commit["data"])
        assert str(broken.value.kind) == FAULT_OUTCOMES[fault][1]
    with pytest.raises(InvalidRepo) as refused:
        decode_repo(car, did, signing_key="did:key:" + key)
    assert str(refused.value.kind) == FAULT_OUTCOMES[fault][1]


def test_an_edited_repo_is_signed_again(net: Server) -> None:
    did = next(did for did, repo in _repos(net).items() if repo["fault"] is None)
    pds = _repos(net)[did]["pds"]
    edited = get_json(f"{pds}/_simnet/edit", {"action": "add_post", "did": did})
    car = _car(net, did)
    root, commit = _commit(car)
    assert (cid_to_str(root), commit["rev"]) == (edited["commit"], edited["rev"])
    assert _verifies(_repos(net)[did]["signing_key"], car)
    latest = get_json(f"{pds}/xrpc/com.atproto.sync.getLatestCommit?did={did}")
    assert latest == {"cid": edited["commit"], "rev": edited["rev"]}


def test_every_fault_has_an_outcome_and_the_truth_agrees() -> None:
    assert set(FAULT_OUTCOMES) == set(FAULTS)
    recoverable = {fault for fault, (status, _) in FAULT_OUTCOMES.items() if status == "ok"}
    assert set(RECOVERABLE_FAULTS) == {None, *recoverable}
    for fault in TRUST_FAULTS:
        status, kind = FAULT_OUTCOMES[fault]
        assert (status == "ok") == (kind is None), fault


def test_keys_are_deterministic_and_alternate_curves(net: Server) -> None:
    """The same network built here, in another process, has the same keys."""
    spec = SimSpec(accounts=24, hosts=2, mean_records=20, faults=list(TRUST_FAULTS))
    here, _ = build_network(spec)
    accounts = list(here.accounts.values())
    served = {did: repo["signing_key"] for did, repo in _repos(net).items()}
    assert {a.did: signing_key(a).did_key for a in accounts}.items() <= served.items()
    assert [a.curve for a in accounts[:4]] == [Curve.P256, Curve.K256] * 2
    assert len(set(served.values())) == len(served)
