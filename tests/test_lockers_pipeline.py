"""Lockers through the pipeline: the privacy step right after the codec (D13), banks per device with
their state in the batch (D1), poll timeouts, ticks, and the compartment state records."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import orjson
import pytest

from devices import lock8a
from gateway.config import ConfigError, parse_config
from gateway.pipeline import Arrival, Pipeline
from gateway.privacy import make_key_file, pseudonym
from gateway.processors.locker_stage import STATE_KEY

NS = 1_000_000_000
WALL = 1_790_000_000 * NS
SECRET = b"district-secret-for-tests"
TOPIC = "locker/bank-b/event"

CONFIG = """
[gateway]
district = "d"
street = "s"
id = "g"
[mqtt]
[privacy]
key_file = "{keys}"
[lockers]
door_left_open_s = 30
offline_after_polls = 2
[[devices]]
id = "bank-b"
model = "open-locker-mqtt"
topic = "locker/bank-b/#"
locker = {{ compartments = 4, bank = "B" }}
[[devices]]
id = "bus-1"
model = "lock8a-rs485"
transport = "serial"
port = "/dev/null"
locker = {{ bank = "A", boards = [1, 2], locks_per_board = 2, door_feedback = "{feedback}" }}
[[devices]]
id = "cam"
model = "vivotek-sc8131"
topic = "cam/report"
"""


@pytest.fixture
def keys(tmp_path):
    path = tmp_path / "keys.json"
    path.write_bytes(make_key_file(SECRET, datetime(2026, 1, 1, tzinfo=UTC), 3, period_s=365 * 86400))
    return path


def _pipeline(keys, feedback: str = "door_closing") -> Pipeline:
    return Pipeline(parse_config(CONFIG.format(keys=keys, feedback=feedback)))


def _arrival(s: float, *, trusted: bool = True) -> Arrival:
    return Arrival(WALL + int(s * NS), int(s * NS) + 10 * NS, "boot-1", trusted)


def _msg(doc: dict, topic: str = TOPIC) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, payload=orjson.dumps(doc))


def _event(mid: str, name: str, **data) -> SimpleNamespace:
    return _msg({"message_id": mid, "timestamp": "2026-11-25T08:00:00Z", "event": name, "data": data})


def _lines(batch) -> list[bytes]:
    return [r.head for r in batch.records]


def _of(batch, measurement: str) -> list[bytes]:
    return [r.head for r in batch.records if r.measurement == measurement]


DEPOSIT = {
    "compartment_number": 2,
    "parcel_id": "SF1234567890CN",
    "pickup_code": "482913",
    "recipient_phone": "+86 13800138000",
    "recipient_name": "Li Wei",
}


def test_privacy_step_drops_codes_and_names_and_pseudonymises_phones(keys):
    p = _pipeline(keys)
    batch = p.mqtt_batch([_event("m1", "parcel_deposited", **DEPOSIT)], _arrival(1))
    blob = b"\n".join(_lines(batch)) + batch.state[STATE_KEY]
    for secret in (b"482913", b"13800138000", b"Li Wei", b"Li\\ Wei"):
        assert secret not in blob
    [parcel] = _of(batch, "locker_parcel")
    key = p.pseudonymiser.current(WALL + NS)
    assert key.period == "2026-01-01"
    expected = pseudonym(key.key, "+86 13800138000")
    assert f'recipient_ref="{expected}"'.encode() in parcel
    assert b'pseudonym_period="2026-01-01"' in parcel
    tags = parcel.split(b" ", 1)[0]
    assert b"SF1234567890CN" not in tags and b'parcel_id="SF1234567890CN"' in parcel  # a field, never a tag
    assert b"bank=B" in tags and b"compartment=2" in tags


def test_pickup_code_of_a_pickup_is_dropped_too(keys):
    p = _pipeline(keys)
    p.mqtt_batch([_event("m1", "parcel_deposited", **DEPOSIT)], _arrival(1))
    data = {"compartment_number": 2, "parcel_id": "SF1234567890CN", "pickup_code": "482913"}
    batch = p.mqtt_batch([_event("m2", "parcel_picked_up", **data)], _arrival(61))
    assert not any(b"482913" in line for line in _lines(batch))
    [parcel] = _of(batch, "locker_parcel")
    assert b'action="pickup"' in parcel and b"dwell_s=60i" in parcel


def test_dead_letters_of_a_bank_never_hold_personal_values(keys):
    p = _pipeline(keys)
    good = orjson.dumps({"message_id": "m1", "timestamp": "2026-11-25T08:00:00Z", "event": "parcel_deposited"})
    broken = orjson.dumps(
        {"message_id": "m2", "timestamp": "x", "event": "parcel_deposited", "data": DEPOSIT}
    )  # a bad timestamp: rejected by the codec
    batch = p.mqtt_batch(
        [SimpleNamespace(topic=TOPIC, payload=broken), SimpleNamespace(topic=TOPIC, payload=good[:-9] + b"482913")],
        _arrival(1),
    )
    assert len(batch.dead_letters) == 2
    for letter in batch.dead_letters:
        assert b"482913" not in letter.raw and b"13800138000" not in letter.raw
        assert "482913" not in letter.detail and "Li Wei" not in letter.detail


def test_personal_locker_model_needs_a_key_file():
    text = CONFIG.replace('[privacy]\nkey_file = "{keys}"\n', "").format(feedback="door_closing")
    with pytest.raises(ConfigError, match="privacy"):
        parse_config(text)


def test_locker_config_errors_name_the_key(keys):
    text = CONFIG.format(keys=keys, feedback="door_closing").replace("compartments = 4, ", "")
    with pytest.raises(ConfigError, match=r"locker\.compartments"):
        parse_config(text)
    bad = CONFIG.format(keys=keys, feedback="door_closing") + '[devices.locker]\nbank = "C"\n'
    with pytest.raises(ConfigError, match="locker"):
        parse_config(bad)  # `locker` on the people counter


def test_compartment_state_records_only_on_change_and_state_in_the_batch(keys):
    p = _pipeline(keys)
    snap = {
        "message_id": "s1",
        "timestamp": "2026-11-25T08:00:00Z",
        "compartments": [{"compartment_number": n, "door_state": "closed"} for n in (1, 2, 3, 4)],
    }
    batch = p.mqtt_batch([_msg(snap, "locker/bank-b/state/compartments")], _arrival(1))
    states = _of(batch, "locker_compartment")
    assert len(states) == 4
    assert all(b'door="closed"' in s and b'command="none"' in s and b'alarms="none"' in s for s in states)
    assert STATE_KEY in batch.state
    snap["message_id"] = "s2"
    again = p.mqtt_batch([_msg(snap, "locker/bank-b/state/compartments")], _arrival(2))
    assert _of(again, "locker_compartment") == []  # nothing changed
    # the state round-trips: a new pipeline restored from it writes nothing new for the same facts
    q = _pipeline(keys)
    q.restore_state(batch.state, "boot-1", _arrival(3).mono_ns)
    snap["message_id"] = "s3"
    assert _of(q.mqtt_batch([_msg(snap, "locker/bank-b/state/compartments")], _arrival(3)), "locker_compartment") == []


def test_door_left_open_from_the_tick_and_cleared(keys):
    p = _pipeline(keys)
    p.mqtt_batch([_event("e1", "door_state_changed", compartment_number=1, state="closed")], _arrival(0))
    p.mqtt_batch([_event("e2", "compartment_open_detected", compartment_number=1, outcome="opened")], _arrival(1))
    p.locker_tick(_arrival(2))  # the first periodic occupancy points of both banks
    assert p.locker_tick(_arrival(30)) is None  # nothing due: no batch, no state write every second
    raised = p.locker_tick(_arrival(31.5))
    [alarm] = _of(raised, "locker_alarm")
    assert b"alarm=door_left_open" in alarm and b"is_active=t," in alarm
    assert any(b'alarms="door_left_open"' in s for s in _of(raised, "locker_compartment"))
    assert STATE_KEY in raised.state
    cleared = p.mqtt_batch([_event("e3", "door_state_changed", compartment_number=1, state="closed")], _arrival(40))
    [alarm] = _of(cleared, "locker_alarm")
    assert b"is_active=f," in alarm and b"duration_s=39i" in alarm


def test_poll_timeout_counts_the_polled_board_only(keys):
    p = _pipeline(keys)
    bus = next(d for d in p.router.exact.values() if d.id == "cam")  # a non-locker device
    assert p.poll_timeout(bus, _arrival(1)) is None
    dev = next(d for d in parse_config(CONFIG.format(keys=keys, feedback="door_closing")).devices if d.id == "bus-1")
    p.poll_timeout(dev, _arrival(1), lock8a.encode_query_all(2))
    batch = p.poll_timeout(dev, _arrival(2), lock8a.encode_query_all(2))
    [down] = _of(batch, "locker_controller")
    assert b"board=2" in down and b"is_online=f," in down and b"missed_polls=2i" in down
    assert STATE_KEY in batch.state
    assert p.lockers.banks["bus-1"].offline_boards() == [2]
    # without the request every board counts a miss; board 1 answers in between, so stays online
    p.poll_timeout(dev, _arrival(4))
    p.serial_batch(dev, [bytes.fromhex("80 01 03 33 B1")], _arrival(5))
    p.poll_timeout(dev, _arrival(6))
    assert p.lockers.banks["bus-1"].offline_boards() == [2]
    p.poll_timeout(dev, _arrival(7))
    assert p.lockers.banks["bus-1"].offline_boards() == [1, 2]  # two misses in a row: board 1 is silent too


@pytest.mark.parametrize(("feedback", "door"), [("door_closing", b'door="closed"'), ("door_opening", b'door="open"')])
def test_lock_board_feedback_polarity_is_per_bank(keys, feedback, door):
    p = _pipeline(keys, feedback)
    dev = next(d for d in parse_config(CONFIG.format(keys=keys, feedback=feedback)).devices if d.id == "bus-1")
    frame = bytes.fromhex("80 01 03 33 B1")  # board 1: channels 1 and 2 bit set
    assert lock8a.bcc(frame) == 0
    batch = p.serial_batch(dev, [frame], _arrival(1))
    states = _of(batch, "locker_compartment")
    assert len(states) == 2 and all(door in s for s in states)
    assert all(b'item="unknown"' in s and b'load="unknown"' in s for s in states)  # D10: no item sensor
    same = p.serial_batch(dev, [frame], _arrival(2))  # the next poll, nothing changed
    assert same.records == [] and same.state == {}


def test_remote_open_command_state_and_resolution_by_transaction(keys):
    p = _pipeline(keys)
    stage = p.lockers
    p.mqtt_batch([_event("e1", "door_state_changed", compartment_number=3, state="closed")], _arrival(0))
    seen = []
    stage.watch("txn-1", seen.append)
    out = stage.command("bank-b", "open", 0, 3, _arrival(1).mono_ns, "key-1", transaction_id="txn-1")
    assert out.accepted
    batch = p.locker_batch(out.drafts, _arrival(1))
    assert any(b'command="pending"' in s for s in _of(batch, "locker_compartment"))
    doc = {"compartment_number": 3, "transaction_id": "txn-1", "outcome": "opened"}
    p.mqtt_batch([_event("e2", "compartment_open_detected", **doc)], _arrival(1.4))
    assert [r.outcome for r in seen] == ["confirmed"] and seen[0].latency_ms == 400
