"""Footfall API bench (issue 4, point 7): `/v1/footfall` latency p50/p99 and requests/s for one day
at 15-minute buckets and 30 days at daily buckets, over 50 sites × 90 days of data in InfluxDB.

A benchmark, not a test (decisions.md D19): it reports, it never fails on a miss.

Set-up: one InfluxDB 1.6.7 (gateway/localservers.py, loopback, a temp dir) holding `footfall` points
every 15 minutes for 50 sites (one counter with two lines each) over 90 days — 864,000 points,
written as line protocol; `sdgw api` (the central API process, uvicorn) over it; a merchant key per
request route. Every request asks for a different site and window (no two alike), with no
If-None-Match, so nothing is answered from a cache.

Reference, same run: the very InfluxQL query the API issues for the same request (built with the
API's own bucket and grain code), sent straight to InfluxDB over HTTP by the same client — the floor
a stateless API over InfluxDB cannot go below. The
API's figures are quoted beside it and as a ratio.

Latency: one request at a time (p50/p99 of N). Throughput: C concurrent clients for T seconds.

    .venv/bin/python tests/bench/footfall_api_bench.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT)]

import httpx  # noqa: E402

from gateway.api.timebuckets import boundaries, query_grain  # noqa: E402
from gateway.localservers import InfluxDB1, free_port  # noqa: E402

SITES = 50
DAYS = 90
ZONE = ZoneInfo("Asia/Shanghai")
FIRST_DAY = datetime(2026, 8, 1, tzinfo=ZONE)
NS = 1_000_000_000


def fill(influx: InfluxDB1, db: str) -> int:
    """50 sites × 90 days × 96 quarter hours × 2 lines, in 20,000-line writes."""
    rng = random.Random(42)
    start = int(FIRST_DAY.timestamp())
    lines: list[str] = []
    written = 0
    with httpx.Client(timeout=120) as client:
        for s in range(SITES):
            site = f"site-{s:02d}"
            for q in range(DAYS * 96):
                t = (start + q * 900) * NS
                for line in ("Door1", "Door2"):
                    i, o = rng.randint(0, 40), rng.randint(0, 40)
                    lines.append(
                        f"footfall,district=d1,street=st-{s % 5},gateway=gw-{s % 5},site={site},device=cam-{s:02d},"
                        f"line={line} entries={i}i,exits={o}i,interval_s=900i {t}"
                    )
                if len(lines) >= 20_000:
                    r = client.post(f"{influx.url}/write", params={"db": db}, content="\n".join(lines))
                    r.raise_for_status()
                    written += len(lines)
                    lines.clear()
        if lines:
            client.post(f"{influx.url}/write", params={"db": db}, content="\n".join(lines)).raise_for_status()
            written += len(lines)
    return written


def config_text(tmp: Path, influx: InfluxDB1, db: str, port: int) -> str:
    sites = "".join(
        f'[[sites]]\nid = "site-{s:02d}"\nmerchant = "m-{s // 5:02d}"\nstreet = "st-{s % 5}"\nhours = "10:00-22:00"\n'
        for s in range(SITES)
    )
    return f"""
