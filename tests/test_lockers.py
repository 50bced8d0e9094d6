"""Parcel lockers: framers, codecs and encoders (device-protocols.md §5) and the compartment state
machine (gateway/processors/lockers.py, decisions.md D5, D10, D13)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from devices import kerong, lock8a, locker_mqtt
from devices.events import (
    CompartmentDoorReported,
    CompartmentOpenDetected,
    CompartmentOpenFailed,
    CompartmentUncommandedOpen,
    DoorFeedback,
    LockerConnection,
    LockerHeartbeat,
    LockStatus,
    ParcelDeposited,
    ParcelPickedUp,
    PersonalHandling,
    Reject,
    RejectReason,
    UnlockAnswered,
    personal_fields,
)
from devices.registry import MODELS
from gateway.log.schema import RecordClass
from gateway.processors.lockers import CommandStatus, LockerBank, LockerConfig

NS = 1_000_000_000
VECTORS = Path(__file__).parent / "vectors"
SERIAL = {"lock8a-rs485": lock8a, "kerong-cu16": kerong}
BASE = {"district": "d1", "street": "s1", "gateway": "gw1", "device": "lockers-a"}


def _cases(model: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((VECTORS / model).glob("*.json"))]


def _good_frames(model: str) -> list[bytes]:
    return [bytes.fromhex(c["payload_hex"]) for c in _cases(model) if "events" in c]


FRAMES = [(m, f) for m in SERIAL for f in _good_frames(m)]
GOOD = {
    "lock8a-rs485": bytes.fromhex("80 01 00 00 00 33 B2"),
    "kerong-cu16": bytes.fromhex("02 00 35 05 00 01 00 03 40"),
}
FRAME_IDS = [f"{m}-{f.hex()}" for m, f in FRAMES]


# --- encoders: the worked examples are data in the vectors ------------------------------------------


@pytest.mark.parametrize("model", [*SERIAL])
def test_encoders_match_the_worked_examples(model):
    """Every vector with a `request` is a worked request frame of §5: our encoder builds it exactly."""
    module = SERIAL[model]
    requests = [c["request"] for c in _cases(model) if "request" in c]
    assert requests
    for r in requests:
        assert getattr(module, r["encode"])(*r["args"]) == bytes.fromhex(r["hex"]), r


def test_encoders_refuse_addresses_out_of_range():
    for bad in ((0, 1), (100, 1), (1, 0)):
        with pytest.raises(ValueError):
            lock8a.encode_unlock(*bad)
    for bad in ((16, 1), (0, 0), (0, 17)):
        with pytest.raises(ValueError):
            kerong.encode_unlock(*bad)


def test_lock8a_polarity_door_opening_reverses_the_feedback():
    frame = bytes.fromhex("80 01 00 00 33 33 81")
    closing = lock8a.decode(frame, received_ns=0)
    opening = lock8a.decode(frame, received_ns=0, feedback=DoorFeedback.DOOR_OPENING)
    assert [e.door_open for e in opening] == [not e.door_open for e in closing]
    assert lock8a.decode(bytes.fromhex("8A 01 03 00 88"), received_ns=0, feedback=DoorFeedback.DOOR_OPENING) == [
        UnlockAnswered(1, 3, False)
    ]


def test_lock8a_reply_length_comes_from_the_frame():
    """One status byte → 8 channels; five → 40: never the board size (§5.1)."""
    for n in (1, 5):
        body = bytes([0x80, 7, *[0xFF] * n, 0x33])
        events = lock8a.decode(body + bytes([lock8a.bcc(body)]), received_ns=0)
        assert [e.lock for e in events] == list(range(1, 8 * n + 1))
        assert all(e.door_open is False and e.item_present is None for e in events)


# --- framers: every good vector three ways (style.md Tests) -----------------------------------------


@pytest.mark.parametrize(("model", "frame"), FRAMES, ids=FRAME_IDS)
def test_framer_whole_frame(model, frame):
    assert SERIAL[model].Framer().feed(frame) == [frame]


@pytest.mark.parametrize(("model", "frame"), FRAMES, ids=FRAME_IDS)
def test_framer_one_byte_at_a_time_nothing_until_the_last(model, frame):
    framer = SERIAL[model].Framer()
    for b in frame[:-1]:
        assert framer.feed(bytes([b])) == []
    assert framer.feed(frame[-1:]) == [frame]


@pytest.mark.parametrize(("model", "frame"), FRAMES, ids=FRAME_IDS)
def test_framer_trailing_bytes_stay_in_the_buffer(model, frame):
    framer = SERIAL[model].Framer()
    assert framer.feed(frame + frame[:3]) == [frame]
    assert framer.feed(frame[3:]) == [frame]


@pytest.mark.parametrize("model", [*SERIAL])
def test_framer_garbage_run_is_one_reject_then_the_frame(model):
    frame = GOOD[model]
    framer = SERIAL[model].Framer()
    noise = bytes([0x55, 0xAA, 0x01, 0x7F, 0x00])
    out = []
    for b in noise + frame:
        out += framer.feed(bytes([b]))
    assert out == [Reject(RejectReason.SYNC, "5 bytes skipped", noise), frame]


@pytest.mark.parametrize(
    ("model", "bad", "reason"),
    [
        ("lock8a-rs485", "8A 02 01 11 99", RejectReason.CHECKSUM),
        ("lock8a-rs485", "8A 02 01", RejectReason.LENGTH),
        ("lock8a-rs485", "80 01 00", RejectReason.LENGTH),
        ("lock8a-rs485", "80 01 00 00 33 33", RejectReason.LENGTH),  # §5.1: the reply cut at its first 33
        ("kerong-cu16", "02 00 35 05 00 01 00 03 41", RejectReason.CHECKSUM),
        ("kerong-cu16", "02 00 35 05", RejectReason.LENGTH),
        ("kerong-cu16", "02 F0 36 03 2B", RejectReason.SYNC),  # undocumented command: not claimed
    ],
)
def test_framer_resyncs_on_the_next_good_frame(model, bad, reason):
    """A corrupted or truncated frame becomes one reject; the good frame after it still decodes."""
    good = GOOD[model]
    bad_bytes = bytes.fromhex(bad)
    out = SERIAL[model].Framer().feed(bad_bytes + good)
    assert out == [Reject(reason, f"{len(bad_bytes)} bytes skipped", bad_bytes), good]
    assert not isinstance(MODELS[model].decode(out[1], received_ns=0), Reject)


def test_lock8a_framer_flush_ends_a_truncated_reply_at_line_silence():
    framer = lock8a.Framer()
    assert framer.feed(bytes.fromhex("80 01 00 00")) == []
    assert framer.flush() == [Reject(RejectReason.LENGTH, "4 bytes skipped", bytes.fromhex("80 01 00 00"))]
    good = bytes.fromhex("80 01 00 00 00 33 B2")
    assert framer.feed(good) == [good]


def test_lock8a_framer_phantom_reply_needs_silence_or_a_known_length():
    """§5.1 has no length field: a truncated reply glued to the next can form a valid longer frame.
    Line silence (flush) or the bus's status-byte count from config rule it out."""
    cut, good = bytes.fromhex("80 01 00"), bytes.fromhex("80 01 00 00 33 33 81")
    assert lock8a.Framer().feed(cut + good) == [cut + good[:-1]]  # feed alone: the phantom (81 left over)
    known = lock8a.Framer(status_bytes=3)
    assert known.feed(cut + good) == [Reject(RejectReason.LENGTH, "3 bytes skipped", cut), good]
    silence = lock8a.Framer()
    assert silence.feed(cut) == [] and silence.flush() == [Reject(RejectReason.LENGTH, "3 bytes skipped", cut)]
    assert silence.feed(good) == [good]


