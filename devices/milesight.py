"""Milesight LoRaWAN people counters VS133/VS135, VS350 and VS121: binary uplinks via the LNS's MQTT.

Source: device-protocols.md §4.1 (restated from Milesight-IoT/SensorDecoders READMEs and decoders).

Payload: a run of items with no lengths; the (id, type) pair fixes each item's size, so an unknown
pair, a short item or a value the device cannot send ends decoding — the items before it are kept
and one `RejectedTail` is appended (nothing decoded: one Reject instead). The same id means
different things per model, so each model has its own table keyed by (id, type). Integers are
little-endian, except the VS121 region mask (big-endian).

    offset  width  field
    0       1      channel id
    1       1      channel type
    2       n      data, n fixed by (id, type) per the model's table below

VS133/VS135: 03/06/09/0C D2 uint32 line 1–4 total in; 04/07/0A/0D D2 uint32 total out;
05/08/0B/0E CC uint16 in + uint16 out per period; 0F E3 4 × uint8 people in regions 1–4;
10 E4 region uint8 + two uint16 dwell values (unit not documented: consumed, not emitted).
VS350: 01 75 battery %; 03 67 int16 °C × 10; 04 CC uint16 totals in/out (wrap at 65 536);
05 CC uint16 period in/out; 83/84/85 as 03/04/05 plus a raw alarm code byte; 20 CE history:
uint32 Unix s + uint8 data_type + uint16 period in/out [+ uint16 totals in/out iff data_type 1].
VS121: 04 C9 people uint8 + region_count uint8 + region mask uint16 BIG-endian; 05 CC int16
periodic in/out (the decoder reads them signed; a negative one is rejected); 06 CD uint8 people max;
0D CC uint16 accumulated in/out.

Worked example (P3, VS350): 01 75 50 | 03 67 F6 FF | 04 CC 2C 01 F4 01 → battery 80 %,
temperature 0xFFF6 = −10 → −1.0 °C, totals in 300, out 500.

MQTT envelope. An LNS publishes uplinks either as the raw bytes or as JSON with the bytes in base64:
a payload whose first byte is `{` is an envelope (no item id here is 0x7B), anything else is the raw
item stream. Envelope keys: ChirpStack v3/v4 `data` with time `time`; The Things Stack v3
`uplink_message.frm_payload` with time `received_at` (top level, else inside `uplink_message`).
The envelope's time is the network server's receive time of that uplink: stable across broker
re-deliveries, so it is each item's `device_ts_ns` (VS350 history items keep their own timestamp).
Raw bytes carry no time: `device_ts_ns` is None and the gateway stamps receive time.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from devices.events import (
    CounterPeriod,
    CounterStatus,
    CounterTotals,
    Event,
    OccupancySnapshot,
    PeopleMax,
    RegionPeople,
    Reject,
    RejectedTail,
    RejectReason,
    ThresholdAlarm,
)

MAX_ENVELOPE_BYTES = 64 * 1024
MAX_ITEMS_BYTES = 1024  # LoRaWAN application payloads are at most 242 bytes
NS = 1_000_000_000


class _Stop(Exception):
    """Inside one item: the item cannot be decoded (caught in `_items`, never escapes)."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        self.reason, self.detail = reason, detail


def _u(data: bytes, at: int, n: int) -> int:
    return int.from_bytes(data[at : at + n], "little")


def _s16(data: bytes, at: int) -> int:
    return int.from_bytes(data[at : at + 2], "little", signed=True)


def _line(n: int) -> str:
    return f"line_{n}"


# An item parser: (data bytes of the item, time of the uplink or None) → events.
Parse = Callable[[bytes, int | None], list[Event]]


def _total_in(n: int) -> Parse:
    return lambda d, ts: [CounterTotals(_line(n), _u(d, 0, 4), None, 32, ts)]


def _total_out(n: int) -> Parse:
    return lambda d, ts: [CounterTotals(_line(n), None, _u(d, 0, 4), 32, ts)]


def _period(n: int) -> Parse:
    return lambda d, ts: [CounterPeriod(_line(n), _u(d, 0, 2), _u(d, 2, 2), ts)]


def _totals16(n: int) -> Parse:
    return lambda d, ts: [CounterTotals(_line(n), _u(d, 0, 2), _u(d, 2, 2), 16, ts)]


