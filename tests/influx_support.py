"""Reading what the gateway wrote: footfall sums per (device, line, direction) from the real InfluxDB."""

from __future__ import annotations

from collections import Counter

import httpx

from gateway.localservers import InfluxDB1


def footfall_sums(server: InfluxDB1, db: str | None = None) -> Counter:
    """(device, line, "in" | "out") → sum; empty while InfluxDB is down or the database is empty."""
    try:
        rows = server.rows(
            'SELECT sum("entries") AS i, sum("exits") AS o FROM footfall GROUP BY "device", "line"', db or server.db
        )
    except (httpx.HTTPError, RuntimeError):
        return Counter()
    out: Counter = Counter()
    for r in rows:
        out[(r["device"], r["line"], "in")] += r["i"]
        out[(r["device"], r["line"], "out")] += r["o"]
    return out
