"""Fill InfluxDB the way a street does, for the dashboard and fleet tests: a real `sdgw run` per
gateway fed by the device emulators over MQTT — VIVOTEK counters → `footfall` (today and on the same
weekday last week), a Milesight sensor → `occupancy`, a networked RFID reader → `rfid_presence`, an
Open-Locker MQTT bank → the `locker_*` measurements (deposits, a pickup, a remote open through the
gateway's API, a forced open left open, the bank's Last Will), and the heartbeat → `gateway_health`.
Nothing is written to InfluxDB except by the gateways."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from locker_mqtt_bank import MqttLockerBank
from milesight_json_counter import Street as MilesightStreet
from mqtt_out import publish_all
from rfid_mqtt_reader import ReaderFleet
from vivotek_counter import Street as VivotekStreet

from tests.harness import gateway_config

S = 1_000_000_000
DAY = 86_400
DISTRICT = "test-district"  # what tests/harness.py gateway_config writes
LEFT_OPEN_S = 1.5  # [lockers] door_left_open_s of the test gateways


@dataclass(frozen=True)
class StreetGateway:
    gateway_id: str
    street: str

    @property
    def cameras(self) -> list[str]:
        return [f"{self.gateway_id}-cam-1", f"{self.gateway_id}-cam-2"]

    @property
    def locker_uuid(self) -> str:
        return f"{self.gateway_id}-lockers"

    @property
    def bank(self) -> str:
        return f"{self.gateway_id}-bank-a"

    @property
    def shop(self) -> str:
        """The street's shop the counters count for (site ids are district-wide)."""
        return f"shop-{self.gateway_id}"


def street_config(
    root: Path, gw: StreetGateway, *, broker_port: int, influx_url: str, database: str, key_file: Path, api_port: int
) -> str:
    sink = {"name": "edge", "url": influx_url, "dialect": "v1", "database": database, "flush_interval_s": 0.1}
    text = gateway_config(
        root,
        broker_port=broker_port,
        sinks=[sink],
        cameras=gw.cameras,
        topic_template=f"{gw.gateway_id}/vivotek/{{camera}}/report",
        gateway_id=gw.gateway_id,
        street=gw.street,
        heartbeat_s=1,
        api_port=api_port,
    )
    # the harness names its one site "shop-1": make it this street's own shop
    text = text.replace('id = "shop-1"', f'id = "{gw.shop}"').replace('site = "shop-1"', f'site = "{gw.shop}"')
    return text + (
        f"""
[rfid]
depart_after_s = 1.0
summary_interval_s = 2.0
[privacy]
key_file = "{key_file}"
[lockers]
door_left_open_s = {LEFT_OPEN_S}
[[sites]]
id = "entrance-north"
merchant = "district"
[[devices]]
id = "{gw.gateway_id}-vs121"
model = "milesight-vs1xx-json"
site = "entrance-north"
topic = "{gw.gateway_id}/milesight/+/people"
[[devices]]
id = "{gw.gateway_id}-rfid"
model = "rfid-mqtt-json"
site = "{gw.shop}"
topic = "{gw.gateway_id}/rfid/+/reads"
[[sites]]
id = "parcel-point-{gw.gateway_id}"
merchant = "district"
[[devices]]
id = "{gw.locker_uuid}"
model = "open-locker-mqtt"
site = "parcel-point-{gw.gateway_id}"
topic = "locker/{gw.locker_uuid}/#"
[devices.locker]
bank = "{gw.bank}"
compartments = 4
"""
    )


@dataclass
class Published:
    footfall_points: int  # distinct (camera, rule, interval) points, today and last week
    entries_today: int
    entries_last_week: int  # same weekday, same window
    occupancy_reports: int
    rfid_messages: int


def _today_start(now_s: int, back_s: int) -> int:
    """The first minute to report from: `back_s` ago, but not before midnight UTC (the dashboards'
    "today" is in the browser's zone, UTC here)."""
    minute = now_s - now_s % 60
    return max(now_s - now_s % DAY, minute - back_s)