def _regions4(d: bytes, ts: int | None) -> list[Event]:
    return [RegionPeople(i + 1, d[i], ts) for i in range(4)]


def _battery(d: bytes, ts: int | None) -> list[Event]:
    if d[0] > 100:
        raise _Stop(RejectReason.SANITY, f"battery {d[0]} %")
    return [CounterStatus(d[0], None, ts)]


def _temperature(d: bytes, ts: int | None) -> list[Event]:
    return [CounterStatus(None, _s16(d, 0) / 10, ts)]


def _with_alarm(parse: Parse, subject: str, at: int) -> Parse:
    return lambda d, ts: [*parse(d, ts), ThresholdAlarm(subject, d[at], ts)]


def _history(d: bytes, ts: int | None) -> list[Event]:
    del ts  # each record carries its own time
    record_ts = _u(d, 0, 4) * NS
    out: list[Event] = [CounterPeriod(_line(1), _u(d, 5, 2), _u(d, 7, 2), record_ts)]
    if d[4] == 1:
        out.append(CounterTotals(_line(1), _u(d, 9, 2), _u(d, 11, 2), 16, record_ts))
    return out


def _history_size(rest: bytes) -> int:
    """Body size from data_type (the 5th body byte): 9 for type 0, 13 for type 1, else stop."""
    if len(rest) < 5:
        raise _Stop(RejectReason.LENGTH, "history item truncated")
    if rest[4] not in (0, 1):
        raise _Stop(RejectReason.SANITY, f"history data_type {rest[4]}")
    return 9 if rest[4] == 0 else 13


def _vs121_people(d: bytes, ts: int | None) -> list[Event]:
    regions = d[1]
    if regions > 16:
        raise _Stop(RejectReason.SANITY, f"{regions} regions (mask holds 16)")
    mask = int.from_bytes(d[2:4], "big") & ((1 << regions) - 1)  # the one big-endian field (§4.1)
    return [OccupancySnapshot(d[0], regions, mask, ts)]


def _vs121_passing(d: bytes, ts: int | None) -> list[Event]:
    entries, exits = _s16(d, 0), _s16(d, 2)
    if entries < 0 or exits < 0:
        raise _Stop(RejectReason.SANITY, "negative periodic in/out")
    return [CounterPeriod(_line(1), entries, exits, ts)]


def _dwell_unit_unknown(d: bytes, ts: int | None) -> list[Event]:
    return []  # the README gives no unit for the dwell values: decoded past, not reported


# (id, type) → (data size: bytes, or a function of the remaining bytes; parser)
Table = dict[tuple[int, int], tuple[int | Callable[[bytes], int], Parse]]

VS133: Table = {
    **{(0x03 + 3 * k, 0xD2): (4, _total_in(k + 1)) for k in range(4)},
    **{(0x04 + 3 * k, 0xD2): (4, _total_out(k + 1)) for k in range(4)},
    **{(0x05 + 3 * k, 0xCC): (4, _period(k + 1)) for k in range(4)},
    (0x0F, 0xE3): (4, _regions4),
    (0x10, 0xE4): (5, _dwell_unit_unknown),
}
VS350: Table = {
    (0x01, 0x75): (1, _battery),
    (0x03, 0x67): (2, _temperature),
    (0x04, 0xCC): (4, _totals16(1)),
    (0x05, 0xCC): (4, _period(1)),
    (0x83, 0x67): (3, _with_alarm(_temperature, "temperature", 2)),
    (0x84, 0xCC): (5, _with_alarm(_totals16(1), "total", 4)),
    (0x85, 0xCC): (5, _with_alarm(_period(1), "period", 4)),
    (0x20, 0xCE): (_history_size, _history),
}
VS121: Table = {
    (0x04, 0xC9): (4, _vs121_people),
    (0x05, 0xCC): (4, _vs121_passing),
    (0x06, 0xCD): (1, lambda d, ts: [PeopleMax(d[0], ts)]),
    (0x0D, 0xCC): (4, _totals16(1)),
}


