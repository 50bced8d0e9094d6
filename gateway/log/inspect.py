"""Read-only views of a log file for `sdgw buffer stats` (safe beside a running gateway: WAL
readers never block the writer)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gateway.log.store import connect, used_bytes


def buffer_stats(path: Path, sinks: list[str], *, now_ns: int | None = None) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no log at {path} (has the gateway run with this config?)")
    now_ns = now_ns or time.time_ns()
    conn = connect(path, readonly=True)
    try:
        cursors = dict(conn.execute("SELECT sink, last_id FROM cursors"))
        out_sinks = {}
        for sink in sinks:
            cursor = cursors.get(sink, 0)
            depth, oldest = conn.execute("SELECT COUNT(*), MIN(ts_ns) FROM records WHERE id > ?", (cursor,)).fetchone()
            first = conn.execute("SELECT ts_ns FROM records WHERE id > ? ORDER BY id LIMIT 1", (cursor,)).fetchone()
            out_sinks[sink] = {
                "cursor": cursor,
                "pending": depth,
                "oldest_pending_age_s": round((now_ns - first[0]) / 1e9, 3) if first else None,
                "oldest_pending_point_age_s": round((now_ns - oldest) / 1e9, 3) if oldest else None,
            }
        dead = dict(conn.execute("SELECT origin || ' ' || reason, COUNT(*) FROM dead_letters GROUP BY 1 ORDER BY 1"))
        offsets = {b for (b,) in conn.execute("SELECT boot_id FROM clock_offsets")}
        waiting = {}
        for boot, count in conn.execute("SELECT boot_id, COUNT(*) FROM waiting_clock GROUP BY boot_id"):
            waiting[boot] = {"records": count, "boot_synchronised": boot in offsets}
        counters = dict(conn.execute("SELECT name, value FROM counters ORDER BY name"))
        (total,) = conn.execute("SELECT COUNT(*) FROM records").fetchone()
        return {
            "log": str(path),
            "used_bytes": used_bytes(conn, path),
            "records": total,
            "sinks": out_sinks,
            "dead_letters": dead,
            "waiting_for_clock": waiting,
            "compaction_and_drops": counters,
        }
    except sqlite3.OperationalError as exc:
        raise RuntimeError(f"{path}: not a readable sdgw log ({exc})") from None
    finally:
        conn.close()
