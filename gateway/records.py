"""RecordDraft: what processors make of events — a point before it has its final time.

The pipeline stamps it (decisions.md D8) and encodes it into line protocol for the log."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.log.schema import RecordClass

FieldValue = int | float | bool | str


@dataclass(frozen=True, slots=True)
class RecordDraft:
    measurement: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    identity: str | None  # D4: from the payload (device, device time[, index]); None = at-least-once
    device_ts_ns: int | None = None  # the device's own time, used when the device's config trusts it
    mono_ns: int | None = None  # a time on this boot's monotonic clock (state machines run on it)
    klass: RecordClass = RecordClass.TELEMETRY
