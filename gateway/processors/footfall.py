"""Footfall: counter events → `footfall` points (decisions.md D12).

Per-interval reports are already deltas: one point per (device, line, interval start), fields
`entries`, `exits`, `interval_s`. The cumulative styles (totals with resets and wraps) and their
state machine arrive with the footfall issue; they will keep their state here, committed with the
records (D1)."""

from __future__ import annotations

from devices.events import CounterInterval
from gateway.records import RecordDraft

NS = 1_000_000_000


def interval_draft(base_tags: dict[str, str], device_id: str, event: CounterInterval) -> RecordDraft:
    tags = dict(base_tags)
    tags["line"] = event.line
    return RecordDraft(
        measurement="footfall",
        tags=tags,
        fields={
            "entries": event.entries,
            "exits": event.exits,
            "interval_s": (event.end_ns - event.start_ns) // NS,
        },
        identity=f"footfall|{device_id}|{event.line}|{event.start_ns}",
        device_ts_ns=event.start_ns,
    )