[gateway]
district = "d1"
street = "st-0"
id = "central"
data_dir = "{tmp}"
[[sinks]]
name = "central"
url = "{influx.url}"
database = "{db}"
[api]
host = "127.0.0.1"
port = {port}
rate_limit_per_s = 0
{sites}"""


def make_key(cfg: Path, sites: list[str]) -> str:
    args = [sys.executable, "-m", "gateway.cli", "keys", "create", "-c", str(cfg), "--role", "merchant"]
    for s in sites:
        args += ["--site", s]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[0]


def windows(kind: str, n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(site, from, to, interval) — all different."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        site = f"site-{rng.randrange(SITES):02d}"
        if kind == "day15m":
            day = FIRST_DAY + timedelta(days=rng.randrange(DAYS))
            out.append((site, day.isoformat(), (day + timedelta(days=1)).isoformat(), "15m"))
        else:
            day = FIRST_DAY + timedelta(days=rng.randrange(DAYS - 30))
            out.append((site, day.isoformat(), (day + timedelta(days=30)).isoformat(), "1d"))
    return out


def influxql_for(site: str, frm: str, to: str, interval: str) -> str:
    """The very query the API issues for this request (its own bucket and grain code): the floor."""
    start, end = datetime.fromisoformat(frm), datetime.fromisoformat(to)
    bounds = boundaries(start, end, interval, ZONE)
    grain_s, offset_s = query_grain(bounds)
    first_ns, last_ns = int(bounds[0].timestamp()) * NS, int(bounds[-1].timestamp()) * NS
    return (
        f'SELECT sum("entries") AS "in", sum("exits") AS "out" FROM "footfall" WHERE '
        f"\"district\" = 'd1' AND \"site\" = '{site}' AND time >= {first_ns} AND time < {last_ns} "
        f"GROUP BY time({grain_s}s, {offset_s}s) fill(none)"
    )


async def one(client: httpx.AsyncClient, target: str, w, key: str, influx: InfluxDB1, db: str) -> float:
    site, frm, to, interval = w
    t0 = time.perf_counter()
    if target == "api":
        r = await client.get(
            "/v1/footfall",
            params={"site": site, "from": frm, "to": to, "interval": interval},
            headers={"Authorization": f"Bearer {key}"},
        )
    else:
        r = await client.get(f"{influx.url}/query", params={"db": db, "q": influxql_for(site, frm, to, interval)})
    elapsed = time.perf_counter() - t0
    if r.status_code != 200:
        raise SystemExit(f"{target} answered {r.status_code}: {r.text[:300]}")
    return elapsed


async def measure(target: str, kind: str, api_url: str, key: str, influx: InfluxDB1, db: str, args) -> dict:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as client:
        for w in windows(kind, 20, seed=1):  # warm-up: connections, InfluxDB's shard caches
            await one(client, target, w, key, influx, db)
        lat = [await one(client, target, w, key, influx, db) for w in windows(kind, args.n, seed=2)]
        pending = windows(kind, 100_000, seed=3)
        done = 0
        deadline = time.perf_counter() + args.seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await one(client, target, pending.pop(), key, influx, db)
                done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        rate = done / (time.perf_counter() - t0)
    q = statistics.quantiles(lat, n=100)
    return {"p50_ms": round(q[49] * 1000, 1), "p99_ms": round(q[98] * 1000, 1), "req_per_s": round(rate, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests (figures less stable)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.n = 100 if args.quick else 400
    args.seconds = 5 if args.quick else 15
    args.concurrency = 8
    with tempfile.TemporaryDirectory(prefix="sdgw-footfall-bench-") as tmp_s:
        tmp = Path(tmp_s)
        with InfluxDB1(tmp / "influxd") as influx:
            db = "bench"
            influx.create_database(db)
            t0 = time.perf_counter()
            points = fill(influx, db)
            print(f"filled {points} points in {time.perf_counter() - t0:.1f} s", flush=True)
            port = free_port()
            cfg = tmp / "sdgw.toml"
            cfg.write_text(config_text(tmp, influx, db, port))
            key = make_key(cfg, [f"site-{s:02d}" for s in range(SITES)])
            api = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "api", "-c", str(cfg)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 30
                while True:
                    try:
                        if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        raise SystemExit("sdgw api did not come up")
                    time.sleep(0.2)
                results = {}
                for kind in ("day15m", "month1d"):
                    for target in ("api", "influxql"):
                        results[f"{kind}/{target}"] = asyncio.run(measure(target, kind, url, key, influx, db, args))
            finally:
                api.terminate()
                api.wait(10)
    labels = {"day15m": "1 day at 15m", "month1d": "30 days at 1d"}
    for kind, label in labels.items():
        a, r = results[f"{kind}/api"], results[f"{kind}/influxql"]
        print(
            f"{label:14} API p50 {a['p50_ms']} ms, p99 {a['p99_ms']} ms, {a['req_per_s']} req/s "
            f"(c={args.concurrency}) | InfluxQL alone p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
            f"{r['req_per_s']} req/s | ratio p50 {a['p50_ms'] / r['p50_ms']:.2f}×, "
            f"req/s {a['req_per_s'] / r['req_per_s']:.2f}×"
        )
    if args.json:
        args.json.write_text(json.dumps({"at": datetime.now(UTC).isoformat(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
