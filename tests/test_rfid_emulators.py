"""RFID emulators (firmware-stubs/): their frames decode with the gateway's codecs, their ground
truth is deterministic, damaged frames never cost a good one, and the serial readers work over a
real pseudo-terminal — commands answered, unplug and replug — read with plain os.open/os.read."""

from __future__ import annotations

import errno
import os
import time
from itertools import pairwise
from pathlib import Path

import chafon_reader
import m100_reader
import pytest
import rdm6300_reader
import rfid_mqtt_reader
import rfid_sim

from devices import chafon, epc, m100, rdm6300, rfid_json
from devices.events import InventoryRound, ReaderInfo, ReaderReply, Reject, TagKind, TagRead

# --- pure frame builders vs codecs ---------------------------------------------------------------


def test_rdm6300_emulator_frames_decode_to_their_card():
    for tag in rfid_sim.em4100_population(50, seed=7):
        for lowercase in (False, True):
            (read,) = rdm6300.decode(rdm6300_reader.frame(tag, lowercase=lowercase), received_ns=0)
            assert (read.tag_hex, read.is_personal) == (tag, True)
    assert rdm6300_reader.frame("01000734E0") == bytes.fromhex("02 30 31 30 30 30 37 33 34 45 30 44 32 03")


def test_m100_emulator_frames_decode():
    for tag in rfid_sim.epc_population(30, seed=3):
        (read,) = m100.decode(m100_reader.notice(tag, -61), received_ns=0)
        assert (read.tag_hex, read.rssi_dbm, read.antenna) == (tag, -61.0, 0)
        assert (read.gtin14 is not None) == tag.startswith("30")
    assert m100_reader.notice("30751FEB705C5904E3D50D70", -55) == bytes.fromhex(
        "BB 02 22 00 11 C9 34 00 30 75 1F EB 70 5C 59 04 E3 D5 0D 70 3A 76 EF 7E"
    )
    assert m100.decode(m100_reader.NO_TAG, received_ns=0) == [InventoryRound(0, 0, True)]
    assert m100.decode(m100_reader.STOP_OK, received_ns=0) == [ReaderReply(0x28, True, 0, "success")]
    assert m100.decode(m100_reader.version(1), received_ns=0)[0].firmware == m100_reader.SOFTWARE


@pytest.mark.parametrize("layout", ["18", "288"])
def test_chafon_emulator_frames_decode_in_their_layout(layout):
    decode = chafon.decode_18 if layout == "18" else chafon.decode_288
    tags = rfid_sim.epc_population(9, seed=2)
    antenna = 1 if layout == "18" else 3
    frames = chafon_reader.inventory_frames([(t, 100) for t in tags], layout, antenna, tags_per_frame=4)
    events = [e for f in frames for e in decode(f, received_ns=0)]
    reads = [e for e in events if isinstance(e, TagRead)]
    rounds = [e for e in events if isinstance(e, InventoryRound)]
    assert [r.tag_hex for r in reads] == tags
    assert {r.antenna for r in reads} == {0 if layout == "18" else 3}
    assert [r.is_complete for r in rounds] == [False, False, True] and sum(r.tag_count for r in rounds) == 9
    assert decode(chafon_reader.inventory_frames([], layout, antenna)[0], received_ns=0) == [
        InventoryRound(0 if layout == "18" else 3, 0, True)
    ]
    (info,) = decode(chafon_reader.reader_info(layout), received_ns=0)
    assert info.model == ("UHFReader18" if layout == "18" else "UHFReader288M") and info.region == "EU"


def test_sgtin_builder_matches_annex_e():
    assert rfid_sim.sgtin96_hex("0614141", "812345", 6789, 3) == "3074257BF7194E4000001A85"
    assert epc.sgtin96(rfid_sim.sgtin96_hex("50712192365", "88", 0, 6)).gtin14 == "85071219236581"


# --- population and noise ------------------------------------------------------------------------


def test_population_is_deterministic_and_tags_never_overlap():
    def stays(seed):
        pop = rfid_sim.Population(rfid_sim.epc_population(10, seed), (1, 2), seed=seed, arrive_p=0.1, depart_p=0.05)
        pop.present(60.0)
        return pop.stays()

    assert stays(5) == stays(5) and stays(5) != stays(6)
    by_tag: dict[str, list] = {}
    for s in stays(5):
        by_tag.setdefault(s.tag, []).append(s)
    for visits in by_tag.values():
        for a, b in pairwise(visits):
            assert a.end_s is not None and a.end_s <= b.start_s


