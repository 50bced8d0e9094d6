"""The locker emulators speak the real protocols: serial banks over PTY pairs, the MQTT bank through a
real Mosquitto; the gateway's framers, codecs and state machine understand what they say."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from pathlib import Path

import kerong_bank
import lock8a_bank
import paho.mqtt.client as mqtt
import pytest
from lockbank_pty import BankKnobs
from locker_mqtt_bank import MqttLockerBank
from paho.mqtt.enums import CallbackAPIVersion

from devices import kerong, lock8a, locker_mqtt
from devices.events import LockStatus, Reject, UnlockAnswered
from gateway.processors.lockers import LockerBank, LockerConfig

NS = 1_000_000_000
BASE = {"district": "d1", "street": "s1", "gateway": "gw1", "device": "lockers"}


def _wait(predicate, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def _exchange(link: Path, request: bytes, framer, timeout_s: float = 1.0) -> list:
    """What a transport does: open the stable path, write one request, read until a frame comes or
    the reply times out, then treat the silence as the end of the reply."""
    fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        os.write(fd, request)
        out: list = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not any(isinstance(x, bytes) for x in out):
            ready, _, _ = select.select([fd], [], [], 0.02)
            if ready:
                out += framer.feed(os.read(fd, 256))
        return out + framer.flush()
    finally:
        os.close(fd)


def _frames(items: list) -> list[bytes]:
    assert not [x for x in items if isinstance(x, Reject)], items
    return [x for x in items if isinstance(x, bytes)]


# --- the 8A/80 bank ----------------------------------------------------------------------------------


@pytest.fixture
def lock8a_bank_pty(tmp_path):
    with lock8a_bank.make_bank(tmp_path, "t", {1: 8}, BankKnobs(hold_s=0.2)) as bank:
        yield bank


def test_lock8a_pty_round_trip_status_query(lock8a_bank_pty):
    """A status query written to the by-id link comes back as the verified board's 3-status-byte reply."""
    bank = lock8a_bank_pty
    assert bank.link.is_symlink() and bank.link.parent.name == "by-id"
    [frame] = _frames(_exchange(bank.link, lock8a.encode_query_all(1), lock8a.Framer(status_bytes=3)))
    assert frame == bytes.fromhex("80 01 00 00 FF 33 4D")  # all 8 doors closed (bit 1, door_closing)
    events = lock8a.decode(frame, received_ns=0)
    assert events[:8] == [LockStatus(1, n, False, None) for n in range(1, 9)]
    assert len(events) == 24


def test_lock8a_pty_unlock_deposit_cycle_jam_and_forced_open(lock8a_bank_pty):
    bank = lock8a_bank_pty
    [frame] = _frames(_exchange(bank.link, lock8a.encode_unlock(1, 2), lock8a.Framer()))
    assert lock8a.decode(frame, received_ns=0) == [UnlockAnswered(1, 2, True)]
    _wait(lambda: bank.happenings("door_closed"))
    assert [(h.kind, h.lock) for h in bank.happenings() if h.kind in ("door_opened", "deposit", "door_closed")] == [
        ("door_opened", 2),
        ("deposit", 2),
        ("door_closed", 2),
    ]
    bank.jam(1, 3)
    [frame] = _frames(_exchange(bank.link, lock8a.encode_unlock(1, 3), lock8a.Framer()))
    assert lock8a.decode(frame, received_ns=0) == [UnlockAnswered(1, 3, False)]  # answered, door still shut
    assert bank.happenings("unlock_jammed")
    bank.force_open(1, 5)
    [frame] = _frames(_exchange(bank.link, lock8a.encode_query_all(1), lock8a.Framer()))
    assert [e.lock for e in lock8a.decode(frame, received_ns=0)[:8] if e.door_open] == [5]


def test_lock8a_pty_silent_controller_then_back(lock8a_bank_pty):
    bank = lock8a_bank_pty
    bank.go_silent()
    assert _exchange(bank.link, lock8a.encode_query_all(1), lock8a.Framer(), timeout_s=0.3) == []
    assert bank.happenings("ignored_request")
    bank.resume()
    assert _frames(_exchange(bank.link, lock8a.encode_query_all(1), lock8a.Framer()))