def test_lock8a_framer_with_known_length_rejects_other_lengths():
    framer = lock8a.Framer(status_bytes=3)
    short = bytes.fromhex("80 02 00 33 B1")  # one status byte: not this bus's reply
    assert framer.feed(short + GOOD["lock8a-rs485"]) == [
        Reject(RejectReason.LENGTH, "5 bytes skipped", short),
        GOOD["lock8a-rs485"],
    ]


def test_lock8a_framer_never_splits_at_a_33():
    """§5.1: 33 is a legal status byte and BCC; the reply with status bytes 00 00 33 stays whole."""
    frame = bytes.fromhex("80 01 00 00 33 33 81")
    framer = lock8a.Framer()
    assert [framer.feed(bytes([b])) for b in frame] == [[]] * 6 + [[frame]]


def _lock8a_frame(data) -> bytes:
    if data.draw(st.booleans()):
        body = bytes(
            [0x8A, data.draw(st.integers(1, 99)), data.draw(st.integers(1, 24)), data.draw(st.sampled_from([0, 0x11]))]
        )
    else:
        status = data.draw(st.lists(st.integers(0, 255), min_size=1, max_size=3))
        body = bytes([0x80, data.draw(st.integers(1, 99)), *status, 0x33])
        frame = body + bytes([lock8a.bcc(body)])
        assume(lock8a._query_end(bytearray(frame)) == len(frame))  # §5.1's ambiguity: a whole shorter prefix
        return frame
    return body + bytes([lock8a.bcc(body)])


