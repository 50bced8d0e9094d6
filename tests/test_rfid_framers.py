"""RFID serial framers (devices/rdm6300.py, m100.py, chafon.py): every vector three ways, resync after
garbage, truncation and bad checksums with counted rejects, and hypothesis properties.

Vectors of tests/vectors/<model>/ are reused: those with `events`, or with `"framed": true` (the
framer passes them whole; the codec rejects them), are frames; the other rejects are damaged frames
that the framer alone must turn into exactly one reject of the vector's reason."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import chafon, m100, rdm6300
from devices.events import Reject, RejectReason
from devices.registry import MODELS

VECTORS = Path(__file__).parent / "vectors"
FRAMERS = {"rdm6300": rdm6300.Framer, "m100": m100.Framer, "chafon-uhfreader18": chafon.Framer}
FRAMERS["chafon-uhfreader288"] = chafon.Framer

R1 = bytes.fromhex("02 30 31 30 30 30 37 33 34 45 30 44 32 03")
R2 = bytes.fromhex("02 36 37 30 30 33 42 35 31 43 36 43 42 03")
R4 = bytes.fromhex("02 30 32 30 30 34 44 42 30 30 35 46 43 03")  # bad checksum
U1 = bytes.fromhex("BB 02 22 00 11 C9 34 00 30 75 1F EB 70 5C 59 04 E3 D5 0D 70 3A 76 EF 7E")
U2 = bytes.fromhex("BB 01 FF 00 01 15 16 7E")
C1 = bytes.fromhex("13 00 01 03 01 0C 49 44 00 00 00 00 00 00 0A 00 03 34 A5 FB")
C2 = bytes.fromhex("0D 00 01 03 01 01 04 00 32 30 38 6D A3 D2")
C3 = bytes.fromhex("07 00 01 01 01 00 1E 4B")
JUNK = b"\xff\x00junk\x7f\x80\x10"  # no 0x02, no 0xBB, every byte below 5 or not: mixed
NEXT = {"rdm6300": R2, "m100": U2, "chafon-uhfreader18": C3, "chafon-uhfreader288": C3}


def _vectors(framed: bool) -> list:
    out = []
    for model in FRAMERS:
        for path in sorted((VECTORS / model).glob("*.json")):
            case = json.loads(path.read_text())
            if ("events" in case or case.get("framed", False)) == framed:
                out.append(pytest.param(model, bytes.fromhex(case["payload_hex"]), case, id=f"{model}/{path.stem}"))
    return out


def _run(model: str, *chunks: bytes) -> list[bytes | Reject]:
    framer = FRAMERS[model]()
    out: list[bytes | Reject] = []
    for chunk in chunks:
        out += framer.feed(chunk)
    return out + framer.flush()


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    bounds = sorted({0, len(stream), *(c for c in cuts if 0 < c < len(stream))})
    return [stream[a:b] for a, b in pairwise(bounds)]


def _shape(items: list[bytes | Reject]) -> list:
    """Frames as bytes, rejects as their reason: what must not depend on how bytes were chunked."""
    return [i.reason if isinstance(i, Reject) else i for i in items]


# --- every vector three ways ---------------------------------------------------------------------


@pytest.mark.parametrize(("model", "payload", "case"), _vectors(framed=True))
def test_framer_vector_whole_is_one_frame(model, payload, case):
    framer = FRAMERS[model]()
    assert framer.feed(payload) == [payload]
    assert framer.flush() == []


@pytest.mark.parametrize(("model", "payload", "case"), _vectors(framed=True))
def test_framer_vector_byte_at_a_time_nothing_until_the_last_byte(model, payload, case):
    framer = FRAMERS[model]()
    for i in range(len(payload) - 1):
        assert framer.feed(payload[i : i + 1]) == [], f"output after byte {i}"
    assert framer.feed(payload[-1:]) == [payload]


@pytest.mark.parametrize(("model", "payload", "case"), _vectors(framed=True))
def test_framer_vector_followed_by_extra_bytes_keeps_them(model, payload, case):
    """The start of the next frame stays in the buffer and completes with the rest of it."""
    framer, nxt = FRAMERS[model](), NEXT[model]
    assert framer.feed(payload + nxt[:3]) == [payload]
    assert framer.feed(nxt[3:]) == [nxt]


@pytest.mark.parametrize(("model", "payload", "case"), _vectors(framed=False))
def test_framer_damaged_vector_is_one_reject_of_its_reason(model, payload, case):
    whole = _run(model, payload)
    assert _shape(whole) == [RejectReason(case["reject"])]
    assert _shape(_run(model, *(payload[i : i + 1] for i in range(len(payload))))) == _shape(whole)


@pytest.mark.parametrize(("model", "payload", "case"), _vectors(framed=False))
def test_framer_damaged_vector_then_good_frame_resyncs(model, payload, case):
    got = _run(model, payload, NEXT[model])
    assert _shape(got) == [RejectReason(case["reject"]), NEXT[model]]


# --- RDM6300 (§1.1) ------------------------------------------------------------------------------

S, L, C = RejectReason.SYNC, RejectReason.LENGTH, RejectReason.CHECKSUM


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([JUNK + R1], [S, R1], id="garbage-before-stx"),
        pytest.param([R1 + JUNK + R2], [R1, S, R2], id="garbage-between"),
        pytest.param([R1[7:] + R1 + R1], [S, R1, R1], id="start-mid-frame"),
        pytest.param([R1[:4] + R1], [L, R1], id="new-stx-before-etx"),
        pytest.param([R4 + JUNK + R1], [C, R1], id="bytes-after-a-failure-belong-to-it"),
        pytest.param([JUNK * 100], [S], id="long-run-one-reject"),
        pytest.param([JUNK[i : i + 1] for i in range(len(JUNK))] + [R1], [S, R1], id="run-split-one-reject"),
        pytest.param([R1[:13] + b"4" + R1], [L, R1], id="no-etx-after-12"),
        pytest.param([R1, R1[:9]], [R1, L], id="cut-short-at-silence"),
    ],
)
def test_rdm6300_framer_resync(chunks, expected):
    assert _shape(_run("rdm6300", *chunks)) == expected


def test_rdm6300_rejects_mask_card_digits():
    """A damaged frame still carries most of a card ID: its raw bytes are masked (D13)."""
    (reject,) = _run("rdm6300", R4)
    assert reject.raw == b"\x02" + b"x" * 12 + b"\x03"


# --- M100 (§2.1) ---------------------------------------------------------------------------------


def _notice_with(epc: bytes) -> bytes:
    pc_epc = bytes(((len(epc) // 2) << 3, 0)) + epc
    return m100.frame(m100.TYPE_NOTICE, 0x22, b"\xc9" + pc_epc + m100.gen2_crc(pc_epc).to_bytes(2, "big"))


NESTED = _notice_with(U2 + bytes.fromhex("BB 7E BB 02 22 00 11 7E"))  # a whole U2 frame inside the EPC


def test_m100_epc_holding_a_whole_frame_and_7e_is_one_frame():
    """No stuffing: frames are cut by PL, never at a 0x7E, and a frame inside an EPC stays inside."""
    assert _run("m100", NESTED) == [NESTED]
    assert _run("m100", *(NESTED[i : i + 1] for i in range(len(NESTED)))) == [NESTED]
    assert m100.decode(NESTED, received_ns=0)[0].tag_hex.startswith("BB01FF0001151")


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([JUNK + U1], [S, U1], id="garbage-before-header"),
        pytest.param([bytes.fromhex("BB 02 22 FF FF") + U1], [S, U1], id="false-header-pl-over-128-no-wait"),
        pytest.param([bytes.fromhex("BB 07") + U1], [S, U1], id="bb-with-bad-type"),
        pytest.param([U1[:8] + U1], [L, U1], id="truncated-then-good"),
        pytest.param([U1[:-2] + b"\x00\x7e" + U1], [C, U1], id="bad-checksum-then-good"),
        pytest.param([U1[:-2] + b"\x00\x7e", U1[:-2] + b"\x00\x7e", U1], [C, C, U1], id="each-bad-frame-counted"),
        pytest.param([U1[:10]], [L], id="cut-short-at-silence"),
        pytest.param([U1 + JUNK + U2], [U1, S, U2], id="garbage-between"),
    ],
)
def test_m100_framer_resync(chunks, expected):
    assert _shape(_run("m100", *chunks)) == expected


def test_m100_pending_candidate_waits_until_flush():
    framer = m100.Framer()
    assert framer.feed(U1[:10]) == []
    assert _shape(framer.flush()) == [L]
    assert framer.feed(U1) == [U1]


# --- Chafon (§2.2) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        pytest.param([b"\x00\x01\x04\x03" + C2], [S, C2], id="bytes-below-5-are-garbage"),
        pytest.param([C1[:-1] + b"\x00" + C2], [C, C2], id="bad-crc-then-good"),
        pytest.param([C1[:-1] + b"\x00" + C1[:-1] + b"\x00" + C3], [C, C3], id="damaged-stretch-one-reject"),
        pytest.param([C2 + b"\x01\x02" + C3], [C2, S, C3], id="garbage-between"),
        pytest.param([C3[:5]], [L], id="cut-short-at-silence"),
    ],
)
def test_chafon_framer_resync(chunks, expected):
    assert _shape(_run("chafon-uhfreader288", *chunks)) == expected


def test_chafon_truncated_frame_drops_one_byte_not_len_plus_one():
    """§2.2: the Len of a truncated frame reaches into the good frame after it; dropping Len + 1
    bytes would lose it. False lengths inside the damage hold the framer until more bytes or
    silence come."""
    framer = chafon.Framer()
    assert _shape(framer.feed(C1[:10] + C2 + C3)) == [C]
    assert framer.flush() == [C2, C3]
    framer = chafon.Framer()
    got = framer.feed(C1[:10] + C2 + C3 * 12)
    assert _shape(got) == [C, C2, *[C3] * 12]


# --- properties ----------------------------------------------------------------------------------

C4 = bytes.fromhex("11 00 21 00 00 16 0C 03 4E 00 1E 0A 01 00 00 00 E6 51")
NO_TAG_18 = bytes.fromhex("05 00 01 FB") + chafon.crc16(bytes.fromhex("05 00 01 FB")).to_bytes(2, "little")
VALID = {
    "rdm6300": [R1, R2, bytes.fromhex("02 31 30 30 30 38 36 46 34 34 34 32 36 03")],
    "m100": [U1, U2, NESTED, m100.frame(1, 0x28, b"\x00")],
    "chafon-uhfreader18": [C1, C3, C4, NO_TAG_18],
    "chafon-uhfreader288": [C2, C3, C4],
}


@settings(max_examples=150, deadline=None)
@given(model=st.sampled_from(sorted(FRAMERS)), data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600)))
def test_framer_random_bytes_never_raise(model, data, cuts):
    for item in _run(model, *_split(data, cuts)):
        assert isinstance(item, bytes | Reject)
        if isinstance(item, bytes):
            assert isinstance(MODELS[model].decode(item, received_ns=0), list | Reject)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), model=st.sampled_from(sorted(FRAMERS)))
def test_framer_valid_stream_split_anywhere_gives_the_same_events(data, model):
    frames = data.draw(st.lists(st.sampled_from(VALID[model]), min_size=1, max_size=8))
    stream = b"".join(frames)
    got = _run(model, *_split(stream, data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))))
    assert got == frames
    decode = MODELS[model].decode
    assert [decode(f, received_ns=0) for f in got] == [decode(f, received_ns=0) for f in _run(model, stream)]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), model=st.sampled_from(sorted(FRAMERS)))
def test_framer_damaged_stream_counts_do_not_depend_on_chunking(data, model):
    """Frames, garbage and cut frames in any order: the same frames and the same reject reasons
    come out whether the stream arrives whole or in pieces."""
    piece = st.one_of(
        st.sampled_from(VALID[model]),
        st.binary(min_size=1, max_size=20),
        st.sampled_from(VALID[model]).flatmap(lambda f: st.integers(1, len(f) - 1).map(lambda n: f[:n])),
    )
    stream = b"".join(data.draw(st.lists(piece, min_size=1, max_size=8)))
    cuts = data.draw(st.lists(st.integers(1, max(1, len(stream) - 1)), max_size=12))
    assert _shape(_run(model, *_split(stream, cuts))) == _shape(_run(model, stream))
