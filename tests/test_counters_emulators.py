"""The counter emulators against the gateway's codecs and counter processor: what the gateway counts
equals the emulator's ground truth of what can be counted, with resets, wraps, duplicates, stale
re-deliveries, radio loss, history records, reboots, noise and echo on the serial line.

The log's identity dedupe (INSERT OR IGNORE on the record identity, D4) is stood in for by a set."""

from __future__ import annotations

import os
import select
import threading
import time
import tty
import uuid
from collections import Counter

import pytest
from axis_counter import Street as AxisStreet
from milesight_counter import Street as MilesightStreet
from milesight_json_counter import Street as MilesightJsonStreet
from modbus_counter import ModbusCounterDevice

from devices import modbus_counter as codec
from devices.events import Reject
from devices.registry import MODELS
from gateway.processors.counters import CounterProcessor

NS = 1_000_000_000


class Gateway:
    """Codec → processor → identity dedupe, summing footfall per (device, line, direction)."""

    def __init__(self, model: str) -> None:
        self.model = MODELS[model]
        self.proc = CounterProcessor()
        self.seen: set[str] = set()
        self.sums: Counter = Counter()
        self.rejects = 0
        self.rx_ns = 1_800_000_000 * NS

    def take(self, device: str | None, payload: bytes, **decode_kw) -> None:
        self.rx_ns += NS
        result = self.model.decode(payload, received_ns=self.rx_ns, **decode_kw)
        if isinstance(result, Reject):
            self.rejects += 1
            return
        trusted = self.model.device_time_trusted
        for d in self.proc.process(device or "dev", result, received_ns=self.rx_ns, device_time_trusted=trusted):
            if d.identity is not None:
                if d.identity in self.seen:
                    continue
                self.seen.add(d.identity)
            key = (device, d.line) if device else (d.line,)
            self.sums[(*key, "in")] += d.entries
            self.sums[(*key, "out")] += d.exits


def _by_topic(street, names):
    return {street.topic(n): n for n in names}


MILESIGHT_CASES = {
    "vs350-totals-wrap-duplicates-stale-loss": dict(
        model="vs350",
        style="totals",
        start_total=65_000,
        midnight_reset=False,
        duplicate_ratio=0.2,
        stale_ratio=0.2,
        loss_ratio=0.2,
    ),
    "vs350-totals-midnight-ttn": dict(model="vs350", style="totals", envelope="ttn", duplicate_ratio=0.1),
    "vs350-period-history-loss-reboots": dict(
        model="vs350",
        style="period",
        loss_ratio=0.25,
        history=True,
        duplicate_ratio=0.2,
        stale_ratio=0.1,
        reboot_ratio=0.05,
    ),
    "vs350-both-history": dict(model="vs350", style="both", loss_ratio=0.1, history=True, duplicate_ratio=0.1),
    "vs133-both-three-lines": dict(model="vs133", lines=3, style="both", duplicate_ratio=0.2, loss_ratio=0.1),
    "vs133-totals-raw-garbage": dict(
        model="vs133", lines=2, style="totals", envelope="raw", loss_ratio=0.1, garbage_ratio=0.1
    ),
    "vs121-both-garbage": dict(model="vs121", style="both", envelope="ttn", duplicate_ratio=0.1, garbage_ratio=0.1),
}


@pytest.mark.parametrize("name", MILESIGHT_CASES)
def test_milesight_emulator_gateway_counts_what_is_countable(name):
    """Two days of hourly reports from three counters: sums equal the countable ground truth."""
    knobs = dict(MILESIGHT_CASES[name])
    street = MilesightStreet(devices=["a", "b", "c"], interval_s=3600, seed=11, **knobs)
    gw = Gateway(f"milesight-{knobs['model']}")
    topics = _by_topic(street, street.devices)
    garbage = 0
    for topic, payload in street.messages(48 * 3):
        garbage += payload.endswith((b"\x03\xd2\x48", b'"A9JI'))
        gw.take(topics[topic], payload)
    assert street.totals.ambiguous == 0, "a seed with no invisible reset keeps the comparison exact"
    assert gw.rejects == garbage
    assert +gw.sums == +street.countable
    assert all(gw.sums[k] <= street.truth[k] for k in street.truth)


def test_milesight_emulator_midnight_reset_near_wrap_is_ambiguous_and_flagged():
    """A uint16 total near 65 535 reset at midnight looks like a wrap: the emulator flags it, and the
    gateway's sum differs only there (by less than a quarter of the range per flagged reset)."""
    street = MilesightStreet(devices=["a"], model="vs350", start_total=65_000, interval_s=3600, seed=2)
    gw = Gateway("milesight-vs350")
    for _, payload in street.messages(48):
        gw.take("a", payload)
    assert street.totals.ambiguous > 0
    for k in street.countable:
        assert 0 <= gw.sums[k] - street.countable[k] <= street.totals.ambiguous * 2**14


@pytest.mark.parametrize("knobs", [{}, {"duplicate_ratio": 0.3, "stale_ratio": 0.2, "garbage_ratio": 0.1}])
def test_axis_emulator_gateway_counts_what_is_countable(knobs):
    street = AxisStreet(cameras=["c1", "c2"], interval_s=600, seed=5, **knobs)
    gw = Gateway("axis-people-counter")
    topics = _by_topic(street, street.cameras)
    for topic, payload in street.messages(6 * 24 * 2 * 2):
        gw.take(topics[topic], payload)
    assert street.totals.ambiguous == 0
    assert +gw.sums == +street.countable
    assert sum(street.countable.values()) < sum(street.truth.values())  # midnight resets cost something