def _kerong_frame(data) -> bytes:
    body = bytes([0x02, data.draw(st.integers(0, 255)), 0x35, *data.draw(st.binary(min_size=4, max_size=4)), 0x03])
    return body + bytes([kerong.checksum(body)])


@pytest.mark.parametrize("model", [*SERIAL])
@settings(max_examples=300)
@given(data=st.data())
def test_framer_any_chunking_of_good_frames_gives_them_back(model, data):
    make = _lock8a_frame if model == "lock8a-rs485" else _kerong_frame
    frames = [make(data) for _ in range(data.draw(st.integers(1, 5)))]
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    framer = SERIAL[model].Framer()
    out = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += framer.feed(stream[a:b])
    assert out + framer.flush() == frames


@pytest.mark.parametrize("model", [*SERIAL])
@settings(max_examples=300)
@given(chunks=st.lists(st.binary(max_size=64), max_size=8))
def test_framer_random_bytes_never_raise_and_every_byte_is_accounted(model, chunks):
    """Whatever comes in goes out once, in order: in a frame or in a reject's raw bytes."""
    framer = SERIAL[model].Framer()
    out = []
    for chunk in chunks:
        out += framer.feed(chunk)
    out += framer.flush()
    assert b"".join(x if isinstance(x, bytes) else x.raw for x in out) == b"".join(chunks)
    for item in out:
        if isinstance(item, bytes):
            assert isinstance(MODELS[model].decode(item, received_ns=0), (list, Reject))


@settings(max_examples=300)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers(-5, 2**60) | st.text(max_size=12),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "message_id",
                        "timestamp",
                        "event",
                        "data",
                        "compartment_number",
                        "state",
                        "compartments",
                        "door_state",
                        "result",
                        "action",
                        "status",
                        "uptime_seconds",
                        "parcel_id",
                        "pickup_code",
                        "transaction_id",
                    ]
                ),
                children,
                max_size=6,
            )
        ),
        max_leaves=25,
    ),
    event=st.sampled_from([None, *locker_mqtt.EVENTS]),
)
def test_locker_mqtt_never_raises_on_random_json(doc, event):
    if event and isinstance(doc, dict):
        doc = {**doc, "event": event, "message_id": "m", "timestamp": "2026-04-14T19:32:00Z"}
    result = locker_mqtt.decode(json.dumps(doc).encode(), received_ns=0)
    assert isinstance(result, (list, Reject))


# --- privacy marks -----------------------------------------------------------------------------------


def test_parcel_events_mark_their_personal_fields():
    deposit = ParcelDeposited(1, "P1", "482913", "+8613800138000", "Li Wei", "m", 0)
    assert personal_fields(deposit) == {
        "pickup_code": PersonalHandling.DROP,
        "recipient_phone": PersonalHandling.PSEUDONYMISE,
        "recipient_name": PersonalHandling.DROP,
    }
    assert personal_fields(ParcelPickedUp(1, "P1", "482913", "m", 0)) == {"pickup_code": PersonalHandling.DROP}
    assert personal_fields(LockStatus(1, 1, False, None)) == {}


