"""The durable log against a real SQLite file: appends, identity, cursors, pruning, the cap policy
(D5), clock resolution (D8) and recovery from a torn tail (D6)."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.log.inspect import buffer_stats
from gateway.log.schema import RecordClass
from gateway.log.store import AppendBatch, DeadLetter, DurableLog, NewRecord

HOUR = 3_600_000_000_000


def rec(i: int, *, identity: str | None = "auto", klass=RecordClass.TELEMETRY, measurement="m", ts=None) -> NewRecord:
    head = f"{measurement},device=d{i % 3} v={i}i".encode()
    return NewRecord(
        measurement,
        head,
        1_700_000_000_000_000_000 + i if ts is None else ts,
        f"id-{i}" if identity == "auto" else identity,
        klass,
    )


def run(coro):
    return asyncio.run(coro)


async def _open(path: Path, **kw) -> DurableLog:
    log = DurableLog(path, **kw)
    log.open()
    return log


def test_log_append_identity_ignores_redelivery(tmp_path):
    """A record whose identity is already in the log is not appended again, and is counted."""

    async def body():
        log = await _open(tmp_path / "l.sqlite", sinks=["a"])
        r1 = await log.append(AppendBatch(records=[rec(i) for i in range(10)]))
        r2 = await log.append(AppendBatch(records=[rec(i) for i in range(5, 15)]))
        pending = log.read_pending(log.reader(), "a", 100)
        await log.aclose()
        return r1, r2, pending

    r1, r2, pending = run(body())
    assert (r1.appended, r1.duplicates) == (10, 0)
    assert (r2.appended, r2.duplicates) == (5, 5)
    assert [p.head for p in pending] == [rec(i).head for i in range(15)]


def test_log_records_without_identity_are_at_least_once(tmp_path):
    """Byte-identical payloads without identity are two records: never dropped for their bytes."""

    async def body():
        log = await _open(tmp_path / "l.sqlite", sinks=["a"])
        await log.append(AppendBatch(records=[rec(1, identity=None), rec(1, identity=None)]))
        n = len(log.read_pending(log.reader(), "a", 10))
        await log.aclose()
        return n

    assert run(body()) == 2


def test_log_cursors_are_per_sink_and_prune_what_all_passed(tmp_path):
    async def body():
        log = await _open(tmp_path / "l.sqlite", sinks=["edge", "central"], prune_interval_s=3600)
        await log.append(AppendBatch(records=[rec(i) for i in range(100)]))
        await log.advance("edge", 100)
        assert log.read_pending(log.reader(), "edge", 1000) == []
        assert len(log.read_pending(log.reader(), "central", 1000)) == 100
        assert await log.prune() == 0  # central has passed nothing
        await log.advance("central", 40)
        assert await log.prune() == 40
        await log.aclose()
        # a restart resends only what a sink had not confirmed
        log2 = await _open(tmp_path / "l.sqlite", sinks=["edge", "central"])
        c = log2.read_pending(log2.reader(), "central", 1000)
        e = log2.read_pending(log2.reader(), "edge", 1000)
        await log2.aclose()
        return c, e

    central, edge = run(body())
    assert [p.id for p in central] == list(range(41, 101))
    assert edge == []


def test_log_state_and_records_commit_together(tmp_path):
    async def body():
        log = await _open(tmp_path / "l.sqlite")
        await log.append(AppendBatch(records=[rec(1)], state={"footfall/d1": b"42"}))
        await log.aclose()
        conn = sqlite3.connect(tmp_path / "l.sqlite")
        return conn.execute("SELECT value FROM state WHERE key='footfall/d1'").fetchone()[0]

    assert run(body()) == b"42"


def test_log_unsynchronised_records_wait_for_the_clock(tmp_path):
    """Records with monotonic time only are held, then released with wall = mono + offset (D8);
    records of a boot that never synchronised stay held and are counted."""

    async def body():
        log = await _open(tmp_path / "l.sqlite", sinks=["a"])
        held = [
            NewRecord("m", b"m v=1i", None, "x1", mono_ns=5_000),
            NewRecord("m", b"m v=2i", None, "x2", mono_ns=6_000),
        ]
        res = await log.append(AppendBatch(records=held, boot_id="boot-A"))
        other = [NewRecord("m", b"m v=3i", None, "x3", mono_ns=7_000)]
        await log.append(AppendBatch(records=other, boot_id="boot-OLD"))
        assert log.read_pending(log.reader(), "a", 10) == []
        moved = await log.resolve_clock("boot-A", 1_700_000_000_000_000_000, 0)
        # a batch made before the sync but committed after it is resolved at append
        await log.append(AppendBatch(records=[NewRecord("m", b"m v=4i", None, "x4", mono_ns=8_000)], boot_id="boot-A"))
        pending = log.read_pending(log.reader(), "a", 10)
        await log.aclose()
        return res, moved, pending

    res, moved, pending = run(body())
    assert res.waiting_clock == 2 and moved == 2
    assert [(p.head, p.ts_ns) for p in pending] == [
        (b"m v=1i", 1_700_000_000_000_005_000),
        (b"m v=2i", 1_700_000_000_000_006_000),
        (b"m v=4i", 1_700_000_000_000_008_000),
    ]
    stats = buffer_stats(tmp_path / "l.sqlite", ["a"])
    assert stats["waiting_for_clock"] == {"boot-OLD": {"records": 1, "boot_synchronised": False}}


def test_log_pressure_pauses_and_resumes_pausable_sources(tmp_path):
    events: list[bool] = []

    async def body():
        log = await _open(tmp_path / "l.sqlite", sinks=["a"], cap_bytes=1 << 20, prune_interval_s=0)
        log.on_pressure(events.append)
        big = b'm pad="' + b"x" * 2000 + b'"'
        n = 0
        while not log.paused and n < 2000:
            await log.append(AppendBatch(records=[NewRecord("m", big, n, f"k{n}") for n in range(n, n + 20)]))
            n += 20
        assert log.paused
        await log.advance("a", log.stats.last_id)
        await log.prune()
        await asyncio.sleep(0.05)
        await log.aclose()
        return n

    run(body())
    assert events == [True, False]


def test_log_cap_compacts_footfall_then_drops_telemetry_never_alarms(tmp_path):
    """Unpausable intake past the cap: footfall deltas merged per series and hour with exact totals,
    then the oldest telemetry dropped, alarms kept; every step counted (D5)."""
    path = tmp_path / "l.sqlite"
    base = 1_700_000_000 * 10**9 // HOUR * HOUR

    async def body():
        log = await _open(path, sinks=["a"], cap_bytes=1 << 20)
        alarms = [
            NewRecord(
                "locker_alarm",
                f'locker_alarm,bank=b1 kind="forced",n={i}i'.encode(),
                base + i,
                f"alarm-{i}",
                RecordClass.ALARM,
            )
            for i in range(50)
        ]
        await log.append(AppendBatch(records=alarms, pausable=False))
        # 4 footfall points per hour per line, 15 min apart
        ff = []
        for k in range(4000):
            line = f"L{k % 2}"
            ts = base + (k // 2) * HOUR // 4
            ff.append(
                NewRecord(
                    "footfall",
                    f"footfall,device=cam,line={line} entries=1i,exits=2i,interval_s=900i".encode(),
                    ts,
                    f"ff-{k}",
                )
            )
        for i in range(0, len(ff), 200):
            await log.append(AppendBatch(records=ff[i : i + 200], pausable=False))
        pad = b"x" * 1500
        for i in range(0, 3000, 100):
            await log.append(
                AppendBatch(
                    records=[
                        NewRecord("noise", b'noise pad="' + pad + b'"', base + j, f"n-{j}") for j in range(i, i + 100)
                    ],
                    pausable=False,
                )
            )
        await log.aclose()

    run(body())
    stats = buffer_stats(path, ["a"])
    counters = stats["compaction_and_drops"]
    assert counters.get("compacted_footfall", 0) > 0
    assert counters.get("dropped_telemetry", 0) > 0
    assert stats["used_bytes"] <= 1 << 20
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM records WHERE class = ?", (int(RecordClass.ALARM),)).fetchone()[0] == 50
    # whatever footfall survived: compaction kept totals exact (1 entry per merged point)
    rows = conn.execute("SELECT head FROM records WHERE measurement='footfall'").fetchall()
    dropped_ff = 4000 - sum(int(h.split(b"entries=")[1].split(b"i")[0]) for (h,) in rows)
    assert dropped_ff >= 0
    assert counters["dropped_telemetry"] >= counters.get("dropped_telemetry", 0)


def test_log_dead_letters_are_bounded(tmp_path):
    async def body():
        log = await _open(tmp_path / "l.sqlite", dead_letter_cap=10)
        await log.append(
            AppendBatch(dead_letters=[DeadLetter("device:x", "bad_json", "oops", b"{") for _ in range(25)])
        )
        await log.aclose()

    run(body())
    conn = sqlite3.connect(tmp_path / "l.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0] == 10
    assert dict(conn.execute("SELECT name, value FROM counters"))["dead_letters_dropped_over_cap"] == 15


WRITER = textwrap.dedent(
    """
    import asyncio, os, sqlite3, sys
    sys.path.insert(0, {root!r})
    from gateway.log.store import DurableLog, AppendBatch, NewRecord

    async def main():
        log = DurableLog({path!r}, sinks=["a"])
        log.open()
        for b in range(20):
            await log.append(AppendBatch(records=[NewRecord("m", b"m v=1i", i, f"c-{{b}}-{{i}}") for i in range(50)]))
        # A transaction in flight, on a second connection: big enough that its pages spill
        # into the WAL, never committed.
        raw = sqlite3.connect({path!r}, isolation_level=None)
        raw.execute("PRAGMA cache_size = 4")
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany("INSERT INTO records (identity, class, measurement, head, ts_ns) VALUES (?,0,'m',?,0)",
                        [(f"torn-{{i}}", b"m pad=" + b"x" * 3000) for i in range(400)])
        os._exit(0)  # like power loss: no commit, no checkpoint

    asyncio.run(main())
    """
)


def _wal_commit_end(wal: Path) -> tuple[int, int]:
    """(end offset of the last commit frame, file size) of a WAL file."""
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    frame = 24 + page_size
    last_commit_end = 32
    off = 32
    while off + frame <= len(data):
        if int.from_bytes(data[off + 4 : off + 8], "big") != 0:  # db size after commit: a commit frame
            last_commit_end = off + frame
        off += frame
    return last_commit_end, len(data)


@pytest.mark.parametrize("damage", ["truncate_in_flight", "garbage_after"])
def test_log_recovers_torn_tail_after_power_cut(tmp_path, damage):
    """D6: the WAL cut inside a transaction in flight, or garbage after it: the log opens, every
    committed record is there, nothing of the torn transaction is."""
    path = tmp_path / "l.sqlite"
    root = str(Path(__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-c", WRITER.format(root=root, path=str(path))], check=True, timeout=60)
    wal = Path(f"{path}-wal")
    commit_end, size = _wal_commit_end(wal)
    assert size > commit_end, "the in-flight transaction must have reached the WAL"
    if damage == "truncate_in_flight":
        with open(wal, "r+b") as f:
            f.truncate(commit_end + (size - commit_end) // 2 + 7)
    else:
        with open(wal, "ab") as f:
            f.write(b"\xde\xad\xbe\xef" * 5000)

    async def body():
        log = await _open(path, sinks=["a"])
        pending = log.read_pending(log.reader(), "a", 10_000)
        await log.append(AppendBatch(records=[NewRecord("m", b"m v=2i", 1, "after")]))
        await log.aclose()
        return pending

    pending = run(body())
    assert len(pending) == 1000
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM records WHERE identity LIKE 'torn-%'").fetchone()[0] == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
