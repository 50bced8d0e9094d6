"""Milesight VS1xx Ethernet/Wi-Fi sensors (VS121-P …): "Region People Counting" JSON push over MQTT.

Source: device-protocols.md §4.2 (restated from Milesight's VS121-P communication-protocol page):

    {"event": "Region People Counting", "report_type": "interval",
     "device_info": {"device": "Workplace Sensor", "device_sn": "369362028335", ...},
     "time_info": {"timezone": "UTC+8:00", "dst_status": false,
                   "start_time": "2022/12/20 18:15:52", "end_time": "2022/12/20 19:15:52"},
     "current_total": 10, "max_counted": 12, "total_mapped_regions": 2,
     "numbering_regions": [1, 2], "current_counted": [5, 5], "occupancy": [1, 0]}

Keys are matched case-insensitively (the vendor's own sample writes `Max_counted`). Times are local
wall-clock `YYYY/MM/DD HH:MM:SS` with the zone given apart as `UTC±H[:MM]`; with `dst_status` true
one hour is added to that offset (assumed: the page does not say whether the zone already includes
DST). The snapshot is the state at `end_time` (trigger reports without it: the payload's only time,
else none). A `snapshot` image (HTTP pushes) is never read or kept: the payload is dropped whole
after decoding, and no event has room for it. The published sample is not strictly JSON (comments,
a missing comma): such a document is rejected as `bad_json`, counted and dead-lettered.

Events: OccupancySnapshot (current_total; regions from `occupancy`, bit i = region i + 1),
PeopleMax (max_counted), RegionPeople per region with a `current_counted` value. Other `event`
kinds are rejected as unsupported (their shapes are not in the doc).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import orjson

from devices.events import Event, OccupancySnapshot, PeopleMax, RegionPeople, Reject, RejectReason

MAX_PAYLOAD_BYTES = 256 * 1024  # a snapshot image may ride along; we drop it
MAX_PEOPLE = 10_000
MAX_REGIONS = 64
NS = 1_000_000_000

_ZONE = re.compile(r"UTC(?:([+-])(\d{1,2})(?::?(\d\d))?)?", re.ASCII)


def _lower_keys(value: object, depth: int = 0) -> object:
    if depth > 8:
        return None
    if isinstance(value, dict):
        return {k.lower(): _lower_keys(v, depth + 1) for k, v in value.items() if k.lower() != "snapshot"}
    if isinstance(value, list):
        return [_lower_keys(v, depth + 1) for v in value]
    return value


def _offset(time_info: dict) -> timezone | None:
    m = _ZONE.fullmatch(time_info.get("timezone", "")) if isinstance(time_info.get("timezone"), str) else None
    if m is None:
        return None
    minutes = int(m[2] or 0) * 60 + int(m[3] or 0)
    if minutes > 14 * 60 or int(m[3] or 0) >= 60:
        return None
    signed = -minutes if m[1] == "-" else minutes
    if time_info.get("dst_status") is True:
        signed += 60  # summer time moves the local clock forward
    return timezone(timedelta(minutes=signed))


def _local_ns(text: object, zone: timezone) -> int | None:
    if not isinstance(text, str) or len(text) != 19:
        return None
    try:
        dt = datetime.strptime(text, "%Y/%m/%d %H:%M:%S").replace(tzinfo=zone)
    except ValueError:
        return None
    return int(dt.astimezone(UTC).timestamp()) * NS


def _count(value: object, limit: int = MAX_PEOPLE) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= limit else None


def decode(payload: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One Region People Counting document → occupancy gauges."""
    del received_ns
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(RejectReason.OVERSIZE, f"{len(payload)} bytes", payload[:1024])
    try:
        raw_doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = RejectReason.BAD_ENCODING if "utf-8" in str(exc).lower() else RejectReason.BAD_JSON
        return Reject(reason, str(exc)[:120], payload)
    doc = _lower_keys(raw_doc)
    if not isinstance(doc, dict):
        return Reject(RejectReason.SCHEMA, "not an object", payload)
    event = doc.get("event")
    if not isinstance(event, str):
        return Reject(RejectReason.SCHEMA, "no event name", payload)
    if event.lower() != "region people counting":
        return Reject(RejectReason.UNSUPPORTED, f"event {event[:40]!r}", payload)

    time_info = doc.get("time_info")
    ts_ns: int | None = None
    if isinstance(time_info, dict):
        zone = _offset(time_info)
        if zone is None:
            return Reject(RejectReason.SCHEMA, "time_info.timezone is not UTC±H:MM", payload)
        for key in ("end_time", "start_time", "time"):
            if key in time_info:
                ts_ns = _local_ns(time_info[key], zone)
                if ts_ns is None:
                    return Reject(RejectReason.SCHEMA, f"time_info.{key} is not YYYY/MM/DD HH:MM:SS", payload)
                break

    people = _count(doc.get("current_total"))
    if people is None:
        return Reject(RejectReason.SANITY if "current_total" in doc else RejectReason.SCHEMA, "current_total", payload)
    numbers = doc.get("numbering_regions", [])
    occupancy = doc.get("occupancy")
    counted = doc.get("current_counted")
    if not isinstance(numbers, list) or len(numbers) > MAX_REGIONS:
        return Reject(RejectReason.SCHEMA, "numbering_regions is not a list", payload)
    regions = [_count(n, MAX_REGIONS) for n in numbers]
    if any(r is None or r == 0 for r in regions):
        return Reject(RejectReason.SANITY, "a region number outside 1..64", payload)
    for name, values in (("occupancy", occupancy), ("current_counted", counted)):
        if values is not None and (not isinstance(values, list) or len(values) != len(regions)):
            return Reject(RejectReason.SCHEMA, f"{name} does not match numbering_regions", payload)

    region_count = _count(doc.get("total_mapped_regions"), MAX_REGIONS)
    mask: int | None = None
    if occupancy is not None:
        mask = 0
        for region, flag in zip(regions, occupancy, strict=True):
            if flag not in (0, 1) or isinstance(flag, bool):
                return Reject(RejectReason.SANITY, "occupancy values are not 0/1", payload)
            mask |= flag << (region - 1)  # type: ignore[operator]
        region_count = region_count if region_count is not None else len(regions)
    events: list[Event] = [OccupancySnapshot(people, region_count, mask, ts_ns)]
    if "max_counted" in doc:
        people_max = _count(doc["max_counted"])
        if people_max is None:
            return Reject(RejectReason.SANITY, "max_counted", payload)
        events.append(PeopleMax(people_max, ts_ns))
    for region, value in zip(regions, counted or (), strict=False):
        n = _count(value)
        if n is None:
            return Reject(RejectReason.SANITY, "current_counted values", payload)
        events.append(RegionPeople(region, n, ts_ns))  # type: ignore[arg-type]
    return events