def test_locker_mqtt_reject_never_holds_personal_data_in_clear():
    payload = json.dumps(
        {
            "message_id": "m8",
            "event": "parcel_deposited",
            "timestamp": "2026-04-14T09:15:00Z",
            "data": {"compartment_number": 2, "pickup_code": "771204", "recipient_phone": "+8613911112222"},
        }
    ).encode()
    for data in (payload, payload[:-20]):  # a schema reject, and a truncated (unparseable) copy
        result = locker_mqtt.decode(data, received_ns=0)
        assert isinstance(result, Reject)
        assert b"771204" not in result.raw and b"13911112222" not in result.raw
        assert "771204" not in result.detail


# --- the compartment state machine --------------------------------------------------------------------


def _bank(boards=None, **kw) -> LockerBank:
    cfg = LockerConfig.serial("A", boards or {1: 2}, **kw)
    return LockerBank(cfg, dict(BASE), "lockers-a")


def _pick(drafts, measurement, **fields):
    return [d for d in drafts if d.measurement == measurement and all(d.fields.get(k) == v for k, v in fields.items())]


def _alarms(drafts, alarm):
    return [(d.tags["compartment"], d.fields["is_active"]) for d in drafts if d.tags.get("alarm") == alarm]


def test_deposit_then_pickup_cycle_from_item_sensors():
    bank = _bank()
    first = bank.on_events([LockStatus(1, 1, False, False), LockStatus(1, 2, False, False)], 0)
    assert _pick(first, "locker_occupancy", loaded=0, empty=2)
    assert bank.on_command("open", 1, 1, 10 * NS, "courier-app").accepted
    drafts = bank.on_events([LockStatus(1, 1, True, False)], 11 * NS)
    assert _pick(drafts, "locker_door", is_open=True, is_commanded=True)
    assert _pick(drafts, "locker_command", outcome="confirmed", latency_ms=1000)
    drafts = bank.on_events([LockStatus(1, 1, True, True)], 12 * NS)
    [deposit] = _pick(drafts, "locker_parcel")
    assert deposit.klass is RecordClass.AUDIT and deposit.fields == {"action": "deposit", "source": "item_sensor"}
    assert deposit.tags == {**BASE, "bank": "A", "compartment": "1"}
    assert _pick(drafts, "locker_occupancy", loaded=1, empty=1, doors_open=1)
    bank.on_events([LockStatus(1, 1, False, True)], 15 * NS)
    assert bank.on_command("open", 1, 1, 3600 * NS, "customer-code").accepted
    bank.on_events([LockStatus(1, 1, True, True)], 3601 * NS)
    drafts = bank.on_events([LockStatus(1, 1, True, False)], 3612 * NS)
    [pickup] = _pick(drafts, "locker_parcel")
    assert pickup.fields == {"action": "pickup", "source": "item_sensor", "dwell_s": 3600}
    assert _pick(drafts, "locker_occupancy", loaded=0, empty=2)


def test_board_without_item_sensor_leaves_load_unknown():
    """D10: the 8A/80 board has no item sensor: no deposit or pickup is guessed."""
    bank = _bank()
    bank.on_events([LockStatus(1, 1, False, None), LockStatus(1, 2, False, None)], 0)
    bank.on_command("open", 1, 1, NS, "x")
    drafts = bank.on_events([UnlockAnswered(1, 1, True)], 2 * NS)
    drafts += bank.on_events([LockStatus(1, 1, False, None)], 30 * NS)
    assert not _pick(drafts, "locker_parcel")
    assert bank.occupancy() == {
        "compartments": 2,
        "loaded": 0,
        "empty": 0,
        "unknown": 2,
        "out_of_service": 0,
        "doors_open": 0,
    }


