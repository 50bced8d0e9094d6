"""Cumulative counters through the pipeline: totals → non-negative footfall deltas, state carried in
the batch (committed with the records, D1) and restored by a new pipeline."""

from __future__ import annotations

import struct
from types import SimpleNamespace

from gateway.config import parse_config
from gateway.pipeline import COUNTERS_STATE_KEY, Arrival, Pipeline

CONFIG = """
[gateway]
district = "d"
street = "s"
id = "g"
[mqtt]
[[devices]]
id = "vs350-1"
model = "milesight-vs350"
topic = "lns/vs350-1/up"
"""


def totals(i: int, o: int) -> SimpleNamespace:
    payload = bytes.fromhex("04CC") + struct.pack("<HH", i, o)
    return SimpleNamespace(topic="lns/vs350-1/up", payload=payload)


def fields(batch) -> list[bytes]:
    return [r.head.split(b" ", 1)[1] for r in batch.records if r.measurement == "footfall"]


def test_pipeline_counter_totals_become_deltas_with_wrap_and_reset():
    cfg = parse_config(CONFIG)
    p = Pipeline(cfg)
    arrival = Arrival(1_700_000_000_000_000_000, 5_000, "boot", True)
    seeds = p.mqtt_batch([totals(300, 500)], arrival)
    assert fields(seeds) == []  # the first report only seeds the baseline
    b = p.mqtt_batch([totals(302, 501), totals(65_534, 501), totals(3, 502), totals(1, 0)], arrival)
    assert fields(b) == [
        b"entries=2i,exits=1i",
        b"entries=65232i,exits=0i",
        b"entries=5i,exits=1i",  # 65534 → 3 wrapped at 2^16
        b"entries=1i,exits=0i",  # a reset: counted from zero, never negative
    ]
    assert COUNTERS_STATE_KEY in b.state
    restored = Pipeline(cfg)
    restored.restore_state(b.state, "boot")
    assert fields(restored.mqtt_batch([totals(4, 2)], arrival)) == [b"entries=3i,exits=2i"]


def test_failed_commit_rolls_the_counter_state_back_so_the_redelivery_counts():
    """A batch whose commit failed is redelivered by the broker (no PUBACK): counted then, once."""
    p = Pipeline(parse_config(CONFIG))
    arrival = Arrival(1_700_000_000_000_000_000, 5_000, "boot", True)
    p.counters_committed(p.mqtt_batch([totals(100, 100)], arrival))
    lost = p.mqtt_batch([totals(110, 104)], arrival)
    assert fields(lost) == [b"entries=10i,exits=4i"]
    p.roll_back_counters()  # what MqttIngest does when the append fails
    again = p.mqtt_batch([totals(110, 104)], arrival)
    assert fields(again) == [b"entries=10i,exits=4i"]
    p.counters_committed(again)
    # a true repeat now: nothing more is counted (raw items carry no time: a zero delta, D4)
    assert fields(p.mqtt_batch([totals(110, 104)], arrival)) == [b"entries=0i,exits=0i"]
