"""Signatures against an independent signer: repos built and signed by the reference
`@atproto/repo` + `@atproto/crypto` (`../shared/staticnet/gen.mjs`), P-256 and secp256k1
keys, some with a bad commit signature of each kind it makes (wrong key, high-S, flipped
bit, no sig, a secp256k1 signature under a P-256 key). The generated files are read
directly (DID documents and CARs, no server): every good repo verifies and gives exactly
the records of the truth, every tampered one is refused with `bad_signature`.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from skyfill.atproto.crypto import parse_did_key
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.identity.document import identity_from_document
from skyfill.atproto.repo import decode_repo
from tests.e2e.conftest import node_binary, refpds_home, shared_dir

pytestmark = pytest.mark.refpds
TAMPER_KINDS = {"wrong_key", "high_s", "bit_flip", "no_sig", "curve_mismatch"}


@pytest.fixture(scope="module")
def staticnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("staticnet")
    home = refpds_home()
    command = [
        str(node_binary(home)), str(shared_dir() / "staticnet" / "gen.mjs"), "--out", str(out),
        "--accounts", "40", "--hosts", "2", "--max-records", "400", "--tamper", "10",
        "--p256", "8", "--jobs", "2",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={"ATPROTO_HOME": str(home)}
    )
    if done.returncode != 0:
        pytest.fail(f"staticnet/gen.mjs failed: {done.stderr.strip()[-2000:]}", pytrace=False)
    return out


def _decode(data: Path, did: str):
    doc = json.loads((data / "plc" / did).read_text())
    identity = identity_from_document(did, doc)
    assert identity.signing_key is not None, doc
    car = (data / "car" / f"{did}.car").read_bytes()
    return identity, decode_repo(car, expected_did=did, signing_key=identity.signing_key)


def test_reference_signed_repos_verify_and_tampered_ones_do_not(staticnet: Path) -> None:
    truth = json.loads((staticnet / "truth.json").read_text())["repos"]
    seen_curves, seen_tamper = set(), set()
    for did, facts in truth.items():
        if facts["status"] == "bad_signature":
            with pytest.raises(InvalidRepo) as refused:
                _decode(staticnet, did)
            assert refused.value.kind is RepoFault.BAD_SIGNATURE, (did, facts["tamper"])
            seen_tamper.add(facts["tamper"])
            continue
        identity, repo = _decode(staticnet, did)
        assert identity.signing_key is not None
        seen_curves.add(parse_did_key(identity.signing_key).curve)
        paths = [f"{c}/{r}" for c, r in zip(repo.collections, repo.rkeys, strict=True)]
        got = set(zip(paths, repo.cids, strict=True))
        assert got == {(r["path"], r["cid"]) for r in facts["records"]}, did
        assert repo.commit.cid == facts["commit"] and repo.commit.rev == facts["rev"]
    assert seen_tamper == TAMPER_KINDS
    assert {str(c) for c in seen_curves} == {"p256", "k256"}
