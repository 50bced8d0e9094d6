"""RFID end to end: reader emulators on pseudo-terminals → the gateway (a real `sdgw run` process)
→ InfluxDB → the API. Presence follows the emulators' ground truth, an unplugged reader comes back,
and no clear 125 kHz card number appears anywhere the gateway writes (issue 3)."""

from __future__ import annotations

import httpx
import pytest
from m100_reader import M100Reader
from rdm6300_reader import Rdm6300Reader

from gateway.localservers import free_port
from tests.harness import GatewayProcess, gateway_config, pseudonym_key_file, wait_for

pytestmark = pytest.mark.integration

CARDS = ["0F00AE70F3", "1A2B3C4D5E", "01000734E0"]
# SGTIN-96 item tags of one product (device-protocols.md §3.3 layout), plus one non-SGTIN EPC
EPCS = ["3074257BF7194E4000001A85", "3074257BF7194E4000001A86", "E2801160600002040000ABCD"]


def rfid_config(tmp_path, influxdb, api_port, key_file) -> str:
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    text = gateway_config(tmp_path, broker_port=1, sinks=[sink], cameras=[], api_port=api_port, heartbeat_s=60)
    lines = text.splitlines()
    text = "\n".join(lines[: lines.index("[mqtt]")] + lines[lines.index("[status]") :]) + "\n"
    return (
        text
        + f"""
[rfid]
depart_after_s = 1.0
summary_interval_s = 2.0
[privacy]
key_file = "{key_file}"
[[devices]]
id = "door-cards"
model = "rdm6300"
site = "shop-1"
transport = "serial"
port = "{tmp_path / "by-id" / "rdm6300"}"
[[devices]]
id = "shelf-1"
model = "m100"
site = "shop-1"
transport = "serial"
port = "{tmp_path / "by-id" / "m100"}"
"""
    )


def test_rfid_serial_readers_to_presence_api_with_unplug_and_privacy(tmp_path, influxdb):
    (tmp_path / "by-id").mkdir()
    key_file = pseudonym_key_file(tmp_path)
    api_port = free_port()
    cards = Rdm6300Reader(
        tmp_path / "by-id" / "rdm6300", CARDS, rate_hz=20, noise_ratio=0.05, arrive_p=0.3, depart_p=0.05
    )
    shelf = M100Reader(tmp_path / "by-id" / "m100", EPCS, rate_hz=20, noise_ratio=0.05, arrive_p=0.5, depart_p=0.0)
    gw = GatewayProcess(tmp_path, rfid_config(tmp_path, influxdb, api_port, key_file))
    op = gw.cli("keys", "create", "--role", "operator")
    assert op.returncode == 0, op.stderr
    auth = {"Authorization": f"Bearer {op.stdout.strip()}"}
    api = f"http://127.0.0.1:{api_port}"
    try:
        cards.start()
        shelf.start()
        gw.start()

        def present() -> set[str]:
            try:
                r = httpx.get(f"{api}/v1/rfid/readers/shelf-1/present", headers=auth, timeout=2)
            except httpx.TransportError:
                return set()
            return {i["epc"] for i in r.json()["items"]} if r.status_code == 200 else set()

        # the shelf keeps all three tags (depart_p = 0): the API shows them once they have arrived
        wait_for(lambda: present() == set(EPCS), timeout_s=30, what="all shelf tags present via the API")
        sgtin = httpx.get(f"{api}/v1/rfid/sightings", params={"gtin": "80614141123458"}, headers=auth).json()
        assert {s["epc"] for s in sgtin["sightings"]} == {EPCS[0], EPCS[1]}

        # unplug the shelf reader: its tags depart; replug: the reader is re-armed and they return
        shelf.unplug()
        wait_for(lambda: present() == set(), timeout_s=15, what="tags departed while unplugged")
        shelf.replug()
        wait_for(lambda: present() == set(EPCS), timeout_s=30, what="tags back after replug")
        assert "open again after" in gw.log_text()

        # cards were read (as pseudonyms)
        def card_points() -> int:
            rows = influxdb.rows('SELECT count("card") FROM rfid_presence', influxdb.db)
            return rows[0]["count"] if rows else 0

        wait_for(lambda: card_points() > 0, timeout_s=20, what="card presence points")
        metrics = httpx.get(f"{api}/metrics", headers=auth).text
        health = httpx.get(f"{api}/v1/health").text
        sightings = httpx.get(f"{api}/v1/rfid/sightings", params={"epc": EPCS[2]}, headers=auth).text
    finally:
        gw.stop()
        cards.stop()
        shelf.stop()

    # reduction: far fewer points than raw reads
    raw_reads = sum(shelf.reads_sent.values()) + sum(cards.reads_sent.values())
    points = influxdb.rows("SELECT count(*) FROM rfid_presence", influxdb.db)[0]
    n_points = max(v for k, v in points.items() if k.startswith("count_"))
    assert n_points * 5 < raw_reads, (n_points, raw_reads)

    # privacy: no clear card number anywhere the gateway wrote or answered
    dump = influxdb.query("SELECT * FROM /.*/", influxdb.db)
    log_db = b"".join(p.read_bytes() for p in tmp_path.glob("log.sqlite*"))
    outputs = [str(dump), gw.log_text(), metrics, health, sightings, gw.cli("buffer", "stats", "--json").stdout]
    read_cards = {s.tag for s in cards.population.stays()}
    assert read_cards, "the card reader saw no card"
    for card in CARDS:
        for text in outputs:
            assert card not in text and card.lower() not in text
        assert card.encode() not in log_db and card.lower().encode() not in log_db


def test_rfid_mqtt_json_reader_to_presence(tmp_path, mosquitto, influxdb):
    """A networked reader's JSON over MQTT → presence at its sub-reader → the API (same stage as serial)."""
    import paho.mqtt.publish as publish
    from rfid_mqtt_reader import reads_payload

    api_port = free_port()
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    cfg = gateway_config(tmp_path, broker_port=mosquitto.port, sinks=[sink], cameras=[], api_port=api_port)
    cfg += '[[devices]]\nid = "hub"\nmodel = "rfid-mqtt-json"\nsite = "shop-1"\ntopic = "rfid/hub/reads"\n'
    key_file = pseudonym_key_file(tmp_path)
    cfg += f'[rfid]\ndepart_after_s = 30\nsummary_interval_s = 5\n[privacy]\nkey_file = "{key_file}"\n'
    with GatewayProcess(tmp_path, cfg) as gw:
        op = gw.cli("keys", "create", "--role", "operator")
        auth = {"Authorization": f"Bearer {op.stdout.strip()}"}
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        reads = [{"epc": e, "antenna": 2, "rssi": -60, "count": 3} for e in EPCS[:2]]
        publish.single(
            "rfid/hub/reads", reads_payload("door-west", reads), qos=1, hostname="127.0.0.1", port=mosquitto.port
        )

        def present() -> list:
            r = httpx.get(f"http://127.0.0.1:{api_port}/v1/rfid/readers/hub/door-west/present", headers=auth, timeout=2)
            return r.json()["items"] if r.status_code == 200 else []

        items = wait_for(lambda: len(present()) == 2 and present(), timeout_s=20, what="two items present")
    assert {(i["epc"], i["antenna"], i["gtin"]) for i in items} == {
        (EPCS[0], 2, "80614141123458"),
        (EPCS[1], 2, "80614141123458"),
    }
