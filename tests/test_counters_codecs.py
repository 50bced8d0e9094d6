"""Counter codecs beyond the vectors: the Modbus RTU framer (whole, byte by byte, with extra bytes,
after garbage), CRC and register maps, the Milesight LNS envelopes, and random input for every codec."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import axis, milesight, milesight_json, modbus_counter
from devices.events import Reject, RejectReason
from devices.modbus_counter import (
    DEFAULT_MAP,
    LineRegisters,
    ModbusRtuFramer,
    RegisterMap,
    WordOrder,
    crc16,
    read_request,
    response,
    with_crc,
)

FRAMES = {
    "two-registers": bytes.fromhex("01 03 04 00 48 00 C8 7B B3"),
    "exception": bytes.fromhex("01 83 02 C0 F1"),
    "eight-registers-slave-9": response(9, 3, [1, 2, 3, 4, 65535, 0, 7, 8]),
    "input-registers": response(1, 4, [5, 6]),
}


def test_crc_check_value_and_worked_example():
    """§4.7: check value of "123456789" is 0x4B37; the textbook request ends C4 0B."""
    assert crc16(b"123456789") == 0x4B37
    assert read_request() == bytes.fromhex("01 03 00 00 00 02 C4 0B")
    assert read_request(DEFAULT_MAP) == with_crc(bytes.fromhex("01 03 00 00 00 02"))


def test_crc_matches_pymodbus():
    """Our CRC agrees with the field's library (pymodbus gives it high byte first)."""
    rtu = pytest.importorskip("pymodbus.framer.rtu")

    @given(st.binary(max_size=64))
    def check(data):
        assert rtu.FramerRTU.compute_CRC(data) == int.from_bytes(crc16(data).to_bytes(2, "little"), "big")

    check()


@pytest.mark.parametrize("name", FRAMES)
def test_framer_whole(name):
    assert ModbusRtuFramer().feed(FRAMES[name]) == [FRAMES[name]]


@pytest.mark.parametrize("name", FRAMES)
def test_framer_byte_by_byte_nothing_until_last(name):
    frame, f = FRAMES[name], ModbusRtuFramer()
    for b in frame[:-1]:
        assert f.feed(bytes([b])) == []
    assert f.feed(frame[-1:]) == [frame]


@pytest.mark.parametrize("name", FRAMES)
def test_framer_extra_bytes_stay_in_buffer(name):
    """A frame followed by the start of the next: the frame now, the rest when it completes."""
    frame, nxt, f = FRAMES[name], FRAMES["two-registers"], ModbusRtuFramer()
    assert f.feed(frame + nxt[:4]) == [frame]
    assert f.feed(nxt[4:]) == [nxt]


def test_framer_garbage_is_one_sync_reject_then_the_frame():
    f = ModbusRtuFramer()
    out = f.feed(b"\x00\xff\x01\x03\x99" + FRAMES["two-registers"])
    assert len(out) == 2 and out[1] == FRAMES["two-registers"]
    assert isinstance(out[0], Reject) and out[0].reason is RejectReason.SYNC and out[0].raw == b"\x00\xff\x01\x03\x99"


def test_framer_bad_crc_frame_resyncs_on_the_next():
    bad = bytearray(FRAMES["two-registers"])
    bad[4] ^= 0x01
    out = ModbusRtuFramer().feed(bytes(bad) + FRAMES["two-registers"])
    assert out[-1] == FRAMES["two-registers"] and isinstance(out[0], Reject)


def test_framer_consumes_an_echoed_request_silently():
    """Adapters that echo our poll: the request is not a frame and not garbage."""
    assert ModbusRtuFramer().feed(read_request() + FRAMES["two-registers"]) == [FRAMES["two-registers"]]


def test_framer_garbage_header_claiming_a_long_frame_does_not_hide_the_real_one():
    """`01 03 FA` promises 255 bytes; the good frame behind it still comes out at once."""
    out = ModbusRtuFramer().feed(b"\x01\x03\xfa" + FRAMES["two-registers"])
    assert out[-1] == FRAMES["two-registers"]


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_framer_never_raises_and_stays_bounded(chunks):
    f = ModbusRtuFramer()
    for c in chunks:
        for item in f.feed(c):
            assert isinstance(item, (bytes, Reject))
        assert len(f._buf) <= ModbusRtuFramer.MAX_BUFFER


@settings(max_examples=300)
@given(garbage=st.binary(max_size=40), name=st.sampled_from(sorted(FRAMES)), split=st.integers(1, 8))
def test_framer_finds_a_frame_after_any_garbage(garbage, name, split):
    f = ModbusRtuFramer()
    stream = garbage + FRAMES[name] + FRAMES["two-registers"]
    out = []
    for i in range(0, len(stream), split):
        out += f.feed(stream[i : i + split])
    frames = [x for x in out if isinstance(x, bytes)]
    assert frames[-1] == FRAMES["two-registers"]


@given(
    totals=st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=4),
    order=st.sampled_from(list(WordOrder)),
    gap=st.integers(0, 3),
)
def test_register_map_32_bit_round_trip(totals, order, gap):
    """What the emulator serves under a map, the codec reads back under that map."""
    lines = tuple(LineRegisters(f"l{k}", 100 + k * (4 + gap), 102 + k * (4 + gap)) for k in range(len(totals)))
    m = RegisterMap(lines, slave=7, width_bits=32, word_order=order)
    regs = m.registers_for({f"l{k}": t for k, t in enumerate(totals)})
    events = modbus_counter.decode(response(7, 3, regs), received_ns=0, register_map=m)
    assert [(e.total_in, e.total_out, e.width_bits) for e in events] == [(i, o, 32) for i, o in totals]