def test_lock8a_pty_unplug_and_replug_repoints_the_link(lock8a_bank_pty):
    bank = lock8a_bank_pty
    before = os.readlink(bank.link)
    fd = os.open(bank.link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        bank.unplug()
        assert not bank.link.exists()
        with contextlib.suppress(OSError):  # the reader of a pulled adapter sees EOF or EIO
            select.select([fd], [], [], 0.2)
            assert os.read(fd, 16) == b""
    finally:
        os.close(fd)
    bank.replug()
    assert bank.link.is_symlink()
    assert before != os.readlink(bank.link) or Path(os.readlink(bank.link)).exists()
    assert _frames(_exchange(bank.link, lock8a.encode_query_all(1), lock8a.Framer()))


def test_lock8a_split_and_noisy_replies_still_frame(tmp_path):
    knobs = BankKnobs(split_replies=True, garbage_rate=1.0, seed=3)
    with lock8a_bank.make_bank(tmp_path, "n", {1: 8}, knobs) as bank:
        items = _exchange(bank.link, lock8a.encode_query_all(1), lock8a.Framer(status_bytes=3))
        assert [x for x in items if isinstance(x, bytes)] == [bytes.fromhex("80 01 00 00 FF 33 4D")]
        assert len([x for x in items if isinstance(x, Reject)]) <= 1


def test_processor_driven_through_the_lock8a_emulator(lock8a_bank_pty):
    """Poll loop in miniature: emulator → framer → codec → state machine (time passed in)."""
    bank = lock8a_bank_pty
    lockers = LockerBank(LockerConfig.serial("A", {1: 8}, offline_after_polls=2), dict(BASE), "lockers")
    now = 0

    def poll() -> list:
        nonlocal now
        now += NS
        items = _exchange(bank.link, lock8a.encode_query_all(1), lock8a.Framer(status_bytes=3), timeout_s=0.3)
        frames = [x for x in items if isinstance(x, bytes)]
        if not frames:
            return lockers.on_poll_timeout(1, now)
        return lockers.on_events(lock8a.decode(frames[0], received_ns=0), now)

    poll()
    bank.force_open(1, 4)
    drafts = poll()
    assert [d.tags["compartment"] for d in drafts if d.tags.get("alarm") == "forced_open"] == ["4"]
    bank.go_silent()
    assert not [d for d in poll() if d.measurement == "locker_controller"]
    [down] = [d for d in poll() if d.measurement == "locker_controller"]
    assert down.fields["is_online"] is False
    bank.resume()
    [up] = [d for d in poll() if d.measurement == "locker_controller"]
    assert up.fields["is_online"] is True


# --- the Kerong bank (item sensors) ----------------------------------------------------------------------


def test_kerong_pty_round_trip_with_item_sensors(tmp_path):
    with kerong_bank.make_bank(tmp_path, "k", {0: 16}, BankKnobs(hold_s=0.2)) as bank:
        bank.set_item(0, 1, True)
        [frame] = _frames(_exchange(bank.link, kerong.encode_status(0), kerong.Framer()))
        events = kerong.decode(frame, received_ns=0)
        assert events[0] == LockStatus(0, 1, False, True) and events[1] == LockStatus(0, 2, False, False)
        # an unlock is answered with the status after the door reacted; the auto cycle deposits in lock 2
        [frame] = _frames(_exchange(bank.link, kerong.encode_unlock(0, 2), kerong.Framer()))
        assert kerong.decode(frame, received_ns=0)[1] == LockStatus(0, 2, True, False)
        _wait(lambda: bank.happenings("door_closed"))
        [frame] = _frames(_exchange(bank.link, kerong.encode_status(0), kerong.Framer()))
        assert kerong.decode(frame, received_ns=0)[1] == LockStatus(0, 2, False, True)


# --- the MQTT bank ----------------------------------------------------------------------------------------


class _Collector:
    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"collector-{topic.split('/')[1]}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def snapshot(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.integration
def test_mqtt_bank_publishes_the_contract_and_the_processor_follows(mosquitto):
    uuid = f"bank-{os.getpid()}"
    collector = _Collector(mosquitto.port, f"locker/{uuid}/#")
    bank = MqttLockerBank("127.0.0.1", mosquitto.port, uuid, compartments=4, heartbeat_s=0.2, hold_s=0.1, jammed={4})
    try:
        bank.start()
        parcel = bank.courier_deposit(1)
        _wait(lambda: bank.doors[1] == "closed")
        bank.customer_pickup(1)
        bank.force_open(2)
        bank.close_door(2)
        commander = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"cmd-{uuid}")
        commander.connect("127.0.0.1", mosquitto.port)
        commander.loop_start()
        for n, txn in ((3, "txn-3"), (4, "txn-4")):
            doc = {
                "message_id": f"c{n}",
                "transaction_id": txn,
                "action": "open_compartment",
                "timestamp": "2026-04-14T19:30:00Z",
                "data": {"compartment_number": n},
            }
            commander.publish(f"locker/{uuid}/command", locker_mqtt.orjson.dumps(doc), qos=1).wait_for_publish(5)
        commander.disconnect()
        commander.loop_stop()
        _wait(lambda: bank.happenings("open_jammed") and bank.happenings("opened_by_command"))
        _wait(lambda: bank.doors[3] == "closed")
        bank.crash()
        _wait(lambda: any(t.endswith("/state/connection") for t, _ in collector.snapshot()), timeout_s=10)
    finally:
        if not bank._stop.is_set():
            bank.stop()
        collector.close()

    messages = collector.snapshot()
    payloads = b"\n".join(p for _, p in messages)
    for value in bank.personal_values():  # the privacy tests will look for these downstream
        assert value.encode() in payloads
    assert parcel.recipient_phone in bank.personal_values()

    lockers = LockerBank(LockerConfig.mqtt("B", 4), dict(BASE), "lockers")
    drafts = []
    for i, (topic, payload) in enumerate(messages):
        events = locker_mqtt.decode(payload, received_ns=0)
        assert not isinstance(events, Reject), (topic, events)
        drafts += lockers.on_events(events, (i + 1) * NS)
    parcels = [(d.fields["action"], d.fields["parcel_id"]) for d in drafts if d.measurement == "locker_parcel"]
    assert parcels == [("deposit", parcel.parcel_id), ("pickup", parcel.parcel_id)]
    assert not any("recipient_ref" in d.fields for d in drafts)  # clear phone numbers never written
    alarms = [
        (d.tags["alarm"], d.tags["compartment"], d.fields["is_active"])
        for d in drafts
        if d.measurement == "locker_alarm"
    ]
    assert ("forced_open", "2", True) in alarms and ("lock_jammed", "4", True) in alarms
    assert not any(a == "forced_open" and c in ("1", "3") for a, c, _ in alarms)
    controller = [d.fields["is_online"] for d in drafts if d.measurement == "locker_controller"]
    assert controller[-1] is False  # the Last Will