def test_door_left_open_raised_once_and_cleared_on_close():
    bank = _bank(door_open_alarm_s=120)
    bank.on_events([LockStatus(1, 1, False, False)], 0)
    bank.on_command("open", 1, 1, NS, "x")
    bank.on_events([LockStatus(1, 1, True, False)], 2 * NS)
    assert _alarms(bank.tick(121 * NS), "door_left_open") == []
    raised = bank.tick(122 * NS)
    assert _alarms(raised, "door_left_open") == [("1", True)]
    assert raised[0].klass is RecordClass.ALARM and raised[0].mono_ns == 122 * NS
    assert _alarms(bank.tick(500 * NS), "door_left_open") == []
    assert _alarms(bank.on_events([LockStatus(1, 1, True, False)], 600 * NS), "door_left_open") == []
    cleared = bank.on_events([LockStatus(1, 1, False, False)], 602 * NS)
    assert _alarms(cleared, "door_left_open") == [("1", False)]
    assert _pick(cleared, "locker_alarm")[0].fields["duration_s"] == 600
    assert bank.view(1, 1).alarms == ()


def test_forced_open_without_a_command():
    bank = _bank(command_window_s=30)
    bank.on_events([LockStatus(1, 1, False, None), LockStatus(1, 2, False, None)], 0)
    drafts = bank.on_events([LockStatus(1, 2, True, None)], 5 * NS)
    assert _alarms(drafts, "forced_open") == [("2", True)]
    assert _pick(drafts, "locker_door", is_open=True, is_commanded=False)
    assert _alarms(bank.on_events([LockStatus(1, 2, False, None)], 9 * NS), "forced_open") == [("2", False)]
    # a command long before the opening does not cover it
    bank.on_command("open", 1, 1, 10 * NS, "x")
    bank.on_events([UnlockAnswered(1, 1, False)], 11 * NS)  # jammed: the door stayed shut
    drafts = bank.on_events([LockStatus(1, 1, True, None)], 100 * NS)
    assert _alarms(drafts, "forced_open") == [("1", True)]
    assert _alarms(drafts, "lock_jammed") == [("1", False)]
    # one command, one opening: reopening after the latch relocked is forced
    bank.on_events([LockStatus(1, 1, False, None)], 101 * NS)
    bank.on_command("open", 1, 1, 110 * NS, "x")
    assert _alarms(bank.on_events([UnlockAnswered(1, 1, True)], 111 * NS), "forced_open") == []
    bank.on_events([LockStatus(1, 1, False, None)], 115 * NS)
    assert _alarms(bank.on_events([LockStatus(1, 1, True, None)], 120 * NS), "forced_open") == [("1", True)]


def test_first_sight_of_an_open_door_is_not_a_forced_open():
    bank = _bank()
    drafts = bank.on_events([LockStatus(1, 1, True, None)], 0)
    assert not _pick(drafts, "locker_door") and _alarms(drafts, "forced_open") == []


def test_controller_offline_after_n_polls_and_back():
    bank = _bank(offline_after_polls=3)
    bank.on_events([LockStatus(1, 1, False, None)], 0)
    assert not _pick(bank.on_poll_timeout(1, 1 * NS), "locker_controller")
    assert not _pick(bank.on_poll_timeout(1, 2 * NS), "locker_controller")
    [down] = _pick(bank.on_poll_timeout(1, 3 * NS), "locker_controller")
    assert down.klass is RecordClass.ALARM
    assert down.tags == {**BASE, "bank": "A", "board": "1"}
    assert down.fields == {"is_online": False, "missed_polls": 3, "outage_s": 0}
    assert not _pick(bank.on_poll_timeout(1, 4 * NS), "locker_controller")
    assert bank.offline_boards() == [1]
    [up] = _pick(bank.on_events([LockStatus(1, 1, False, None)], 63 * NS), "locker_controller")
    assert up.fields == {"is_online": True, "missed_polls": 0, "outage_s": 60}
    assert bank.on_poll_timeout(9, 70 * NS) == []  # a board not in config