@pytest.mark.parametrize("knobs", [{}, {"utc_offset_h": -3.5, "dst": True, "snapshot": True, "regions": 5}])
def test_milesight_json_emulator_gauges_match_the_room(knobs):
    """Every report decodes to the people, max and per-region counts that were in the room, at the
    report's end time in UTC; the vendor's non-JSON sample is rejected; no event holds the image."""
    from devices.events import OccupancySnapshot, PeopleMax, RegionPeople

    street = MilesightJsonStreet(sensors=["s1", "s2"], garbage_ratio=0.2, seed=9, **knobs)
    model = MODELS["milesight-vs1xx-json"]
    seen: dict[str, list] = {"s1": [], "s2": []}
    rejects = 0
    topics = _by_topic(street, street.sensors)
    for topic, payload in street.messages(40):
        result = model.decode(payload, received_ns=0)
        if isinstance(result, Reject):
            rejects += 1
            continue
        snap = next(e for e in result if isinstance(e, OccupancySnapshot))
        peak = next(e for e in result if isinstance(e, PeopleMax))
        regions = [e.people for e in result if isinstance(e, RegionPeople)]
        assert all("snapshot" not in repr(e) and len(repr(e)) < 200 for e in result)
        seen[topics[topic]].append((snap.device_ts_ns, snap.people, peak.people_max, regions))
    assert rejects == street.sent - 40
    assert seen == {s: [tuple(r) for r in rows] for s, rows in street.truth.items()}


# --- Modbus RTU over a PTY -----------------------------------------------------------------------


def _poll(fd: int, framer: codec.ModbusRtuFramer, request: bytes, timeout_s: float = 0.5) -> list:
    os.write(fd, request)
    frames: list = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not any(isinstance(f, bytes) for f in frames):
        ready, _, _ = select.select([fd], [], [], 0.02)
        if ready:
            frames += framer.feed(os.read(fd, 4096))
    return frames


@pytest.mark.parametrize(
    "knobs, register_map",
    [
        ({}, codec.DEFAULT_MAP),
        ({"start_total": 65_450, "echo": True, "split_writes": True}, codec.DEFAULT_MAP),
        (
            {
                "lines": {"door": (10, 12), "side": (14, 16)},
                "width_bits": 32,
                "low_word_first": True,
                "noise_ratio": 0.3,
            },
            codec.RegisterMap.from_mapping(
                {
                    "width_bits": 32,
                    "word_order": "low_first",
                    "lines": [{"line": "door", "in": 10, "out": 12}, {"line": "side", "in": 14, "out": 16}],
                }
            ),
        ),
        ({"crc_error_ratio": 0.15}, codec.DEFAULT_MAP),
    ],
    ids=["default", "wrap-echo-split", "32bit-low-first-noise", "crc-errors"],
)
@pytest.mark.timeout(60)
def test_modbus_emulator_polled_over_pty(tmp_path, knobs, register_map):
    """Poll, cross, reset: the footfall sum equals the countable truth; noise, echo, split answers and
    corrupted answers cost nothing but the corrupted answer's report."""
    link = tmp_path / "by-id" / "usb-counter"
    link.parent.mkdir()
    with ModbusCounterDevice(link, seed=3, **knobs) as dev:
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        try:
            framer, gw = codec.ModbusRtuFramer(), Gateway("modbus-rtu-counter")
            request = codec.read_request(register_map)
            lines = list(dev.lines)
            for step in range(60):
                for k, line in enumerate(lines):
                    dev.cross(line, (step * 7 + k) % 23, (step * 5 + k) % 17)
                if step % 20 == 13:
                    dev.reset()  # the counter's midnight
                for item in _poll(fd, framer, request):
                    if isinstance(item, bytes):
                        gw.take(None, item, register_map=register_map)
            assert dev.answers_whole >= 45
            assert dev.totals.ambiguous == 0
            assert gw.proc.stats["totals_reset"] >= 2
            if knobs.get("start_total"):
                assert gw.proc.stats["totals_wrap"] >= 1
            if knobs.get("crc_error_ratio"):
                assert dev.answers_spoiled >= 1
            expected = {(line, d): v for (line, d), v in dev.countable.items()}
            assert +gw.sums == +Counter(expected)
        finally:
            os.close(fd)
    assert not link.exists()


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_milesight_emulator_over_a_real_broker(mosquitto):
    """The emulator's paho publisher through Mosquitto: every message arrives and decodes."""
    import paho.mqtt.client as mqtt
    from vivotek_counter import publish_all

    prefix = f"t-{uuid.uuid4().hex[:8]}"
    street = MilesightStreet(
        devices=["a", "b"], model="vs133", lines=2, style="both", topic_template=prefix + "/{device}/up", seed=4
    )
    got: list[tuple[str, bytes]] = []
    done = threading.Event()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{prefix}-sub")

    def on_message(client, userdata, msg):
        got.append((msg.topic, msg.payload))

    sub.on_message = on_message
    sub.on_subscribe = lambda *a: done.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe(prefix + "/#", qos=1)
    sub.loop_start()
    try:
        assert done.wait(10)
        messages = list(street.messages(40))
        assert publish_all("127.0.0.1", mosquitto.port, iter(messages)) == len(messages)
        deadline = time.monotonic() + 10
        while len(got) < len(messages) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert sorted(got) == sorted(messages)
    gw = Gateway("milesight-vs133")
    for topic, payload in got:
        gw.take(topic.split("/")[1], payload)
    assert +gw.sums == +street.countable