def test_population_max_present_one_card_at_a_time():
    pop = rfid_sim.Population(rfid_sim.em4100_population(6), (0,), arrive_p=0.5, depart_p=0.1, max_present=1)
    for step in range(200):
        assert len(pop.present(step * 0.1)) <= 1


@pytest.mark.parametrize("family", ["rdm6300", "m100", "chafon"])
def test_noise_never_costs_an_intact_frame(family):
    """Junk, flipped bits, cut frames: exactly the frames the noise left intact come out, and the
    damage shows as rejects."""
    noise = rfid_sim.Noise(0.3, seed=11)
    if family == "rdm6300":
        frames = [rdm6300_reader.frame(t) for t in rfid_sim.em4100_population(300, seed=1)]
        framer = rdm6300.Framer()
    elif family == "m100":
        frames = [m100_reader.notice(t, -50) for t in rfid_sim.epc_population(300, seed=1)]
        framer = m100.Framer()
    else:
        tags = rfid_sim.epc_population(300, seed=1)
        frames = [chafon_reader.inventory_frames([(t, 90)], "288", 1)[0] for t in tags]
        framer = chafon.Framer()
    sent = [noise.apply(f) for f in frames]
    out = framer.feed(b"".join(sent)) + framer.flush()
    got = [o for o in out if isinstance(o, bytes)]
    intact = [f for f, s in zip(frames, sent, strict=True) if s.endswith(f)]
    assert got == intact
    assert noise.injected["flip"] + noise.injected["truncate"] == len(frames) - len(intact)
    assert any(isinstance(o, Reject) for o in out)  # one flip can make two (e.g. ETX 03 → STX 02)


# --- MQTT reader (pure part) ---------------------------------------------------------------------


def test_mqtt_fleet_messages_decode_and_match_ground_truth():
    fleet = rfid_mqtt_reader.ReaderFleet(
        ["door-a", "door-b", "door-c"], tags=15, em4100_share=0.2, vendor_keys_every=3, garbage_ratio=0.1, seed=4
    )
    reads, rejects = [], 0
    for topic, payload in fleet.messages(120):
        result = rfid_json.decode(payload, received_ns=0)
        if isinstance(result, Reject):
            rejects += 1
            continue
        assert topic == f"rfid/{topic.split('/')[1]}/reads"
        reads += result
    assert rejects > 0 and reads
    totals: dict = {}
    for r in reads:
        totals[(r.reader, r.tag_hex, r.antenna)] = totals.get((r.reader, r.tag_hex, r.antenna), 0) + r.read_count
    assert totals == dict(fleet.reads_sent)
    cards = [r for r in reads if r.tag_kind is TagKind.EM4100]
    assert cards and all(r.is_personal for r in cards)
    assert {r.tag_hex for r in reads} <= {s.tag for reader in fleet.readers for s in fleet.stays(reader)}


def test_mqtt_fleet_is_deterministic():
    def run():
        return list(rfid_mqtt_reader.ReaderFleet(["r1", "r2"], seed=9, garbage_ratio=0.2).messages(40))

    assert run() == run()