def test_open_unconfirmed_then_resolved_by_the_next_poll():
    bank = _bank(confirm_timeout_s=2)
    bank.on_events([LockStatus(1, 1, False, None), LockStatus(1, 2, False, None)], 0)
    bank.on_command("open", 1, 1, 10 * NS, "api")
    assert not _pick(bank.tick(11 * NS), "locker_command")
    [unconfirmed] = _pick(bank.tick(12 * NS), "locker_command")
    assert unconfirmed.klass is RecordClass.COMMAND
    assert unconfirmed.fields == {"action": "open", "outcome": "unconfirmed", "latency_ms": 2000}
    assert bank.view(1, 1).command == "unconfirmed"
    [late] = _pick(bank.on_events([LockStatus(1, 1, True, None)], 13 * NS), "locker_command")
    assert late.fields["outcome"] == "confirmed" and late.fields["detail"] == "poll, late"
    # the other ending: the next poll shows the door still shut
    bank.on_command("open", 1, 2, 20 * NS, "api")
    bank.tick(23 * NS)
    drafts = bank.on_events([LockStatus(1, 2, False, None)], 24 * NS)
    assert _pick(drafts, "locker_command", outcome="not_opened")
    assert _alarms(drafts, "lock_jammed") == [("2", True)]
    assert bank.view(1, 2).command is None


def test_second_open_refused_while_unconfirmed_unless_forced():
    """D10: a retry cannot open twice by accident; force=true opens and is audited."""
    bank = _bank(confirm_timeout_s=2)
    bank.on_events([LockStatus(1, 1, False, None)], 0)
    assert bank.on_command("open", 1, 1, NS, "api").status is CommandStatus.ACCEPTED
    refused = bank.on_command("open", 1, 1, 2 * NS, "api")
    assert refused.status is CommandStatus.REFUSED_PENDING and not refused.accepted
    bank.tick(5 * NS)
    refused = bank.on_command("open", 1, 1, 6 * NS, "api")
    assert refused.status is CommandStatus.REFUSED_PENDING
    assert _pick(refused.drafts, "locker_command", outcome="refused", detail="refused_pending")
    forced = bank.on_command("open", 1, 1, 7 * NS, "ops-key", force=True)
    assert forced.accepted
    [audit] = _pick(forced.drafts, "locker_audit")
    assert audit.klass is RecordClass.AUDIT
    assert audit.fields == {"action": "force_open", "actor": "ops-key", "detail": "unconfirmed"}
    assert _pick(forced.drafts, "locker_command", outcome="requested", is_forced=True)
    assert bank.on_command("open", 9, 9, 8 * NS, "api").status is CommandStatus.UNKNOWN_COMPARTMENT


def test_out_of_service_is_audited_and_refuses_opens():
    bank = _bank()
    out = bank.on_command("disable", 1, 2, NS, "tech")
    assert _pick(out.drafts, "locker_audit", action="disable", actor="tech")
    assert _pick(out.drafts, "locker_occupancy", out_of_service=1)
    assert bank.on_command("open", 1, 2, 2 * NS, "api").status is CommandStatus.REFUSED_OUT_OF_SERVICE
    assert bank.on_command("enable", 1, 2, 3 * NS, "tech").accepted
    assert bank.on_command("open", 1, 2, 4 * NS, "api").accepted


def _mqtt_bank() -> LockerBank:
    return LockerBank(LockerConfig.mqtt("B", 4), dict(BASE), "lockers-b")


def test_mqtt_bank_parcel_events_write_only_pseudonyms_and_parcel_ids_as_fields():
    bank = _mqtt_bank()
    pseudonym = "0123456789abcdef0123456789abcdef"
    drafts = bank.on_event(ParcelDeposited(2, "SF1", None, pseudonym, None, "m1", 0), NS)
    [deposit] = _pick(drafts, "locker_parcel")
    assert deposit.fields == {"action": "deposit", "source": "bank", "parcel_id": "SF1", "recipient_ref": pseudonym}
    assert "parcel_id" not in deposit.tags
    assert deposit.identity == "locker|lockers-b|m1|0"
    # clear text that slipped past the privacy step is never written
    drafts = bank.on_event(ParcelDeposited(3, "SF2", "482913", "+8613800138000", "Li Wei", "m2", 0), 2 * NS)
    [deposit] = _pick(drafts, "locker_parcel")
    assert "recipient_ref" not in deposit.fields
    assert not any("482913" in str(v) or "138001" in str(v) for d in drafts for v in d.fields.values())
    [pickup] = _pick(bank.on_event(ParcelPickedUp(2, "SF1", None, "m3", 0), 62 * NS), "locker_parcel")
    assert pickup.fields == {"action": "pickup", "source": "bank", "parcel_id": "SF1", "dwell_s": 61}
    assert bank.occupancy()["loaded"] == 1


