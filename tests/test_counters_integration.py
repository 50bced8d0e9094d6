"""Cumulative and per-period people counters end to end: emulator → Mosquitto → `sdgw run` → InfluxDB.

The sums per (device, line, direction) in InfluxDB must equal what a correct gateway can count from
what the emulator delivered (its `countable` ground truth), through wraps, midnight resets, reboots,
lost uplinks, broker duplicates, stale re-deliveries and garbage — and through SIGKILLs of the
gateway in the middle of the stream, which is where the counter state committed with the records
(decisions.md D1) earns its keep: a redelivered report after a restart must not count twice, and a
report after the restart must not be taken for a reset.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from axis_counter import Street as AxisStreet
from milesight_counter import Street as MilesightStreet
from mqtt_out import publish_all

from gateway.localservers import InfluxDB1
from tests.harness import GatewayProcess, gateway_config, wait_for
from tests.influx_support import footfall_sums

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def sink(server: InfluxDB1) -> dict:
    return {"name": "edge", "url": server.url, "dialect": "v1", "database": server.db, "flush_interval_s": 0.1}


def device_tables(model: str, topics: dict[str, str]) -> str:
    return "".join(
        f'[[devices]]\nid = "{dev}"\nmodel = "{model}"\nsite = "shop-1"\ntopic = "{topic}"\n'
        for dev, topic in topics.items()
    )


def dead_letters(gw: GatewayProcess) -> int:
    out = gw.cli("buffer", "stats", "--json")
    import orjson

    return orjson.loads(out.stdout)["dead_letters"]


def run_street(tmp_path, mosquitto, influxdb, model: str, street, count: int, *, kills: int, rate: float) -> Counter:
    """Publish `count` reports at `rate`/s while the gateway is SIGKILLed `kills` times; the sums."""
    names = getattr(street, "devices", None) or street.cameras
    topics = {n: street.topic(n) for n in names}
    cfg = gateway_config(
        tmp_path, broker_port=mosquitto.port, sinks=[sink(influxdb)], cameras=[], extra=device_tables(model, topics)
    )
    gw = GatewayProcess(tmp_path, cfg)
    gw.start()
    try:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=20, what="gateway connected")
        acked: list[int] = []
        messages = list(street.messages(count))
        pub = threading.Thread(
            target=lambda: acked.append(publish_all("127.0.0.1", mosquitto.port, iter(messages), rate=rate)),
            daemon=True,
        )
        pub.start()
        for _ in range(kills):
            time.sleep(count / rate / (kills + 1))
            gw.kill()
            time.sleep(0.3)
            gw.start()
        pub.join(90)
        assert acked == [len(messages)]
        expected = +street.countable
        wait_for(lambda: +footfall_sums(influxdb) == expected, timeout_s=60, what="InfluxDB sums = countable truth")
        time.sleep(1.0)  # a late redelivery counted twice would show now
        return +footfall_sums(influxdb)
    finally:
        gw.stop()


def test_milesight_vs350_totals_with_wrap_duplicates_and_sigkills(tmp_path, mosquitto, influxdb):
    street = MilesightStreet(
        devices=["ms-01", "ms-02", "ms-03"],
        model="vs350",
        style="totals",
        start_total=65_000,  # uint16 totals wrap within the run
        midnight_reset=False,
        interval_s=600,
        duplicate_ratio=0.2,
        stale_ratio=0.1,
        loss_ratio=0.1,
        garbage_ratio=0.05,
        seed=11,
    )
    got = run_street(tmp_path, mosquitto, influxdb, "milesight-vs350", street, 600, kills=2, rate=200)
    assert street.totals.ambiguous == 0
    assert got == +street.countable
    assert all(got[k] <= street.truth[k] for k in street.truth)


def test_milesight_vs133_period_and_totals_three_lines_with_reboots(tmp_path, mosquitto, influxdb):
    street = MilesightStreet(
        devices=["ms-a", "ms-b"],
        model="vs133",
        lines=3,
        style="both",
        interval_s=3600,  # two days: midnight resets in the counters' local time
        reboot_ratio=0.03,
        duplicate_ratio=0.2,
        loss_ratio=0.1,
        seed=2,  # the first totals uplink of ms-b is lost: its first period counts
    )
    got = run_street(tmp_path, mosquitto, influxdb, "milesight-vs133", street, 96, kills=1, rate=40)
    assert street.totals.ambiguous == 0
    assert got == +street.countable
    assert {line for (_d, line, _dir) in got} == {"line_1", "line_2", "line_3"}


def test_axis_totals_with_midnight_resets_duplicates_and_garbage(tmp_path, mosquitto, influxdb):
    street = AxisStreet(
        cameras=["ax-1", "ax-2"], interval_s=600, duplicate_ratio=0.3, stale_ratio=0.2, garbage_ratio=0.1, seed=5
    )
    got = run_street(tmp_path, mosquitto, influxdb, "axis-people-counter", street, 400, kills=1, rate=150)
    assert street.totals.ambiguous == 0
    assert got == +street.countable
    assert sum(street.countable.values()) < sum(street.truth.values())  # midnight resets cost something
