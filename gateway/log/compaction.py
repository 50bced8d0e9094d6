"""Compaction at the cap (decisions.md D5): telemetry no sink has passed is merged so that totals
stay exact while the log shrinks.

footfall: per-interval deltas of one series (measurement + tag set) within one hour are merged
into one point carrying the sums, stamped with the earliest merged time. Whatever a sink already
sent of that hour stays a separate point, so the sum over the hour in InfluxDB is unchanged.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict

from gateway.log.schema import RecordClass

HOUR_NS = 3_600_000_000_000
FOOTFALL_SUMMED = ("entries", "exits", "interval_s")


def split_head(head: bytes) -> tuple[bytes, bytes]:
    """Line protocol head → (series, fields): the first space not escaped by a backslash."""
    i = 0
    while True:
        i = head.index(b" ", i)
        if head[i - 1 : i] != b"\\":
            return head[:i], head[i + 1 :]
        i += 1


def _int_fields(fields: bytes) -> dict[bytes, int] | None:
    out: dict[bytes, int] = {}
    for part in fields.split(b","):
        key, _, value = part.partition(b"=")
        if not value.endswith(b"i"):
            return None
        out[key] = int(value[:-1])
    return out


def compact_footfall(conn: sqlite3.Connection, after_id: int) -> int:
    rows = conn.execute(
        "SELECT id, head, ts_ns FROM records WHERE measurement = 'footfall' AND class = ? AND id > ? ORDER BY id",
        (int(RecordClass.TELEMETRY), after_id),
    ).fetchall()
    groups: dict[tuple[bytes, int], list[tuple[int, dict[bytes, int], int]]] = defaultdict(list)
    for rid, head, ts in rows:
        series, fields = split_head(head)
        parsed = _int_fields(fields)
        if parsed is None:
            continue
        groups[(series, ts // HOUR_NS)].append((rid, parsed, ts))
    merged = 0
    for (series, _hour), members in groups.items():
        if len(members) < 2:
            continue
        keep_id = members[0][0]
        total: dict[bytes, int] = {}
        for _, fields, _ in members:
            for key, value in fields.items():
                total[key] = total.get(key, 0) + value
        ts = min(m[2] for m in members)
        head = series + b" " + b",".join(k + b"=" + str(v).encode() + b"i" for k, v in total.items())
        conn.execute("UPDATE records SET head = ?, ts_ns = ? WHERE id = ?", (head, ts, keep_id))
        drop = [m[0] for m in members[1:]]
        conn.execute(f"DELETE FROM records WHERE id IN ({','.join('?' * len(drop))})", drop)
        merged += len(drop)
    return merged


COMPACTORS = {"footfall": compact_footfall}


def compact(conn: sqlite3.Connection, *, after_id: int) -> dict[str, int]:
    """Run every compactor over records after `after_id`; returns merged-away counts by name."""
    return {name: fn(conn, after_id) for name, fn in COMPACTORS.items()}