def test_mqtt_bank_door_events_duplicates_and_last_will():
    bank = _mqtt_bank()
    bank.on_events([CompartmentDoorReported(n, False, "snap1", 0) for n in range(1, 5)], 0)
    drafts = bank.on_event(CompartmentUncommandedOpen(1, None, "e1", 0), NS)
    assert _alarms(drafts, "forced_open") == [("1", True)]
    assert bank.on_event(CompartmentUncommandedOpen(1, None, "e1", 0), 2 * NS) == []  # same message_id
    assert _alarms(bank.on_event(CompartmentDoorReported(1, False, "e2", 0), 3 * NS), "forced_open") == [("1", False)]
    # a bank-fired opening (courier at the keypad) is commanded
    drafts = bank.on_event(CompartmentOpenDetected(2, "t", "opened", 400, "e3", 0), 4 * NS)
    assert _pick(drafts, "locker_door", is_commanded=True) and _alarms(drafts, "forced_open") == []
    bank.on_command("open", 0, 3, 5 * NS, "api", transaction_id="txn-9")
    drafts = bank.on_event(CompartmentOpenFailed(3, "txn-9", "door_jammed", "DOOR_JAMMED", "e4", 0), 6 * NS)
    assert _pick(drafts, "locker_command", outcome="failed", transaction_id="txn-9")
    assert _alarms(drafts, "lock_jammed") == [("3", True)]
    [down] = _pick(bank.on_event(LockerConnection(False, "mqtt_last_will", "w1", 0), 7 * NS), "locker_controller")
    assert down.fields["is_online"] is False
    [up] = _pick(bank.on_event(LockerHeartbeat(5, "h1", 0), 17 * NS), "locker_controller")
    assert up.fields == {"is_online": True, "missed_polls": 0, "outage_s": 10}


def test_record_classes_and_disjoint_tag_and_field_names():
    bank = _bank(door_open_alarm_s=5, confirm_timeout_s=1, offline_after_polls=1)
    drafts = bank.on_events([LockStatus(1, 1, False, False), LockStatus(1, 2, False, False)], 0)
    drafts += bank.on_command("open", 1, 1, NS, "a").drafts
    drafts += bank.on_events([LockStatus(1, 1, True, True), LockStatus(1, 2, True, False)], 2 * NS)
    drafts += bank.tick(10 * NS) + bank.on_poll_timeout(1, 11 * NS)
    drafts += bank.on_command("open", 1, 2, 12 * NS, "a").drafts + bank.tick(20 * NS)
    drafts += bank.on_command("open", 1, 2, 21 * NS, "a", force=True).drafts
    expected = {
        "locker_door": RecordClass.TELEMETRY,
        "locker_occupancy": RecordClass.TELEMETRY,
        "locker_parcel": RecordClass.AUDIT,
        "locker_alarm": RecordClass.ALARM,
        "locker_controller": RecordClass.ALARM,
        "locker_command": RecordClass.COMMAND,
        "locker_audit": RecordClass.AUDIT,
    }
    assert {d.measurement for d in drafts} == set(expected)
    tag_names = {t for d in drafts for t in d.tags}
    field_names = {f for d in drafts for f in d.fields}
    assert not tag_names & field_names
    assert tag_names <= {*BASE, "bank", "compartment", "board", "alarm"}
    for d in drafts:
        assert d.klass is expected[d.measurement], d


def test_state_round_trip_and_reboot():
    bank = _bank(confirm_timeout_s=2)
    bank.on_events([LockStatus(1, 1, False, True), LockStatus(1, 2, True, False)], 0)
    bank.on_command("open", 1, 1, NS, "api")
    bank.on_poll_timeout(1, 2 * NS)
    saved = bank.to_bytes("boot-1")
    same = LockerBank.from_bytes(bank.config, dict(BASE), "lockers-a", saved, boot_id="boot-1")
    assert same.to_bytes("boot-1") == saved
    assert same.tick(3 * NS) == bank.tick(3 * NS)
    rebooted = LockerBank.from_bytes(bank.config, dict(BASE), "lockers-a", saved, boot_id="boot-2", now_ns=50 * NS)
    assert rebooted.view(1, 1).command == "unconfirmed"  # outcome unknown across the restart: still refused
    assert rebooted.on_command("open", 1, 1, 51 * NS, "api").status is CommandStatus.REFUSED_PENDING
    assert rebooted.occupancy() == bank.occupancy()