def test_register_map_word_order_is_the_map_s():
    m_hi = RegisterMap((LineRegisters("a", 0, 2),), width_bits=32)
    m_lo = RegisterMap((LineRegisters("a", 0, 2),), width_bits=32, word_order=WordOrder.LOW_FIRST)
    frame = response(1, 3, [0x0001, 0x0002, 0, 0])
    assert modbus_counter.decode(frame, received_ns=0, register_map=m_hi)[0].total_in == 0x0001_0002
    assert modbus_counter.decode(frame, received_ns=0, register_map=m_lo)[0].total_in == 0x0002_0001


def test_register_map_from_config_mapping():
    m = RegisterMap.from_mapping(
        {
            "slave": 3,
            "table": "input",
            "width_bits": 32,
            "word_order": "low_first",
            "lines": [{"line": "door", "in": 10, "out": 12}],
        }
    )
    assert (m.slave, m.function, m.first, m.count) == (3, 4, 10, 4)
    assert read_request(m) == with_crc(bytes.fromhex("03 04 00 0A 00 04"))


@pytest.mark.parametrize(
    "doc",
    [
        {"lines": []},
        {"lines": [{"line": "a", "in": 0, "out": 0}]},  # overlap
        {"lines": [{"line": "a", "in": 0, "out": 200}]},  # more than one read
        {"slave": 0, "lines": [{"line": "a", "in": 0, "out": 1}]},
        {"width_bits": 24, "lines": [{"line": "a", "in": 0, "out": 1}]},
        {"table": "coils", "lines": [{"line": "a", "in": 0, "out": 1}]},
        {"lines": [{"line": "a", "in": 0}]},
        {},
    ],
)
def test_register_map_rejects_bad_config(doc):
    with pytest.raises(ValueError):
        RegisterMap.from_mapping(doc)


def test_modbus_decode_other_slave_is_unsupported():
    result = modbus_counter.decode(response(2, 3, [1, 2]), received_ns=0)
    assert isinstance(result, Reject) and result.reason is RejectReason.UNSUPPORTED


# --- Milesight envelopes ---------------------------------------------------------------------------

P3 = bytes.fromhex("0175500367F6FF04CC2C01F401")


def _no_time(events):
    return [type(e)(**{**{f: getattr(e, f) for f in e.__dataclass_fields__}, "device_ts_ns": None}) for e in events]


@pytest.mark.parametrize(
    "envelope",
    [
        {"time": "2024-03-09T16:00:00Z", "data": base64.b64encode(P3).decode()},  # ChirpStack v4
        {"rxInfo": [], "fPort": 85, "data": base64.b64encode(P3).decode()},  # ChirpStack v3: no time
        {"received_at": "2024-03-09T16:00:00+08:00", "uplink_message": {"frm_payload": base64.b64encode(P3).decode()}},
    ],
)
def test_milesight_envelope_gives_the_raw_events(envelope):
    raw = milesight.decode_vs350(P3, received_ns=0)
    wrapped = milesight.decode_vs350(json.dumps(envelope).encode(), received_ns=0)
    assert _no_time(wrapped) == raw


def test_milesight_envelope_time_with_offset_is_utc():
    env = {"received_at": "2024-03-10T00:00:00+08:00", "uplink_message": {"frm_payload": "BMwsAfQB"}}
    [ev] = milesight.decode_vs350(json.dumps(env).encode(), received_ns=0)
    assert ev.device_ts_ns == 1_710_000_000 * 1_000_000_000


def test_milesight_envelope_without_payload_is_no_events():
    assert milesight.decode_vs133(b'{"time": "2024-03-09T16:00:00Z", "fPort": 0}', received_ns=0) == []


@pytest.mark.parametrize("decode", [milesight.decode_vs133, milesight.decode_vs350, milesight.decode_vs121])
@given(data=st.binary(max_size=300))
def test_milesight_random_items_never_raise_inside_an_envelope(decode, data):
    env = json.dumps({"time": "2024-03-09T16:00:00Z", "data": base64.b64encode(data).decode()}).encode()
    assert isinstance(decode(env, received_ns=0), (list, Reject))


JSON_KEYS = [
    "event", "time_info", "timezone", "dst_status", "start_time", "end_time", "current_total", "max_counted",
    "Max_counted", "total_mapped_regions", "numbering_regions", "current_counted", "occupancy", "snapshot",
    "in", "out", "name", "timestamp", "serial", "x",
]  # fmt: skip
JSON_DOCS = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70_000)
    | st.sampled_from(["Region People Counting", "UTC+8:00", "2022/12/20 19:15:52", "20170503112756"])
    | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(JSON_KEYS), children, max_size=8),
    max_leaves=30,
)


@pytest.mark.parametrize("decode", [milesight_json.decode, axis.decode])
@given(doc=JSON_DOCS)
def test_json_counter_codecs_never_raise_on_random_json(decode, doc):
    assert isinstance(decode(json.dumps(doc).encode(), received_ns=0), (list, Reject))
