"""What codecs return: typed events named as facts, or a Reject with a reason from a closed set.

Codecs are pure (style.md 6–8): bytes and the receive time in, these values out. They never raise
on bad input and never log; the runtime counts rejects per device and reason and dead-letters them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RejectReason(enum.StrEnum):
    LENGTH = "length"  # too short, too long, truncated
    CHECKSUM = "checksum"  # CRC / XOR / sum mismatch
    SYNC = "sync"  # garbage before a frame start
    BAD_ENCODING = "bad_encoding"  # not UTF-8 where text was expected
    BAD_JSON = "bad_json"  # not parseable JSON
    SCHEMA = "schema"  # JSON parsed, but a required key is missing or of the wrong type
    SANITY = "sanity"  # a value outside what the device can report (negative count, end < start)
    UNSUPPORTED = "unsupported"  # a valid message of a kind this codec does not handle
    OVERSIZE = "oversize"  # larger than the configured maximum payload


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    detail: str  # short, human-readable; never contains a personal identifier
    raw: bytes = b""


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Base of every event a codec returns (families add theirs below, one section each)."""


# --- people counters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterInterval(DeviceEvent):
    """People crossing one counting line during [start_ns, end_ns) — a per-interval delta report.

    `start_ns`/`end_ns` are the device's own UTC times (nanoseconds since the epoch)."""

    line: str
    entries: int
    exits: int
    start_ns: int
    end_ns: int


Event = DeviceEvent