# --- the state machine under any sequence --------------------------------------------------------------

BOARDS = {1: 2, 2: 2}
WINDOW_S = 30
OPS = st.one_of(
    st.tuples(
        st.just("status"),
        st.sampled_from([1, 2]),
        st.integers(1, 2),
        st.booleans(),
        st.sampled_from([None, False, True]),
    ),
    st.tuples(st.just("unlock_reply"), st.sampled_from([1, 2]), st.integers(1, 2), st.booleans()),
    st.tuples(
        st.just("command"),
        st.sampled_from(["open", "open", "disable", "enable"]),
        st.sampled_from([1, 2]),
        st.integers(1, 2),
        st.booleans(),
    ),
    st.tuples(st.just("timeout"), st.sampled_from([1, 2, 3])),
    st.tuples(st.just("tick")),
    st.tuples(st.just("restore")),
)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(OPS, st.integers(0, 40)), max_size=60))
def test_state_machine_any_sequence(steps):
    """Occupancy stays within 0…compartments; a forced-open alarm is raised exactly for an opening
    with no open command behind it (none pending, none unused within the window)."""
    bank = _bank(BOARDS, command_window_s=WINDOW_S, door_open_alarm_s=60, confirm_timeout_s=2)
    number = {bl: n for bl, n in bank.config.compartments.items()}
    cmd_at: dict[str, int] = {}  # compartment → time of the last open command not used by an opening
    pending: set[str] = set()
    now = 0
    for op, dt in steps:
        now += dt * NS
        kind = op[0]
        if kind == "status":
            drafts = bank.on_events([LockStatus(op[1], op[2], op[3], op[4])], now)
        elif kind == "unlock_reply":
            drafts = bank.on_events([UnlockAnswered(op[1], op[2], op[3])], now)
        elif kind == "command":
            outcome = bank.on_command(op[1], op[2], op[3], now, "h", force=op[4])
            drafts = outcome.drafts
            if outcome.accepted and op[1] == "open":
                cmd_at[str(number[(op[2], op[3])])] = now
        elif kind == "timeout":
            drafts = bank.on_poll_timeout(op[1], now)
        elif kind == "tick":
            drafts = bank.tick(now)
        else:
            bank = LockerBank.from_bytes(bank.config, dict(BASE), "lockers-a", bank.to_bytes("b"), boot_id="b")
            continue
        forced_raised = [
            d.tags["compartment"] for d in drafts if d.tags.get("alarm") == "forced_open" and d.fields["is_active"]
        ]
        openings = []
        for d in drafts:
            c = d.tags.get("compartment")
            if d.measurement == "locker_command":
                outcome_name = d.fields["outcome"]
                if outcome_name == "requested":
                    pending.add(c)
                elif outcome_name in ("confirmed", "failed", "not_opened"):
                    pending.discard(c)
            elif d.measurement == "locker_door" and d.fields["is_open"]:
                expected = c in pending or (c in cmd_at and now - cmd_at[c] <= WINDOW_S * NS)
                assert d.fields["is_commanded"] == expected, (c, d)
                if expected:
                    cmd_at.pop(c, None)
                else:
                    openings.append(c)
            elif d.measurement == "locker_occupancy":
                f = d.fields
                assert 0 <= f["loaded"] <= f["compartments"] == 4
                assert f["loaded"] + f["empty"] + f["unknown"] == 4
                assert 0 <= f["doors_open"] <= 4 and 0 <= f["out_of_service"] <= 4
        assert sorted(forced_raised) == sorted(openings)
        occ = bank.occupancy()
        assert 0 <= occ["loaded"] <= occ["compartments"] == 4
