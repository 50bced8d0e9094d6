"""Presence (D9): arrive / move / depart / summary from raw reads; reduction of points."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.processors.presence import PresenceChange, PresenceSettings, PresenceTracker

S = 1_000_000_000


def kinds(changes: list[PresenceChange]) -> list[tuple[str, str, int]]:
    return [(c.kind, c.reader, c.antenna) for c in changes]


def test_presence_arrive_summary_depart():
    t = PresenceTracker(PresenceSettings(depart_after_s=5, summary_interval_s=10))
    assert kinds(t.on_read("E1", "r1", 1, -60.0, 1, 0)) == [("arrive", "r1", 1)]
    for i in range(1, 120):  # 12 s of reads at 10/s
        assert t.on_read("E1", "r1", 1, -60.0 + (i % 3), 1, i * S // 10) == []
    summary = t.tick(11 * S)
    assert kinds(summary) == [("summary", "r1", 1)] and summary[0].reads == 120 and summary[0].peak_rssi == -58.0
    assert t.tick(12 * S) == []
    dep = t.tick(20 * S)
    assert kinds(dep) == [("depart", "r1", 1)]
    assert dep[0].at_ns == 119 * S // 10 + 5 * S  # departed when the timeout ran out, not when ticked
    assert t.tags == {}


def test_presence_move_needs_a_clearly_stronger_read():
    t = PresenceTracker(PresenceSettings(move_margin_db=6))
    t.on_read("E1", "r1", 1, -60.0, 1, 0)
    assert t.on_read("E1", "r1", 2, -57.0, 1, S) == []  # only 3 dB stronger: stays
    moved = t.on_read("E1", "r1", 2, -50.0, 1, 2 * S)
    assert kinds(moved) == [("depart", "r1", 1), ("arrive", "r1", 2)]
    assert kinds(t.on_read("E1", "r2", 0, -30.0, 1, 3 * S)) == [("depart", "r1", 2), ("arrive", "r2", 0)]


def test_presence_without_rssi_never_moves():
    t = PresenceTracker(PresenceSettings())
    t.on_read("E1", "r1", 1, None, 1, 0)
    assert t.on_read("E1", "r1", 2, None, 1, S) == []
    assert t.present_at("r1") == ["E1"]


def test_presence_moves_on_raw_strength_with_its_own_margin_never_across_scales():
    """UHFReader288 gives a raw strength of unknown unit: moves between its antennas use
    `move_margin_raw`; a raw value is never compared with a dBm one."""
    t = PresenceTracker(PresenceSettings(move_margin_db=6, move_margin_raw=10))
    t.on_read("E1", "c288", 1, 100.0, 1, 0, "raw")
    assert t.on_read("E1", "c288", 2, 108.0, 1, S, "raw") == []  # within the raw margin
    moved = t.on_read("E1", "c288", 2, 112.0, 1, 2 * S, "raw")
    assert kinds(moved) == [("depart", "c288", 1), ("arrive", "c288", 2)]
    assert moved[1].scale == "raw"
    assert t.on_read("E1", "m100", 0, -20.0, 1, 3 * S, "dbm") == []  # another scale: no move
    t2 = PresenceTracker(PresenceSettings())
    t2.restore(t.snapshot())
    assert t2.tags["E1"].scale == "raw"


def test_presence_state_survives_a_restart():
    t = PresenceTracker(PresenceSettings())
    t.on_read("E1", "r1", 1, -40.0, 3, 0)
    t2 = PresenceTracker(PresenceSettings())
    t2.restore(t.snapshot())
    assert t2.on_read("E1", "r1", 1, -41.0, 1, S) == []  # no second arrival after a restart
    assert t2.tags["E1"].reads == 4


def test_presence_reduces_500_reads_per_second_over_20_tags_to_a_few_points():
    t = PresenceTracker(PresenceSettings(depart_after_s=10, summary_interval_s=60))
    points = 0
    for i in range(500 * 60):  # one minute at 500 reads/s
        now = i * S // 500
        points += len(t.on_read(f"E{i % 20}", "r1", 1 + i % 2, -50.0, 1, now))
        if i % 500 == 0:
            points += len(t.tick(now))
    assert points <= 80  # 20 arrivals (+ antenna flapping never moves without a margin) + summaries


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 2), st.integers(0, 3), st.integers(1, 40)), max_size=60))
def test_presence_transitions_alternate_per_tag(reads):
    """Per tag, arrivals and departures alternate, starting with an arrival."""
    t = PresenceTracker(PresenceSettings(depart_after_s=3, summary_interval_s=5))
    now = 0
    seq: dict[str, list[str]] = {}
    for tag_n, reader_n, antenna, step in reads:
        now += step * S // 4
        changes = t.tick(now) + t.on_read(f"E{tag_n}", f"r{reader_n}", antenna, -70.0 + step, 1, now)
        for c in changes:
            if c.kind != "summary":
                seq.setdefault(c.tag, []).append(c.kind)
    for kinds_ in seq.values():
        assert all(k == ("arrive" if i % 2 == 0 else "depart") for i, k in enumerate(kinds_))
