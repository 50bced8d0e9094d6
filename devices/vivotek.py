"""VIVOTEK SC8131 3D people counter — "Report Push" JSON with per-interval deltas.

Source: device-protocols.md §4.4 (restated from the SC8131 user manual §3-6 "Report Push").
The camera pushes one JSON document per report interval (1 min … 1 day, aligned to 00:00):

    {"Source": {"UtcTime": "2015-05-28T06:30:01Z", "ModelName": "SC8131",
                "MacAddress": "00:02:81:31:00:08", ...},
     "Data": [{"RuleType": "Counting", "CountingInfo": [
        {"RuleName": "Counting1", "In": 1, "Out": 2,
         "StartTime": "2015-05-28T06:15:00Z", "EndTime": "2015-05-28T06:30:00Z"}]}]}

`In`/`Out` are deltas for [StartTime, EndTime), times in UTC. Zero buckets are sent unless the
camera's "Lite" mode is on. A bucket may be re-sent after a retry: its identity is
(device, RuleName, StartTime) (decisions.md D12), so the log and InfluxDB both absorb the repeat.
Entries of other rule types (e.g. zone dwell) are skipped, not rejected.
"""

from __future__ import annotations

import functools
from datetime import datetime

import orjson

from devices.events import CounterInterval, Event, Reject, RejectReason

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_COUNT = 1_000_000  # per interval: far above any doorway, far below a corrupted value


def _utc_ns(text: object) -> int | None:
    """RFC 3339 UTC ('…Z' or an explicit offset) → ns since the epoch; None when unparseable."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    return _parse_utc(text)


@functools.lru_cache(maxsize=1024)
def _parse_utc(text: str) -> int | None:
    # cached: every camera of a street reports the same interval bounds, and a report's EndTime is
    # the next report's StartTime — parsing was a quarter of the decode
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00", 1) if text.endswith("Z") else text)
    except ValueError:
        return None
    if dt.tzinfo is None:  # the manual's reports are always UTC; a zone-less time is ambiguous
        return None
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_COUNT else None


def decode(payload: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One report document → one CounterInterval per counting line and interval."""
    del received_ns  # the report carries its own interval times
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(RejectReason.OVERSIZE, f"{len(payload)} bytes", payload[:1024])
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = RejectReason.BAD_ENCODING if "utf-8" in str(exc).lower() else RejectReason.BAD_JSON
        return Reject(reason, str(exc)[:120], payload)
    if not isinstance(doc, dict) or not isinstance(doc.get("Data"), list):
        return Reject(RejectReason.SCHEMA, "no Data list", payload)

    events: list[Event] = []
    for rule in doc["Data"]:
        if not isinstance(rule, dict):
            return Reject(RejectReason.SCHEMA, "Data entry is not an object", payload)
        if rule.get("RuleType") != "Counting":
            continue
        infos = rule.get("CountingInfo")
        if not isinstance(infos, list):
            return Reject(RejectReason.SCHEMA, "CountingInfo is not a list", payload)
        for info in infos:
            if not isinstance(info, dict):
                return Reject(RejectReason.SCHEMA, "CountingInfo entry is not an object", payload)
            line = info.get("RuleName")
            if not isinstance(line, str) or not line or len(line) > 64:
                return Reject(RejectReason.SCHEMA, "RuleName missing or not a short string", payload)
            entries, exits = _count(info.get("In")), _count(info.get("Out"))
            if entries is None or exits is None:
                return Reject(RejectReason.SANITY, "In/Out not a count in range", payload)
            start_ns, end_ns = _utc_ns(info.get("StartTime")), _utc_ns(info.get("EndTime"))
            if start_ns is None or end_ns is None:
                return Reject(RejectReason.SCHEMA, "StartTime/EndTime not RFC 3339 UTC", payload)
            if end_ns <= start_ns:
                return Reject(RejectReason.SANITY, "EndTime not after StartTime", payload)
            events.append(CounterInterval(line, entries, exits, start_ns, end_ns))
    return events
