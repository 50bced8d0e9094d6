"""RFID reads from networked fixed readers, published over MQTT as JSON — OUR contract.

There is no common standard for this (each vendor's "IoT" interface has its own JSON), so the gateway
defines one, tolerant enough that most readers' own output or a small script on the reader fits it.
Source of truth: this docstring (device-protocols.md §2 for what the fields mean; §3 for EPCs).

    {"reader": "door-west",                        optional: sub-reader name (D9 key part), "" if absent
     "reads": [                                    a list of reads; "tags" is accepted for "reads"
       {"epc": "3074257BF7194E4000001A85",         required: EPC hex (2–62 bytes, even digit count)
        "antenna": 1,                              optional: port ≥ 1; 0 or absent = not reported
        "rssi": -55.5,                             optional: dBm, −130 … +20
        "count": 3,                                optional: reads aggregated in this entry (≥ 1, default 1)
        "ts": "2024-03-09T16:00:00.125Z"}]}        optional: RFC 3339 with zone, or epoch milliseconds

Also accepted: a single read object at the top level (with or without "reader"), and a top-level list
of read objects; an empty "reads" list is a heartbeat (decoded, no events). A read may name its own
"reader" (a reader hub batching several). Instead of "epc" a read may carry "em4100": the 10-hex-digit
ID of a 125 kHz card; such a read is personal (`is_personal`), pseudonymised by the pipeline (D13).

Tolerance: keys match case-insensitively and ignoring `_` and `-`; unknown keys are ignored; these
aliases (seen in vendors' JSON) are read as the contract's names:

    epc      epc, epchex, idhex, tagid, tag          antenna  antenna, ant, antennaport, antennaid, port
    rssi     rssi, rssidbm, peakrssi, peakrssidbm, peakrssicdbm (centi-dBm, ÷ 100)
    count    count, readcount, reads (a number), tagseencount, seencount
    ts       ts, timestamp, time, lastseen, lastseentime, lastseentimestamp
    reader   reader, readerid, readername, hostname

Hex digits may be lower case; spaces, `:` and `-` inside them are dropped. A message that breaks the
contract (wrong type, hex that is not hex, a time without a zone) is rejected whole (SCHEMA), a value
out of range as SANITY — never partly recorded. A rejected message that mentions em4100 keeps its
raw bytes with every hex digit masked (D13), on top of the registry's `personal_raw`.

Worked example: `{"reader": "door-west", "reads": [{"epc": "3074257BF7194E4000001A85", "antenna": 2,
"rssi": -61, "count": 4, "ts": 1710000000000}]}` → one TagRead: EPC SGTIN-96 (GTIN 80614141123458,
serial 6789, §3.3 S1), antenna 2, −61.0 dBm, read_count 4, read_ns 1710000000000000000, reader
"door-west".
"""

from __future__ import annotations

import string
from datetime import datetime

import orjson

from devices import epc
from devices.events import Event, Reject, RejectReason, TagKind, TagRead

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_READS = 10_000
MAX_EPC_BYTES = 62  # 31 words: the longest EPC a PC's 5-bit length announces
EM4100_HEX_DIGITS = 10
RSSI_RANGE_DBM = (-130.0, 20.0)
MAX_COUNT = 1_000_000
MAX_ANTENNA = 255
MAX_NAME = 64
_HEX = frozenset(string.hexdigits)
_STRIP = str.maketrans("", "", " :-")
_MASK = bytes.maketrans(string.hexdigits.encode(), b"x" * len(string.hexdigits))

# normalised key → (contract name, scale)
ALIASES: dict[str, tuple[str, float]] = {
    **dict.fromkeys(("epc", "epchex", "idhex", "tagid", "tag"), ("epc", 1.0)),
    "em4100": ("em4100", 1.0),
    **dict.fromkeys(("antenna", "ant", "antennaport", "antennaid", "port"), ("antenna", 1.0)),
    **dict.fromkeys(("rssi", "rssidbm", "peakrssi", "peakrssidbm"), ("rssi", 1.0)),
    "peakrssicdbm": ("rssi", 0.01),
    **dict.fromkeys(("count", "readcount", "tagseencount", "seencount"), ("count", 1.0)),
    **dict.fromkeys(("ts", "timestamp", "time", "lastseen", "lastseentime", "lastseentimestamp"), ("ts", 1.0)),
    **dict.fromkeys(("reader", "readerid", "readername", "hostname"), ("reader", 1.0)),
    "reads": ("reads", 1.0),  # a list of reads, or (inside a read) a count
    "tags": ("reads", 1.0),
}


