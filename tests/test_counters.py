"""Counter processor (gateway/processors/counters.py): §4.8's rules, duplicates, state, and the invariant.

The invariant proved by `test_totals_invariant_*`, per (device, line, direction), for any sequence of
true crossings, resets to 0 (midnight, schedule, reboot), wraps at 2^W, duplicated and stale
re-deliveries of earlier reports and gateway restarts (state through bytes), provided fewer than
2^(W−2) crossings happen between two consecutive reports (else a wrap cannot be told from a reset):

  1. every delta is ≥ 0, and re-delivered reports and restarts add nothing;
  2. for each pair of consecutive accepted reports (prev, new) with c crossings between them:
     - no reset between them → delta = c exactly (wraps included);
     - a reset between them that is *detectable* (new < prev, and not prev ≥ ¾·2^W with new < ¼·2^W)
       → delta = the crossings after the last reset; those before it are lost — the counter forgot
       them before anyone read them;
     - an undetectable reset (new ≥ prev, or a reset that looks like a wrap) → 0 ≤ delta ≤ c + 2^(W−2):
       it is counted short by up to prev, or long by at most the quarter range;
  3. hence Σ deltas = true crossings after the first report − Σ crossings before the last reset of
     each interval that has one, exactly when every reset is detectable.
Crossings before the first (seed) report are unknowable and never counted.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.events import CounterInterval, CounterPeriod, CounterStatus, CounterTotals, OccupancySnapshot
from gateway.processors import footfall
from gateway.processors.counters import CounterProcessor, FootfallDelta, footfall_draft, gauge_draft

NS = 1_000_000_000
T0 = 1_710_000_000 * NS
TAGS = {"district": "d", "street": "s", "gateway": "g", "device": "c1", "site": "shop"}


def totals(i, o, ts=None, *, line="door", width=16):
    return CounterTotals(line, i, o, width, ts)


def run(proc, *events, rx=T0, trusted=True, device="c1"):
    return proc.process(device, list(events), received_ns=rx, device_time_trusted=trusted)


def counts(deltas):
    return [(d.entries, d.exits) for d in deltas]


def test_totals_first_report_seeds_then_counts_differences():
    """The first report only seeds; later ones yield new − prev, with identity and span."""
    p = CounterProcessor()
    assert run(p, totals(100, 50, T0)) == []
    [d] = run(p, totals(104, 51, T0 + 60 * NS), rx=T0 + 61 * NS)
    assert d == FootfallDelta("c1", "door", 4, 1, T0 + 60 * NS, 60, f"footfall|c1|door|{T0 + 60 * NS}")


def test_totals_wrap_at_width_counted_across():
    """uint16 VS350 totals: 65 530 → 4 is a wrap of 10, not a reset."""
    p = CounterProcessor()
    run(p, totals(65_530, 10, T0))
    [d] = run(p, totals(4, 12, T0 + NS))
    assert (d.entries, d.exits, d.is_wrap, d.is_reset) == (10, 2, True, False)


def test_totals_decrease_outside_wrap_window_is_reset():
    """Midnight reset: 500 → 7 counts 7 (the crossings after the reset); no negative delta."""
    p = CounterProcessor()
    run(p, totals(500, 400, T0))
    [d] = run(p, totals(7, 3, T0 + NS))
    assert (d.entries, d.exits, d.is_reset) == (7, 3, True)


def test_totals_unknown_width_any_decrease_is_reset():
    p = CounterProcessor()
    run(p, totals(65_530, 0, T0, width=None))
    assert counts(run(p, totals(4, 0, T0 + NS, width=None))) == [(4, 0)]


def test_totals_duplicate_and_stale_reports_ignored():
    """The same report twice counts once; an older one re-delivered later adds nothing."""
    p = CounterProcessor()
    run(p, totals(10, 0, T0))
    assert counts(run(p, totals(15, 0, T0 + NS))) == [(5, 0)]
    assert run(p, totals(15, 0, T0 + NS)) == []
    assert counts(run(p, totals(20, 0, T0 + 2 * NS))) == [(5, 0)]
    assert run(p, totals(10, 0, T0)) == []  # would look like a reset of 10
    assert p.stats["totals_duplicate"] + p.stats["totals_stale"] == 2


def test_totals_clock_set_back_beyond_horizon_is_taken():
    """A device clock reset to 2000 is not a re-delivery: the report counts (as a reset here)."""
    p = CounterProcessor()
    run(p, totals(10, 0, T0))
    assert counts(run(p, totals(3, 0, 946_684_800 * NS))) == [(3, 0)]
    assert p.stats["clock_set_back"] == 1


def test_totals_redelivery_after_clock_set_back_still_known():
    """After a clock set back, a re-delivered report from before it is newer than the last time but
    was seen: the window of recent times catches it."""
    p = CounterProcessor()
    run(p, totals(10, 0, T0))
    run(p, totals(3, 0, 946_684_800 * NS))
    assert run(p, totals(10, 0, T0)) == []


def test_totals_untimed_repeat_of_latest_counts_zero():
    """Modbus/raw LoRa totals have no time: a repeated last report is harmless (delta 0, no identity)."""
    p = CounterProcessor()
    run(p, totals(10, 0), trusted=False)
    [d] = run(p, totals(10, 0), rx=T0 + 10 * NS, trusted=False)
    assert (d.entries, d.exits, d.identity, d.ts_ns, d.interval_s) == (0, 0, None, None, 10)


def test_totals_one_direction_at_a_time():
    """A payload with only a line's in total leaves out's baseline alone."""
    p = CounterProcessor()
    run(p, totals(10, 20, T0))
    assert counts(run(p, totals(12, None, T0 + NS))) == [(2, 0)]
    assert counts(run(p, totals(None, 25, T0 + 2 * NS))) == [(0, 5)]


def test_totals_interval_uses_receive_clock_when_time_untrusted():
    p = CounterProcessor()
    run(p, totals(1, 1, T0), rx=5 * NS, trusted=False)
    [d] = run(p, totals(2, 1, T0 + 3600 * NS), rx=65 * NS, trusted=False)
    assert (d.ts_ns, d.interval_s) == (T0 + 3600 * NS, 60)


def test_period_passes_through_with_identity():
    p = CounterProcessor()
    [d] = run(p, CounterPeriod("line_1", 3, 1, T0))
    assert d == FootfallDelta("c1", "line_1", 3, 1, T0, None, f"footfall|c1|line_1|{T0}")
    [d] = run(p, CounterPeriod("line_1", 3, 1, None))
    assert d.identity is None


def test_period_not_counted_while_totals_flow():
    """A VS350 uplink with totals and period counts once: from the totals."""
    p = CounterProcessor()
    assert run(p, totals(10, 0, T0, line="line_1"), CounterPeriod("line_1", 4, 0, T0)) == []
    got = run(p, CounterPeriod("line_1", 5, 0, T0 + NS), totals(15, 0, T0 + NS, line="line_1"), rx=T0 + NS)
    assert counts(got) == [(5, 0)]
    assert counts(run(p, CounterPeriod("line_1", 2, 0, T0 + 2 * NS), rx=T0 + 2 * NS)) == []  # totals still fresh
    assert p.stats["period_suppressed"] == 3


def test_period_counted_when_totals_quiet_then_totals_reseed():
    """Totals gone quiet: periods count; totals that come back re-seed instead of double counting."""
    p = CounterProcessor(totals_fresh_ns=3600 * NS)
    run(p, totals(10, 0, T0, line="line_1"))
    later = T0 + 2 * 3600 * NS
    assert counts(run(p, CounterPeriod("line_1", 4, 0, later), rx=later)) == [(4, 0)]
    assert run(p, totals(30, 0, later + NS, line="line_1"), rx=later + NS) == []
    assert counts(run(p, totals(31, 0, later + 2 * NS, line="line_1"), rx=later + 2 * NS)) == [(1, 0)]


def test_interval_gives_the_same_point_as_footfall_interval_draft():
    """VIVOTEK intervals may go through the processor: same tags, fields, identity and time."""
    ev = CounterInterval("Counting1", 1, 2, T0, T0 + 900 * NS)
    [d] = run(CounterProcessor(), ev)
    assert footfall_draft(TAGS, d) == footfall.interval_draft(TAGS, "c1", ev)


def test_lines_and_devices_are_independent():
    p = CounterProcessor()
    run(p, totals(10, 0, T0, line="a"), device="x")
    assert run(p, totals(99, 0, T0 + NS, line="a"), device="y") == []  # y's seed
    assert counts(run(p, totals(11, 0, T0 + NS, line="a"), device="x")) == [(1, 0)]


def test_state_round_trips_through_bytes():
    p = CounterProcessor()
    assert not p.dirty
    run(p, totals(10, 5, T0), CounterPeriod("other", 1, 1, T0))
    assert p.dirty
    q = CounterProcessor.from_bytes(p.to_bytes())
    assert not p.dirty
    assert q.to_bytes() == p.to_bytes()
    assert run(q, totals(10, 5, T0)) == []  # the duplicate is still known
    assert counts(run(q, totals(12, 5, T0 + NS))) == [(2, 0)]
    assert CounterProcessor.from_bytes(b"").to_bytes() == CounterProcessor().to_bytes()


@pytest.mark.parametrize("data", [b"{", b'{"v": 99, "lines": []}', b'{"v": 1, "lines": [[1]]}', b"[]"])
def test_state_from_foreign_bytes_raises_value_error(data):
    with pytest.raises(ValueError):
        CounterProcessor.from_bytes(data)


def test_footfall_draft_omits_unknown_interval():
    d = FootfallDelta("c1", "door", 3, 0, None, None, None)
    draft = footfall_draft(TAGS, d)
    assert draft.fields == {"entries": 3, "exits": 0}
    assert (draft.measurement, draft.tags["line"], draft.identity, draft.device_ts_ns) == (
        "footfall",
        "door",
        None,
        None,
    )


def test_gauge_draft_for_snapshot_and_status():
    snap = gauge_draft(TAGS, "c1", OccupancySnapshot(2, 12, 0x0810, T0))
    assert snap is not None and snap.measurement == "occupancy"
    assert snap.fields == {"people": 2, "region_count": 12, "region_mask": 0x0810}
    assert snap.identity == f"occupancy|c1|people|{T0}"
    status = gauge_draft(TAGS, "c1", CounterStatus(80, -1.0, None))
    assert status is not None and status.fields == {"battery_pct": 80, "temperature_c": -1.0}
    assert status.identity is None
    assert gauge_draft(TAGS, "c1", totals(1, 1)) is None


# --- the invariant -------------------------------------------------------------------------------

CROSS = st.tuples(st.just("cross"), st.integers(0, 200), st.integers(0, 200))
STEP = st.one_of(
    CROSS,
    CROSS,  # crossings weigh more, so resets often fall between crossings and a report
    CROSS,
    st.just(("reset",)),
    st.just(("report",)),
    st.just(("report",)),
    st.tuples(st.just("redeliver"), st.integers(0, 10_000)),
    st.just(("restart",)),
)


@dataclasses.dataclass
class _Direction:
    """Ground truth of one direction between two reports."""

    value: int = 0  # what the device's counter shows (mod 2^W)
    since_report: int = 0  # crossings since the last report
    since_reset: int = 0  # crossings since the last reset in this interval (all of them if none)
    had_reset: bool = False
    total: int = 0  # all crossings, ever
    reported_value: int | None = None


def _simulate(width, steps, *, timed: bool):
    """Drive a processor with the steps; check per-interval rule 2; return (Σ deltas, truth after seed,
    lost before resets, every reset detectable?)."""
    cap = (1 << (width - 2)) - 1 if width else 10**6
    mod = (1 << width) if width else None
    dirs = [_Direction(), _Direction()]
    proc = CounterProcessor()
    sent: list[CounterTotals] = []
    summed = [0, 0]
    truth_after_seed = [0, 0]
    lost = [0, 0]
    exact = True
    ts = T0
    for step in steps:
        kind = step[0]
        if kind == "cross":
            for k, (d, n) in enumerate(zip(dirs, step[1:], strict=True)):
                n = min(n, cap - d.since_report)  # the assumption: < 2^(W−2) between reports
                d.since_report += n
                d.since_reset += n
                d.total += n
                d.value = (d.value + n) % mod if mod else d.value + n
                if sent:
                    truth_after_seed[k] += n
        elif kind == "reset":
            for d in dirs:
                d.value, d.since_reset, d.had_reset = 0, 0, True
        elif kind == "restart":
            proc = CounterProcessor.from_bytes(proc.to_bytes())
        elif kind == "redeliver":
            if not sent or not timed:
                continue
            old = sent[step[1] % len(sent)]
            assert run(proc, old, rx=ts) == [], "a re-delivered report must add nothing"
        else:
            ts += 60 * NS
            ev = CounterTotals("door", dirs[0].value, dirs[1].value, width, ts if timed else None)
            got = run(proc, ev, rx=ts, trusted=timed)
            if not sent:
                assert got == []  # the seed
            else:
                [delta] = got
                for k, (d, dv) in enumerate(zip(dirs, (delta.entries, delta.exits), strict=True)):
                    assert dv >= 0
                    summed[k] += dv
                    if not d.had_reset:
                        assert dv == d.since_report
                        continue
                    prev, new = d.reported_value, d.value
                    looks_wrapped = mod is not None and prev >= 3 * mod // 4 and new < mod // 4
                    if new < prev and not looks_wrapped:
                        assert dv == d.since_reset
                        lost[k] += d.since_report - d.since_reset
                    else:
                        exact = False
                        assert dv <= d.since_report + (mod // 4 if mod else 0)
            sent.append(ev)
            for d in dirs:
                d.reported_value, d.since_report, d.since_reset, d.had_reset = d.value, 0, 0, False
    # crossings after the last report are not reported yet: not part of the sum
    pending = [d.since_report for d in dirs]
    truth = [truth_after_seed[k] - (pending[k] if sent else 0) for k in range(2)]
    return summed, truth, lost, exact


@settings(max_examples=400, deadline=None)
@given(width=st.sampled_from([None, 8, 16, 32]), steps=st.lists(STEP, max_size=80))
def test_totals_invariant_timed_reports_with_resets_wraps_redeliveries_restarts(width, steps):
    """Rules 1–3 of the module docstring, with device-timed reports (duplicates identifiable)."""
    summed, truth, lost, exact = _simulate(width, steps, timed=True)
    if exact:
        assert summed == [truth[k] - lost[k] for k in range(2)]


@settings(max_examples=200, deadline=None)
@given(width=st.sampled_from([None, 8, 16]), steps=st.lists(STEP, max_size=80))
def test_totals_invariant_untimed_reports(width, steps):
    """The same without device time (Modbus, raw LoRa bytes): nothing to dedupe on, same sums."""
    summed, truth, lost, exact = _simulate(width, steps, timed=False)
    if exact:
        assert summed == [truth[k] - lost[k] for k in range(2)]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("cross"), st.integers(0, 50), st.integers(0, 50)),
            st.just(("midnight",)),
            st.just(("report",)),
        ),
        max_size=60,
    )
)
def test_totals_midnight_resets_after_a_report_lose_nothing(steps):
    """A counter that reports right before each reset (a device's end-of-day report): every crossing
    after the seed is counted, exactly."""
    p = CounterProcessor()
    value = [0, 0]
    seeded = False
    truth = [0, 0]
    got = [0, 0]
    ts = T0
    for step in steps:
        if step[0] == "cross":
            value = [value[0] + step[1], value[1] + step[2]]
            if seeded:
                truth = [truth[0] + step[1], truth[1] + step[2]]
            continue
        ts += NS
        for d in run(p, totals(*value, ts, width=32), rx=ts):
            got = [got[0] + d.entries, got[1] + d.exits]
        seeded = True
        if step[0] == "midnight":
            value = [0, 0]
            ts += NS
            for d in run(p, totals(0, 0, ts, width=32), rx=ts):  # the first report of the day
                got = [got[0] + d.entries, got[1] + d.exits]
    # crossings not yet reported are not expected
    pending = [0, 0]
    for step in reversed(steps):
        if step[0] != "cross":
            break
        pending = [pending[0] + step[1], pending[1] + step[2]]
    expected = [truth[k] - (pending[k] if seeded else 0) for k in range(2)]
    assert got == expected


BLOCK = st.tuples(
    st.integers(0, 60),
    st.integers(0, 60),
    st.booleans(),  # a reset after those crossings
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(["", "redeliver", "restart"]),
)


@settings(max_examples=300, deadline=None)
@given(width=st.sampled_from([None, 8, 16]), blocks=st.lists(BLOCK, min_size=2, max_size=40))
def test_totals_invariant_report_intervals_with_resets_inside(width, blocks):
    """Rules 1–3 again, built interval by interval so that resets often fall between crossings:
    the crossings before a reset are the only ones lost."""
    steps: list[tuple] = []
    for before_in, before_out, reset, after_in, after_out, extra in blocks:
        steps.append(("cross", before_in, before_out))
        if reset:
            steps.append(("reset",))
        steps += [("cross", after_in, after_out), ("report",)]
        if extra:
            steps.append((extra, before_in * 61 + after_in))
    summed, truth, lost, exact = _simulate(width, steps, timed=True)
    if exact:
        assert summed == [truth[k] - lost[k] for k in range(2)]


def test_state_restore_rolls_back_a_batch():
    """A batch whose commit failed is undone by restoring the bytes committed before it: the
    re-delivered report then counts again, once."""
    p = CounterProcessor()
    run(p, totals(10, 0, T0))
    committed = p.to_bytes()
    assert counts(run(p, totals(15, 0, T0 + NS))) == [(5, 0)]
    p.restore(committed)
    assert counts(run(p, totals(15, 0, T0 + NS))) == [(5, 0)]
