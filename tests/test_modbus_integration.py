"""Modbus RTU people counters end to end: two counters on one emulated RS-485 line (a PTY) → `sdgw run`
polling them over the bus loop → InfluxDB. The footfall sums per (device, line, direction) equal the
emulator's ground truth of what can be counted, through a 16-bit wrap, a counter reboot (silent, then
totals restarted) and a midnight reset; a silent counter costs timeouts (counted in /metrics, logged
once when it goes silent and once when it is back) and does not stall the other counter on the line."""

from __future__ import annotations

import re
import time
from collections import Counter

import httpx
import pytest
from modbus_counter import ModbusCounterDevice

from gateway.localservers import InfluxDB1, free_port
from tests.harness import GatewayProcess, gateway_config, wait_for
from tests.influx_support import footfall_sums

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def config(tmp_path, influxdb: InfluxDB1, link, api_port: int) -> str:
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    text = gateway_config(tmp_path, broker_port=1, sinks=[sink], cameras=[], api_port=api_port)
    lines = text.splitlines()
    text = "\n".join(lines[: lines.index("[mqtt]")] + lines[lines.index("[status]") :]) + "\n"  # serial only
    common = f'model = "modbus-rtu-counter"\nsite = "shop-1"\ntransport = "serial"\nport = "{link}"\n'
    return (
        text
        + f"""
[[devices]]
id = "door-a"
{common}address = 1
poll_interval_s = 0.2
poll_timeout_s = 0.3
registers = {{ width_bits = 16, lines = [{{ line = "door", in = 0, out = 1 }}] }}
[[devices]]
id = "door-b"
{common}address = 2
poll_interval_s = 0.2
poll_timeout_s = 0.3
registers = {{ function = 4, width_bits = 32, word_order = "low_first", occupancy = 4, lines = [{{ line = "door", in = 0, out = 2 }}] }}
"""  # noqa: E501
    )


def metric(text: str, name: str, device: str) -> float:
    found = re.search(rf'^{name}\{{device="{device}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else -1.0


def test_modbus_counters_on_one_bus_to_influxdb_with_wrap_reboot_and_a_silent_unit(tmp_path, influxdb):
    link = tmp_path / "by-id" / "usb-rs485-counters"
    link.parent.mkdir()
    api_port = free_port()
    api = f"http://127.0.0.1:{api_port}"
    bus = ModbusCounterDevice(link, slave=1, lines={"door": (0, 1)}, start_total=65_450)
    a = bus
    b = bus.add_unit(
        slave=2, function=4, width_bits=32, low_word_first=True, lines={"door": (0, 2)}, occupancy_register=4
    )
    gw = GatewayProcess(tmp_path, config(tmp_path, influxdb, link, api_port))

    def walk(steps: int, *, a_counts: bool = True) -> None:
        for step in range(steps):
            if a_counts:  # a counter that is rebooting counts nobody
                a.cross("door", 9 + step % 4, 8 + step % 3)
            b.cross("door", 3 + step % 5, 2 + step % 2)
            b.occupancy = 10 + step % 7
            time.sleep(0.1)

    def polled_twice(unit) -> None:
        seen = unit.answers_whole
        wait_for(lambda: unit.answers_whole >= seen + 2, timeout_s=20, what=f"slave {unit.slave} polled twice")

    with bus:
        gw.start()
        try:
            wait_for(lambda: a.answers_whole >= 2 and b.answers_whole >= 2, timeout_s=30, what="both counters polled")
            walk(30)  # door-a passes 65,535 (a 16-bit wrap) and climbs well above what follows
            polled_twice(a)
            assert all(100 < a.totals.value(("door", d)) < 1000 for d in ("in", "out")), "both should have wrapped"

            a.reboot(silent=True)  # power cycle: silent for a while, totals restart from 0
            b_before = b.answers_whole
            walk(15, a_counts=False)
            assert b.answers_whole >= b_before + 3, "door-b must be polled while door-a is silent"
            a.silent = False
            polled_twice(a)

            b.silent = True  # door-b stops answering: its polls time out, door-a keeps its pace
            a_before = a.answers_whole
            walk(15)
            assert a.answers_whole >= a_before + 4, "door-a must be polled while door-b is silent"
            metrics = httpx.get(f"{api}/metrics", timeout=5).text
            assert metric(metrics, "sdgw_serial_poll_timeouts_total", "door-b") >= 3
            assert metric(metrics, "sdgw_serial_poll_answering", "door-b") == 0
            assert metric(metrics, "sdgw_serial_poll_answering", "door-a") == 1
            health = httpx.get(f"{api}/v1/health", timeout=5).json()
            assert "serial device door-b not answering" in health["reasons"]
            b.reset()  # its midnight passes while it is silent: what it counted meanwhile is gone
            b.silent = False
            walk(5)
            polled_twice(a)
            polled_twice(b)

            expected = Counter(
                {("door-a", line, d): n for (line, d), n in a.countable.items()}
                | {("door-b", line, d): n for (line, d), n in b.countable.items()}
            )
            got: list = []
            try:
                wait_for(lambda: got.append(footfall_sums(influxdb)) or got[-1] == expected, timeout_s=30, what="sums")
            except AssertionError:
                raise AssertionError(f"expected {dict(expected)}, got {dict(got[-1])}") from None
            metrics = httpx.get(f"{api}/metrics", timeout=5).text
        finally:
            gw.stop()

    assert a.totals.ambiguous == 0 and b.totals.ambiguous == 0  # every reset is visible to the rules
    # door-a was polled before it counted anyone and right before its reboot: nothing was unknowable;
    # door-b's crossings while it was silent were wiped by its reset before any poll could read them
    assert all(expected[("door-a", "door", d)] == a.truth[("door", d)] for d in ("in", "out"))
    assert all(expected[("door-b", "door", d)] < b.truth[("door", d)] for d in ("in", "out"))
    occupancy = influxdb.rows('SELECT last("people") FROM occupancy WHERE "device" = \'door-b\'', influxdb.db)
    assert occupancy and occupancy[0]["last"] == b.occupancy
    for device in ("door-a", "door-b"):
        assert metric(metrics, "sdgw_serial_poll_mismatched_total", device) >= 0
        assert metric(metrics, "sdgw_serial_poll_answers_total", device) >= 10
        assert metric(metrics, "sdgw_serial_poll_requests_total", device) >= metric(
            metrics, "sdgw_serial_poll_answers_total", device
        )
    log = gw.log_text()
    for device in ("door-a", "door-b"):
        assert log.count(f"{device} silent") == 1, log
        assert log.count(f"{device} answering again") == 1, log
