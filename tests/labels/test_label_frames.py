"""Reading a label stream's frames and checking a label's signature (`atproto/labels.py`),
and a labeler's DID document (`labeler_from_document`): every field of a label is
checked, a bad label is refused on its own, and both key forms give the same key."""

from __future__ import annotations

from typing import Any

import pytest

from skyfill.atproto.crypto import Curve, Keypair
from skyfill.atproto.exceptions import InvalidDidDocument
from skyfill.atproto.identity.document import labeler_from_document
from skyfill.atproto.labels import LabelsFrame, decode_labels_frame, signed_bytes, verify_label
from skyfill.atproto.stream.frames import ErrorFrame, FrameError, InfoFrame, UnknownFrame
from tests.labels.fakelabeler import document, error_frame, frame, labels_frame, sign

KEY = Keypair.from_seed(Curve.K256, "labels")
SRC = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
LABEL = {
    "ver": 1,
    "src": SRC,
    "uri": "at://did:plc:bbbbbbbbbbbbbbbbbbbbbbbb/app.bsky.feed.post/3kaaaaaaaaa22",
    "cid": "bafyreig62rxs34h5rvznfrracwkjlfgad5b25qxglp2hcziqdfas2nw2ee",
    "val": "spam",
    "cts": "2026-01-01T00:00:00.000Z",
    "exp": "2026-01-02T00:00:00Z",
}


def one(label: dict[str, Any], seq: int = 7) -> LabelsFrame:
    decoded = decode_labels_frame(labels_frame(seq, label))
    assert isinstance(decoded, LabelsFrame)
    return decoded


def test_a_labels_frame_is_read_and_its_signature_checked() -> None:
    signed = sign(LABEL, KEY)
    decoded = one(signed)
    assert decoded.seq == 7 and decoded.invalid == ()
    (label,) = decoded.labels
    assert (label.src, label.val, label.neg, label.ver, label.exp) == (
        SRC, "spam", False, 1, "2026-01-02T00:00:00Z",
    )  # fmt: skip
    assert b"sig" not in signed_bytes(label)
    assert verify_label(label, KEY.did_key)
    assert not verify_label(label, Keypair.from_seed(Curve.K256, "other").did_key)
    assert not verify_label(label, "did:key:zNotAKey")
    tampered = one({**signed, "val": "rude"}).labels[0]  # the signature covers every field
    assert not verify_label(tampered, KEY.did_key)
    with_neg = one({**signed, "neg": False}).labels[0]  # `neg: false` sent, not signed
    assert not verify_label(with_neg, KEY.did_key)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("src", "not-a-did", "src is not a DID"),
        ("uri", "no uri", "uri is not a URI"),
        ("uri", "at://did:plc:x/not nsid", "uri is not a URI"),
        ("cid", "Qmbad", "cid is not a CID"),
        ("val", "", "val is empty"),
        ("val", "x" * 129, "longer than 128 bytes"),
        ("neg", "yes", "neg is str, not bool"),
        ("cts", "2026-01-01", "cts is not a datetime"),
        ("exp", "tomorrow", "exp is not a datetime"),
        ("sig", None, "sig is missing, not bytes"),
        ("ver", "1", "ver is str, not int"),
    ],
)
def test_a_label_breaking_the_lexicon_is_refused_alone(field: str, value: Any, reason: str) -> None:
    bad = {**sign(LABEL, KEY), field: value}
    if value is None:
        del bad[field]
    decoded = decode_labels_frame(labels_frame(3, sign(LABEL, KEY), bad))
    assert isinstance(decoded, LabelsFrame)
    assert len(decoded.labels) == 1
    assert len(decoded.invalid) == 1 and reason in decoded.invalid[0]


def test_frames_that_are_not_labels() -> None:
    with pytest.raises(FrameError) as caught:
        decode_labels_frame(frame({"op": 1, "t": "#labels"}, {"seq": 4, "labels": {}}))
    assert caught.value.seq == 4
    with pytest.raises(FrameError):
        decode_labels_frame(frame({"op": 1, "t": "#labels"}, {"labels": []}))
    with pytest.raises(FrameError):
        decode_labels_frame(b"\xff\x00")
    future = decode_labels_frame(error_frame("FutureCursor", "Cursor in the future."))
    assert future == ErrorFrame("FutureCursor", "Cursor in the future.")
    info = decode_labels_frame(frame({"op": 1, "t": "#info"}, {"name": "OutdatedCursor"}))
    assert info == InfoFrame("OutdatedCursor")
    unknown = decode_labels_frame(frame({"op": 1, "t": "#foo"}, {"seq": 9}))
    assert isinstance(unknown, UnknownFrame) and unknown.seq == 9


@pytest.mark.parametrize("curve", [Curve.K256, Curve.P256])
def test_both_key_forms_of_a_labelers_document_give_its_key(curve: Curve) -> None:
    key = Keypair.from_seed(curve, "doc")
    endpoint = "https://labeler.example/"
    for legacy in (True, False):
        doc = document(SRC, endpoint, key, legacy)
        labeler = labeler_from_document(SRC, doc)
        assert labeler.label_key == key.did_key
        assert labeler.endpoint == "https://labeler.example"
    absolute = document(SRC, endpoint, key, False)
    absolute["verificationMethod"][0]["id"] = f"{SRC}#atproto_label"
    assert labeler_from_document(SRC, absolute).label_key == key.did_key
    bare = labeler_from_document(SRC, document(SRC, None, None, False))
    assert (bare.endpoint, bare.label_key) == (None, None)
    with pytest.raises(InvalidDidDocument):
        labeler_from_document("did:plc:cccccccccccccccccccccccc", doc)
