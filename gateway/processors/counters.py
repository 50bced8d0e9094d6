"""People counters → per-report footfall deltas (device-protocols.md §4.8; decisions.md D1, D4, D8).

Design note. Counters report in three styles: cumulative totals (CounterTotals: reset at midnight,
on a schedule or at reboot, wrapping at their width), per-period deltas without bounds
(CounterPeriod) and per-interval deltas with bounds (CounterInterval). `CounterProcessor.process`
turns each report into one `FootfallDelta` per line; `footfall_draft` makes it a `footfall` point.
The processor is a plain state machine: time comes in as values, its whole state goes out as bytes
(`to_bytes`) to be committed with the records it produced (D1) and comes back with `from_bytes`.

Totals, per (device, line, direction) — §4.8's rules:
  - the first report only seeds the baseline (crossings before it are unknowable);
  - new ≥ prev → delta new − prev;
  - new < prev with width W known, prev ≥ ¾·2^W and new < ¼·2^W → wrapped: new + 2^W − prev;
  - any other decrease → reset: delta new (crossings between the last report and the reset are lost).
A delta is never negative. Duplicates, per (device, line): a report whose device time equals one of
the line's last RECENT_TIMES accepted times is ignored (§4.8: "identical in (device, line,
timestamp)"). Ours on top: a report not newer than the line's last accepted one is ignored too —
an old message re-delivered (Mosquitto 2.0.11 re-sends acked messages, D4), or a VS350 history
record: a newer cumulative report already covers it — unless it is more than `stale_horizon_ns`
older, which means the device clock was set back: then it is taken. Ignoring a cumulative report
costs nothing unless a reset follows it before the next accepted one (the next report carries its
crossings), so this holds whether or not the device's clock is trusted for stamping. A report
without a device time has no identity: a repeat of the latest one yields 0, an older one looks
like a reset (at-least-once, D4).

Periods and intervals are deltas already; their identity (device, line, time) lets the log drop
a re-sent one (D4). A device may send both styles for one line (a VS350 uplink can carry totals and
the period): counting both would double. Totals win while they flow — a period is not counted if the
same payload has totals for its line or the line's totals were accepted within `totals_fresh_ns`
(receive time) — because a lost uplink costs totals nothing. Once a period is counted for a line
whose totals went quiet, that line's totals baseline is dropped, so totals that come back re-seed
instead of counting again the span the periods covered.

Timestamps (D8): a delta carries the report's device time (`ts_ns`: a totals report's own time,
a period's end, an interval's start) or None; the pipeline uses it where the device's time is
trusted, else the receive time. A totals delta covers the span since the line's previous accepted
report: `interval_s` when both reports were timed by the same clock. Identity (D4):
`footfall|<device>|<line>|<ts_ns>` where the report has a time, else None (at-least-once).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from devices.events import (
    CounterInterval,
    CounterPeriod,
    CounterStatus,
    CounterTotals,
    OccupancySnapshot,
    PeopleMax,
    RegionPeople,
    ThresholdAlarm,
)
from gateway.records import RecordDraft

NS = 1_000_000_000
RECENT_TIMES = 16
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class FootfallDelta:
    """People who crossed `line` of `device` since its previous report (or in a period/interval)."""

    device: str
    line: str
    entries: int
    exits: int
    ts_ns: int | None  # the report's device time (see module note); None: the payload has none
    interval_s: int | None  # the span the delta covers, where known
    identity: str | None  # D4; None = at-least-once
    is_reset: bool = False  # a reset was detected in either direction
    is_wrap: bool = False  # a wrap was detected in either direction


@dataclass(slots=True)
class _Line:
    total_in: int | None = None  # baseline per direction; None = not seeded
    total_out: int | None = None
    last_ts_ns: int | None = None  # device time of the last accepted totals report
    recent_ts_ns: list[int] = field(default_factory=list)
    at_ns: int | None = None  # time of the last accepted totals report, by `at_is_device`'s clock
    at_is_device: bool = False
    totals_rx_ns: int | None = None  # receive time of the last accepted totals report

    def row(self) -> list:
        return [
            self.total_in,
            self.total_out,
            self.last_ts_ns,
            self.recent_ts_ns,
            self.at_ns,
            self.at_is_device,
            self.totals_rx_ns,
        ]


def _step(prev: int | None, new: int | None, width_bits: int | None) -> tuple[int, str]:
    """Delta of one direction and what happened: "seed", "same"/"up", "wrap" or "reset"."""
    if new is None:
        return 0, "same"
    if prev is None:
        return 0, "seed"
    if new >= prev:
        return new - prev, "up"
    if width_bits is not None:
        span = 1 << width_bits
        if prev >= 3 * span // 4 and new < span // 4:
            return new + span - prev, "wrap"
    return new, "reset"


def _identity(device: str, line: str, ts_ns: int | None) -> str | None:
    return None if ts_ns is None else f"footfall|{device}|{line}|{ts_ns}"


class CounterProcessor:
    def __init__(self, *, totals_fresh_ns: int = 3 * 3600 * NS, stale_horizon_ns: int = 7 * 86400 * NS) -> None:
        self.totals_fresh_ns = totals_fresh_ns
        self.stale_horizon_ns = stale_horizon_ns
        self._lines: dict[tuple[str, str], _Line] = {}
        self.dirty = False  # state changed since the last `to_bytes` (commit it with the batch, D1)
        self.stats: Counter[str] = Counter()  # not state: what happened since start, for metrics

    def process(
        self, device: str, events: Iterable[object], *, received_ns: int, device_time_trusted: bool
    ) -> list[FootfallDelta]:
        """One payload's events of `device` → its footfall deltas (other events are ignored)."""
        events = list(events)
        totals_lines = {ev.line for ev in events if isinstance(ev, CounterTotals)}
        out: list[FootfallDelta] = []
        for ev in events:
            if isinstance(ev, CounterTotals):
                delta = self._totals(device, ev, received_ns, device_time_trusted)
            elif isinstance(ev, CounterPeriod):
                delta = self._period(
                    device, ev.line, ev.entries, ev.exits, ev.device_ts_ns, None, received_ns, totals_lines
                )
            elif isinstance(ev, CounterInterval):
                span_s = (ev.end_ns - ev.start_ns) // NS
                delta = self._period(
                    device, ev.line, ev.entries, ev.exits, ev.start_ns, span_s, received_ns, totals_lines
                )
            else:
                continue
            if delta is not None:
                out.append(delta)
        return out

    def _totals(self, device: str, ev: CounterTotals, received_ns: int, trusted: bool) -> FootfallDelta | None:
        st = self._lines.setdefault((device, ev.line), _Line())
        ts = ev.device_ts_ns
        if ts is not None:
            if ts in st.recent_ts_ns:
                self.stats["totals_duplicate"] += 1
                return None
            if st.last_ts_ns is not None and ts <= st.last_ts_ns:
                if st.last_ts_ns - ts <= self.stale_horizon_ns:
                    self.stats["totals_stale"] += 1
                    return None
                self.stats["clock_set_back"] += 1
            self.dirty = True
            st.recent_ts_ns = [*st.recent_ts_ns[-(RECENT_TIMES - 1) :], ts]
            st.last_ts_ns = ts
        d_in, what_in = _step(st.total_in, ev.total_in, ev.width_bits)
        d_out, what_out = _step(st.total_out, ev.total_out, ev.width_bits)
        if ev.total_in is not None:
            st.total_in = ev.total_in
        if ev.total_out is not None:
            st.total_out = ev.total_out
        at_is_device = trusted and ts is not None
        at = ts if at_is_device else received_ns
        interval_s = None
        if st.at_ns is not None and st.at_is_device == at_is_device and at > st.at_ns:  # type: ignore[operator]
            interval_s = (at - st.at_ns) // NS  # type: ignore[operator]
        st.at_ns, st.at_is_device, st.totals_rx_ns = at, at_is_device, received_ns
        self.dirty = True
        whats = {what_in, what_out}
        if whats <= {"seed", "same"}:
            self.stats["totals_seeded" if "seed" in whats else "totals_empty"] += 1
            return None
        for what in whats - {"same", "seed", "up"}:
            self.stats[f"totals_{what}"] += 1
        self.stats["totals_counted"] += 1
        return FootfallDelta(
            device,
            ev.line,
            d_in,
            d_out,
            ts,
            interval_s,
            _identity(device, ev.line, ts),
            is_reset="reset" in whats,
            is_wrap="wrap" in whats,
        )

    def _period(
        self,
        device: str,
        line: str,
        entries: int,
        exits: int,
        ts_ns: int | None,
        interval_s: int | None,
        received_ns: int,
        totals_lines: set[str],
    ) -> FootfallDelta | None:
        st = self._lines.get((device, line))
        if st is not None and st.totals_rx_ns is not None:
            if line in totals_lines or received_ns - st.totals_rx_ns <= self.totals_fresh_ns:
                self.stats["period_suppressed"] += 1
                return None
            st.total_in = st.total_out = st.totals_rx_ns = None  # totals went quiet: re-seed when back
            self.dirty = True
            self.stats["totals_dropped_for_periods"] += 1
        elif line in totals_lines:
            self.stats["period_suppressed"] += 1
            return None
        self.stats["period_counted"] += 1
        return FootfallDelta(device, line, entries, exits, ts_ns, interval_s, _identity(device, line, ts_ns))

    def to_bytes(self) -> bytes:
        """The whole state (clears `dirty`): what the pipeline commits with the batch's records."""
        self.dirty = False
        rows = [[dev, line, *st.row()] for (dev, line), st in sorted(self._lines.items())]
        return orjson.dumps({"v": STATE_VERSION, "lines": rows})

    def restore(self, data: bytes) -> None:
        """Replace the state by committed bytes (at start, or to roll back a batch whose commit failed)."""
        self._lines = type(self).from_bytes(data)._lines
        self.dirty = False

    @classmethod
    def from_bytes(cls, data: bytes, **kwargs: int) -> CounterProcessor:
        """Restore from `to_bytes` output (empty bytes: a fresh processor). Raises ValueError when the
        bytes are not a state this version wrote."""
        proc = cls(**kwargs)
        if not data:
            return proc
        try:
            doc = orjson.loads(data)
            if doc["v"] != STATE_VERSION:
                raise ValueError(f"counter state version {doc['v']}, expected {STATE_VERSION}")
            for dev, line, t_in, t_out, last_ts, recent, at, at_dev, rx in doc["lines"]:
                proc._lines[(dev, line)] = _Line(t_in, t_out, last_ts, list(recent), at, bool(at_dev), rx)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"counter state unreadable: {exc}") from None
        return proc


