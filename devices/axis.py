"""AXIS People Counter: the `live-sum.json` document — cumulative in/out totals of one counter.

Source: device-protocols.md §4.3 (restated from the AXIS People Counter VAPIX API page). The camera
answers `GET /local/tvpc/.api?live-sum.json` with

    {"serial": "00408CAC512B", "name": "Exit south", "timestamp": "20170503112756",
     "in": 12, "out": 318}

`in`/`out` are running totals that restart at the counter's reset (day roll-over or restart; the
reset time is not documented) — the gateway's counter processor finds the resets. The gateway
receives the document as an MQTT payload (a poller or the emulator publishes it as is).

`timestamp` is camera-local `YYYYMMDDhhmmss` with no zone: it is carried in `device_ts_ns` read as
if it were UTC, which orders and identifies reports (a re-sent document repeats it) but is off by
the camera's UTC offset — so the model is registered with device time not trusted, and the gateway
stamps receive time. `line` is the counter's `name` (the camera serves one counter).
Width unknown (JSON numbers): any decrease is a reset.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from devices.events import CounterTotals, Event, Reject, RejectReason

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_TOTAL = 2**63 - 1
NS = 1_000_000_000


def _local_as_utc_ns(text: object) -> int | None:
    if not isinstance(text, str) or len(text) != 14 or not text.isascii() or not text.isdigit():
        return None
    try:
        dt = datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(dt.timestamp()) * NS


def _total(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_TOTAL else None


def decode(payload: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One live-sum document → one CounterTotals."""
    del received_ns
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(RejectReason.OVERSIZE, f"{len(payload)} bytes", payload[:1024])
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = RejectReason.BAD_ENCODING if "utf-8" in str(exc).lower() else RejectReason.BAD_JSON
        return Reject(reason, str(exc)[:120], payload)
    if not isinstance(doc, dict) or "in" not in doc or "out" not in doc:
        return Reject(RejectReason.SCHEMA, "no in/out", payload)
    total_in, total_out = _total(doc["in"]), _total(doc["out"])
    if total_in is None or total_out is None:
        return Reject(RejectReason.SANITY, "in/out not a count", payload)
    name = doc.get("name")
    line = name if isinstance(name, str) and 0 < len(name) <= 64 else "counter"
    ts_ns = None
    if "timestamp" in doc:
        ts_ns = _local_as_utc_ns(doc["timestamp"])
        if ts_ns is None:
            return Reject(RejectReason.SCHEMA, "timestamp is not YYYYMMDDhhmmss", payload)
    return [CounterTotals(line, total_in, total_out, None, ts_ns)]