@pytest.mark.integration
def test_mqtt_reader_publishes_to_a_real_broker(mosquitto):
    from paho.mqtt import client as mqtt_client

    got: list[bytes] = []
    sub = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda _c, _u, msg: got.append(msg.payload)
    sub.connect("127.0.0.1", mosquitto.port)
    sub.subscribe("test-rfid/+/reads", qos=1)
    sub.loop_start()
    try:
        time.sleep(0.3)  # let SUBSCRIBE land before publishing
        fleet = rfid_mqtt_reader.ReaderFleet(["r1", "r2"], topic_template="test-rfid/{reader}/reads", seed=2)
        assert rfid_mqtt_reader.publish_all("127.0.0.1", mosquitto.port, fleet.messages(20)) == 20
        _wait_for(lambda: len(got) == 20, 10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert all(isinstance(rfid_json.decode(p, received_ns=0), list) for p in got)


# --- serial readers over a real pseudo-terminal --------------------------------------------------


def _wait_for(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


class Host:
    """The gateway's side, reduced to plain os.open/os.read/os.write on the stable path."""

    def __init__(self, link: Path, framer) -> None:
        self.fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.framer = framer
        self.frames: list[bytes] = []
        self.rejects: list[Reject] = []

    def write(self, *commands: bytes) -> None:
        for cmd in commands:
            os.write(self.fd, cmd)

    def pump(self) -> bool:
        """Read what is there; False once the port is gone (EIO / end of file after an unplug)."""
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return True
        except OSError as exc:
            assert exc.errno == errno.EIO
            return False
        if not data:
            return False
        for item in self.framer.feed(data):
            (self.rejects if isinstance(item, Reject) else self.frames).append(item)
        return True

    def read_until(self, condition, timeout_s: float = 5.0) -> None:
        def done():
            self.pump()
            return condition()

        _wait_for(done, timeout_s)

    def close(self) -> None:
        os.close(self.fd)


def _events(decode, frames):
    return [e for f in frames for e in decode(f, received_ns=0)]


def _round_complete(decode, frames) -> bool:
    return any(isinstance(e, InventoryRound) and e.is_complete for e in _events(decode, frames))


def test_rdm6300_over_pty_cards_decode_and_match_truth(tmp_path):
    link = tmp_path / "by-id" / "usb-rdm6300"
    with rdm6300_reader.Rdm6300Reader(link, seed=3, rate_hz=100, arrive_p=1.0, depart_p=0.02) as reader:
        host = Host(link, rdm6300.Framer())
        try:
            host.read_until(lambda: len(host.frames) >= 5)
        finally:
            host.close()
        cards = {e.tag_hex for e in _events(rdm6300.decode, host.frames)}
        assert cards and cards <= {s.tag for s in reader.population.stays()}


def test_m100_over_pty_start_commands_answered_and_notices_decode(tmp_path):
    link = tmp_path / "by-id" / "usb-m100"
    with m100_reader.M100Reader(link, seed=5, rate_hz=100, arrive_p=0.5) as reader:
        host = Host(link, m100.Framer())
        try:
            time.sleep(0.1)
            assert host.pump() and host.frames == []  # silent until asked
            host.write(*m100.start_commands(), m100.version_query(0))
            host.read_until(lambda: sum(f[1] == 0x02 for f in host.frames) >= 10)
        finally:
            host.close()
        events = _events(m100.decode, host.frames)
        assert ReaderReply(0x28, True, 0, "success") in events
        assert any(isinstance(e, ReaderInfo) and e.model == m100_reader.HARDWARE for e in events)
        reads = [e for e in events if isinstance(e, TagRead)]
        assert {r.tag_hex for r in reads} <= {s.tag for s in reader.population.stays()}
        assert reader.commands[:2] == [(0x28, b""), (0x27, b"\x22\xff\xff")]


@pytest.mark.parametrize("layout", ["18", "288"])
def test_chafon_over_pty_inventory_requests_answered(tmp_path, layout):
    link = tmp_path / "by-id" / f"usb-chafon-{layout}"
    decode = chafon.decode_18 if layout == "18" else chafon.decode_288
    with chafon_reader.ChafonReader(link, layout=layout, antennas=2, seed=8, arrive_p=0.6) as reader:
        host = Host(link, chafon.Framer())
        try:
            host.write(chafon.get_reader_info())
            host.read_until(lambda: len(host.frames) == 1)
            for n in range(6):  # request/response: the next request once the round is complete
                time.sleep(0.05)  # let the population move
                done = len(host.frames)
                host.write(chafon.inventory_18() if layout == "18" else chafon.inventory_288(antenna=n % 2 + 1))
                host.read_until(lambda: _round_complete(decode, host.frames[done:]))  # noqa: B023
        finally:
            host.close()
        events = _events(decode, host.frames)
        assert reader.requests == 6 and not host.rejects
        assert isinstance(events[0], ReaderInfo)
        reads = [e for e in events if isinstance(e, TagRead)]
        truth = {(s.tag, s.antenna) for s in reader.population.stays()}
        assert reads and {(r.tag_hex, r.antenna) for r in reads} <= truth


def test_m100_unplug_and_replug_same_path_new_port(tmp_path):
    link = tmp_path / "by-id" / "usb-m100"
    with m100_reader.M100Reader(link, seed=6, rate_hz=100, arrive_p=0.5) as reader:
        host = Host(link, m100.Framer())
        host.write(*m100.start_commands())
        host.read_until(lambda: len(host.frames) >= 3)
        reader.unplug()
        assert not link.exists()
        _wait_for(lambda: not host.pump(), 5)  # the open port fails, like a USB adapter pulled
        host.close()
        reader.replug()
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")  # may reuse the number
        host = Host(link, m100.Framer())
        try:
            time.sleep(0.1)
            assert host.pump() and host.frames == []  # power-cycled: silent until started again
            host.write(*m100.start_commands())
            host.read_until(lambda: any(f[1] == 0x02 or f[2] == 0xFF for f in host.frames))
        finally:
            host.close()