class _Bad(Exception):
    """Internal: carries the reject out of nested parsing; never leaves `decode`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _normalise(obj: dict) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in obj.items():
        alias = ALIASES.get(key.lower().replace("_", "").replace("-", "")) if isinstance(key, str) else None
        if alias is not None:
            name, scale = alias
            out[name] = value * scale if scale != 1.0 and _is_number(value) else value
    return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _name(value: object) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise _Bad(RejectReason.SCHEMA, "reader is not a short string")
    return value


def _hex(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(RejectReason.SCHEMA, f"{what} is not a string")
    text = value.translate(_STRIP)
    if not text or len(text) % 2 or not _HEX.issuperset(text):
        raise _Bad(RejectReason.SCHEMA, f"{what} is not hex bytes")
    return text.upper()


def _int(value: object, what: str, low: int, high: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(RejectReason.SCHEMA, f"{what} is not an integer")
    if not low <= value <= high:
        raise _Bad(RejectReason.SANITY, f"{what} {value} outside {low}..{high}")
    return value


def _rssi(value: object) -> float | None:
    if value is None:
        return None
    if not _is_number(value):
        raise _Bad(RejectReason.SCHEMA, "rssi is not a number")
    low, high = RSSI_RANGE_DBM
    if not low <= value <= high:  # NaN fails too
        raise _Bad(RejectReason.SANITY, f"rssi {value} dBm outside {low}..{high}")
    return float(value)


def _ts_ns(value: object) -> int | None:
    if value is None:
        return None
    if _is_number(value):
        if not 0 <= value < 10**14:  # epoch ms, up to year 5138
            raise _Bad(RejectReason.SANITY, "ts (epoch ms) out of range")
        return int(value) * 1_000_000 + round((value - int(value)) * 1_000_000)
    if not isinstance(value, str) or len(value) > 40:
        raise _Bad(RejectReason.SCHEMA, "ts is neither RFC 3339 nor epoch ms")
    try:
        dt = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise _Bad(RejectReason.SCHEMA, "ts is not RFC 3339") from None
    if dt.tzinfo is None:
        raise _Bad(RejectReason.SCHEMA, "ts has no zone")
    if dt.year < 1970:
        raise _Bad(RejectReason.SANITY, "ts before 1970")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000


def _read(obj: object, reader: str) -> TagRead:
    if not isinstance(obj, dict):
        raise _Bad(RejectReason.SCHEMA, "a read is not an object")
    read = _normalise(obj)
    if "em4100" in read:
        kind, tag_hex = TagKind.EM4100, _hex(read["em4100"], "em4100")
        if len(tag_hex) != EM4100_HEX_DIGITS:
            raise _Bad(RejectReason.SANITY, "em4100 ID is not 10 hex digits")
        gtin14 = serial = None
    elif "epc" in read:
        kind, tag_hex = TagKind.EPC, _hex(read["epc"], "epc")
        if len(tag_hex) > 2 * MAX_EPC_BYTES:
            raise _Bad(RejectReason.SANITY, "epc longer than 62 bytes")
        gtin14, serial = epc.gtin_and_serial(tag_hex)
    else:
        raise _Bad(RejectReason.SCHEMA, "a read has neither epc nor em4100")
    count = read.get("count", read.get("reads"))  # inside a read, "reads" is a count
    return TagRead(
        kind,
        tag_hex,
        _int(read.get("antenna"), "antenna", 0, MAX_ANTENNA, 0),
        _rssi(read.get("rssi")),
        None,
        _int(count, "count", 1, MAX_COUNT, 1),
        kind is TagKind.EM4100,
        gtin14,
        serial,
        _name(read["reader"]) if "reader" in read else reader,
        _ts_ns(read.get("ts")),
    )


def _reads(doc: object) -> tuple[list, str]:
    if isinstance(doc, list):
        return doc, ""
    if not isinstance(doc, dict):
        raise _Bad(RejectReason.SCHEMA, "neither an object nor a list")
    top = _normalise(doc)
    reader = _name(top.get("reader"))
    if isinstance(top.get("reads"), list):
        return top["reads"], reader
    if "epc" in top or "em4100" in top:
        return [doc], ""  # a single read: its own "reader" is read with it
    raise _Bad(RejectReason.SCHEMA, "no reads list and no epc")


def safe_raw(payload: bytes) -> bytes:
    """Raw bytes safe to dead-letter: a payload that may hold a 125 kHz card ID (it mentions em4100)
    has every hex digit masked as `x` (D13); others are kept, at most 1 KiB."""
    head = bytes(payload[:1024])
    if b"em4100" in payload.lower().replace(b"_", b"").replace(b"-", b""):
        return head.translate(_MASK)
    return head


def decode(payload: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One MQTT message → one TagRead per read entry."""
    del received_ns  # reads carry their own time when the reader gives one
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(RejectReason.OVERSIZE, f"{len(payload)} bytes", safe_raw(payload))
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = RejectReason.BAD_ENCODING if "utf-8" in str(exc).lower() else RejectReason.BAD_JSON
        return Reject(reason, str(exc)[:120], safe_raw(payload))
    try:
        reads, reader = _reads(doc)
        if len(reads) > MAX_READS:
            raise _Bad(RejectReason.OVERSIZE, f"{len(reads)} reads in one message")
        return [_read(r, reader) for r in reads]
    except _Bad as bad:
        return Reject(bad.reason, bad.detail, safe_raw(payload))