def footfall_draft(base_tags: dict[str, str], delta: FootfallDelta) -> RecordDraft:
    """A delta → a `footfall` point: the same tags, fields and identity as footfall.interval_draft."""
    tags = dict(base_tags)
    tags["line"] = delta.line
    fields: dict[str, int | float | bool | str] = {"entries": delta.entries, "exits": delta.exits}
    if delta.interval_s is not None:
        fields["interval_s"] = delta.interval_s
    return RecordDraft("footfall", tags, fields, identity=delta.identity, device_ts_ns=delta.ts_ns)


def gauge_draft(base_tags: dict[str, str], device: str, event: object) -> RecordDraft | None:
    """Snapshot and status events → gauge points (a proposal: measurements `occupancy`,
    `occupancy_region`, `counter_status`, `counter_alarm`; identity from the device time where given).
    None for events that are not gauges."""
    tags = dict(base_tags)
    if isinstance(event, OccupancySnapshot):
        measurement, key = "occupancy", "people"
        fields: dict[str, int | float | bool | str] = {"people": event.people}
        if event.region_count is not None:
            fields["region_count"] = event.region_count
        if event.region_mask is not None:
            fields["region_mask"] = event.region_mask
    elif isinstance(event, PeopleMax):
        measurement, key, fields = "occupancy", "max", {"people_max": event.people_max}
    elif isinstance(event, RegionPeople):
        measurement, key, fields = "occupancy_region", str(event.region), {"people": event.people}
        tags["region"] = str(event.region)
    elif isinstance(event, CounterStatus):
        measurement, key, fields = "counter_status", "status", {}
        if event.battery_pct is not None:
            fields["battery_pct"] = event.battery_pct
        if event.temperature_c is not None:
            fields["temperature_c"] = event.temperature_c
    elif isinstance(event, ThresholdAlarm):
        measurement, key, fields = "counter_alarm", event.subject, {"alarm_code": event.alarm_code}
        tags["subject"] = event.subject
    else:
        return None
    ts = event.device_ts_ns
    identity = None if ts is None else f"{measurement}|{device}|{key}|{ts}"
    return RecordDraft(measurement, tags, fields, identity=identity, device_ts_ns=ts)