def publish_street(broker_port: int, gw: StreetGateway, *, seed: int = 1) -> Published:
    """Everything one street's devices send, in the past half hour (and the counters also a week ago)."""
    now_s = int(time.time())
    start = _today_start(now_s, 30 * 60)
    intervals = max(1, (now_s - now_s % 60 - start) // 60)
    rules = ("entrance-main", "entrance-side")
    points = 0
    entries = []
    for offset in (0, 7 * DAY):
        counters = VivotekStreet(
            cameras=gw.cameras,
            topic_template=f"{gw.gateway_id}/vivotek/{{camera}}/report",
            rules=rules,
            interval_s=60,
            start_s=start - offset,
            seed=seed + offset,
            max_per_interval=12,
        )
        n = intervals * len(gw.cameras)
        assert publish_all("127.0.0.1", broker_port, counters.messages(n)) == n
        points += n * len(rules)
        entries.append(sum(v for (_, _, way), v in counters.truth.items() if way == "in"))
    sensor = MilesightStreet(
        sensors=[f"{gw.gateway_id}-vs121"],
        topic_template=f"{gw.gateway_id}/milesight/{{sensor}}/people",
        interval_s=60,
        start_s=now_s - now_s % 60 - 20 * 60,
        seed=seed,
    )
    assert publish_all("127.0.0.1", broker_port, sensor.messages(19)) == 19
    readers = ReaderFleet(
        ["door", "shelf"],
        tags=8,
        topic_template=f"{gw.gateway_id}/rfid/{{reader}}/reads",
        start_ms=time.time_ns() // 1_000_000 - 60_000,
        seed=seed,
    )
    assert publish_all("127.0.0.1", broker_port, readers.messages(12)) == 12
    return Published(points, entries[0], entries[1], 19, 12)


def drive_locker_bank(broker_port: int, gw: StreetGateway, api_port: int, operator_key: str) -> None:
    """A short day of the street's locker bank: two deposits and a pickup at the terminal, a remote
    open through the gateway's API (confirmed by the bank), a door forced and left open past
    `door_left_open_s` then closed, and finally the bank's connection lost (its Last Will)."""
    bank = MqttLockerBank(
        port=broker_port, locker_uuid=gw.locker_uuid, compartments=4, heartbeat_s=1.0, hold_s=0.3, seed=len(gw.street)
    ).start()
    try:
        bank.courier_deposit(1)
        bank.courier_deposit(2)
        time.sleep(0.5)
        bank.customer_pickup(1)
        r = httpx.post(
            f"http://127.0.0.1:{api_port}/v1/lockers/{gw.bank}/compartments/4/open",
            json={"reason": "dashboard test"},
            headers={"Authorization": f"Bearer {operator_key}"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        bank.force_open(3)
        time.sleep(LEFT_OPEN_S + 1.0)
        bank.close_door(3)
        time.sleep(0.5)
    finally:
        bank.crash()


def count(influx, q: str) -> int:
    try:
        rows = influx.rows(q, influx.db)
    except (httpx.HTTPError, RuntimeError):
        return -1
    return int(rows[0]["n"]) if rows else 0


def street_data_landed(influx, gw: StreetGateway, published: Published) -> bool:
    """Every counter point, some occupancy, departures and a heartbeat of `gw` are in InfluxDB."""
    where = f"WHERE \"gateway\" = '{gw.gateway_id}'"
    return (
        count(influx, f'SELECT count("entries") AS n FROM "footfall" {where}') == published.footfall_points
        and count(influx, f'SELECT count("people") AS n FROM "occupancy" {where}') > 0
        and count(influx, f'SELECT count("reads") AS n FROM "rfid_presence" {where} AND "event" = \'depart\'') > 0
        and count(influx, f'SELECT count("uptime_s") AS n FROM "gateway_health" {where}') > 0
        and count(influx, f'SELECT count("dwell_s") AS n FROM "locker_parcel" {where}') > 0  # the pickup
        and count(influx, f'SELECT count("is_active") AS n FROM "locker_alarm" {where}') >= 3  # forced, left open
        and count(influx, f'SELECT count("is_online") AS n FROM "locker_controller" {where}') > 0  # Last Will
        and count(influx, f'SELECT count("outcome") AS n FROM "locker_command" {where} AND "outcome" = \'confirmed\'')
        > 0
    )