def _items(data: bytes, table: Table, uplink_ns: int | None, raw: bytes) -> list[Event] | Reject:
    events: list[Event] = []
    pos = 0
    try:
        while pos < len(data):
            if pos + 2 > len(data):
                raise _Stop(RejectReason.LENGTH, f"lone byte 0x{data[pos]:02X} at the end")
            key = (data[pos], data[pos + 1])
            entry = table.get(key)
            if entry is None:
                raise _Stop(RejectReason.UNSUPPORTED, f"unknown item {key[0]:02X} {key[1]:02X}")
            size_of, parse = entry
            rest = data[pos + 2 :]
            size = size_of if isinstance(size_of, int) else size_of(rest)
            if len(rest) < size:
                raise _Stop(RejectReason.LENGTH, f"item {key[0]:02X} {key[1]:02X} truncated")
            events.extend(parse(rest[:size], uplink_ns))
            pos += 2 + size
    except _Stop as stop:
        if pos == 0:
            return Reject(stop.reason, stop.detail, raw)
        return [*_merged(events), RejectedTail(stop.reason, stop.detail, pos)]
    return _merged(events)


def _merged(events: list[Event]) -> list[Event]:
    """One CounterTotals per (line, time) and one CounterStatus per time: the VS133 sends a line's
    in and out totals as two items, the VS350 battery and temperature as two."""
    out: list[Event] = []
    index: dict[tuple, int] = {}
    for ev in events:
        if isinstance(ev, CounterTotals):
            key: tuple = ("totals", ev.line, ev.device_ts_ns)
        elif isinstance(ev, CounterStatus):
            key = ("status", ev.device_ts_ns)
        else:
            out.append(ev)
            continue
        at = index.get(key)
        if at is None:
            index[key] = len(out)
            out.append(ev)
            continue
        given = {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev) if getattr(ev, f.name) is not None}
        out[at] = dataclasses.replace(out[at], **given)
    return out


_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", re.ASCII)


def rfc3339_ns(text: object) -> int | None:
    """RFC 3339 with a zone (fraction up to ns, as ChirpStack prints) → ns since the epoch."""
    if not isinstance(text, str) or len(text) > 40:
        return None
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    zone = "+00:00" if m[3] == "Z" else m[3]
    try:
        dt = datetime.fromisoformat(m[1] + zone)
    except ValueError:
        return None
    return int(dt.astimezone(UTC).timestamp()) * NS + int((m[2] or "0").ljust(9, "0"))


def _unwrap(payload: bytes) -> tuple[bytes, int | None] | Reject:
    """The item bytes and the uplink's time from a raw payload or an LNS JSON envelope."""
    if not payload.startswith(b"{"):
        if len(payload) > MAX_ITEMS_BYTES:
            return Reject(RejectReason.OVERSIZE, f"{len(payload)} bytes", payload[:1024])
        return payload, None
    if len(payload) > MAX_ENVELOPE_BYTES:
        return Reject(RejectReason.OVERSIZE, f"{len(payload)} bytes", payload[:1024])
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = RejectReason.BAD_ENCODING if "utf-8" in str(exc).lower() else RejectReason.BAD_JSON
        return Reject(reason, str(exc)[:120], payload)
    if not isinstance(doc, dict):
        return Reject(RejectReason.SCHEMA, "envelope is not an object", payload)
    uplink = doc.get("uplink_message")
    uplink = uplink if isinstance(uplink, dict) else {}
    b64 = doc.get("data", uplink.get("frm_payload", doc.get("frm_payload")))
    if b64 is None:
        return b"", None  # an uplink without application payload (MAC commands only)
    if not isinstance(b64, str) or len(b64) > 4 * MAX_ITEMS_BYTES:
        return Reject(RejectReason.SCHEMA, "data/frm_payload is not a base64 string", payload)
    try:
        data = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return Reject(RejectReason.SCHEMA, "data/frm_payload is not valid base64", payload)
    when = doc.get("time", doc.get("received_at", uplink.get("received_at")))
    uplink_ns = rfc3339_ns(when)
    if when is not None and uplink_ns is None:
        return Reject(RejectReason.SCHEMA, "envelope time is not RFC 3339", payload)
    return data, uplink_ns


def _decoder(table: Table) -> Callable[..., list[Event] | Reject]:
    def decode(payload: bytes, *, received_ns: int) -> list[Event] | Reject:
        del received_ns  # times come from the envelope or the items; else the gateway stamps
        unwrapped = _unwrap(payload)
        if isinstance(unwrapped, Reject):
            return unwrapped
        data, uplink_ns = unwrapped
        return _items(data, table, uplink_ns, payload)

    return decode


decode_vs133 = _decoder(VS133)
decode_vs350 = _decoder(VS350)
decode_vs121 = _decoder(VS121)
