"""`make bench`: the gateway beside a plain reference consumer, same run, same servers.

A benchmark, not a test: it reports figures and PASS/MISS against the targets of issue 8 and never
fails on a miss (decisions.md D19); it exits non-zero only when a run could not be measured or lost
data. One Mosquitto 2.0.11 and one InfluxDB 1.6.7 (gateway/localservers.py, loopback, a temp dir)
serve every scenario; each scenario gets fresh databases, fresh client ids and its own topics, and
the broker session of every consumer is dropped afterwards.

Scenarios (sizes: FULL and QUICK below; the full run takes ≈4 minutes, `--quick` ≈1 minute with
sizes too small for representative drain figures):
  backlog   both consumers: stopped with a persistent session, N reports pre-queued on the broker by
            4 publisher processes, consumer started; measured from its MQTT connection until all N
            points were accepted by InfluxDB.
  load      both consumers: 8,000 msg/s offered by 4 paced publisher processes (2,000 each).
  latency   both consumers at 1,000 msg/s (one publisher): publish → visible in InfluxDB, p50/p99,
            and the CPU per message at that rate; the gateway also with the config's default flush.
  outage    the gateway with InfluxDB stopped takes a pre-queued backlog into its log; InfluxDB is
            started again while 1,000 msg/s keep arriving; drain points/s until the backlog is out,
            beside InfluxDB's own intake of pre-built 5,000-point batches (twice in the full run).

CPU is utime + stime of the consumer's process from /proc/<pid>/stat, all threads, taken at the
start and at the end of the measured window (for the gateway also per thread); peak RSS is VmHWM
from /proc/<pid>/status just before the consumer is stopped (one fresh process per scenario).

Every report is one VIVOTEK document with one counting rule, i.e. one `footfall` point, so "per
message" and "per point" are the same figure here. Zero loss is checked everywhere: points in
InfluxDB == reports published, and per (device, line) sums == the emulator's ground truth.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
import tempfile
import time
import traceback
import zlib
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "firmware-stubs")]

import httpx  # noqa: E402
import orjson  # noqa: E402
from vivotek_counter import Street  # noqa: E402

from gateway.localservers import InfluxDB1, Mosquitto  # noqa: E402
from gateway.sinks.lineproto import encode_head, encode_line  # noqa: E402
from tests.bench.benchlib import (  # noqa: E402
    BenchError,
    GatewayConsumer,
    Publishers,
    ReferenceConsumer,
    check_loss,
    cpu_s,
    fresh_db,
    gateway_cpu_split,
    machine_info,
    peak_rss_mb,
    publish_backlog,
    thread_cpu,
    wait_until,
)

RESULTS = ROOT / "tests" / "bench" / "results"
CAMERAS = [f"cam-{i:02d}" for i in range(20)]
FLUSH_S = 0.25  # the sink's flush_interval_s the README recommends (deploy/gateway.example.toml)
BATCH = 5000  # the sink's batch_size (its default) and the reference consumer's batch
REF_FLUSH_S = 1.0  # the reference consumer posts what waited this long, when no batch filled
SAME_FLUSH_AS_REF_S = REF_FLUSH_S  # the gateway also at the reference's flush: like for like
INTAKE_ROUNDS = 2  # InfluxDB's own intake: plain and gzip alternated, the mean reported


@dataclass(frozen=True)
class Sizes:
    backlog: int  # reports pre-queued for each consumer
    load_s: float  # seconds at 8,000 msg/s
    latency_s: float  # seconds at 1,000 msg/s
    outage_backlog: int  # records in the log when InfluxDB comes back
    publishers: int = 4
    load_rate: float = 8000
    latency_rate: float = 1000
    live_rate: float = 1000  # new messages during the outage drain
    latency_same_flush: bool = True  # also measure p99 with the reference's flush interval
    outage_rounds: int = 2  # the drain (and InfluxDB's intake beside it) measured this many times


FULL = Sizes(backlog=200_000, load_s=15, latency_s=20, outage_backlog=300_000)
QUICK = Sizes(backlog=40_000, load_s=5, latency_s=8, outage_backlog=60_000, latency_same_flush=False, outage_rounds=1)


class Bench:
    def __init__(self, root: Path, broker: Mosquitto, influx: InfluxDB1, sizes: Sizes, keep: bool = False) -> None:
        self.keep = keep
        self.root = root
        self.broker = broker
        self.influx = influx
        self.sizes = sizes
        self.run_id = datetime.now(UTC).strftime("%H%M%S")
        self._intake_lines: tuple | None = None

    # -- helpers ----------------------------------------------------------------------------------

    def consumer(self, kind: str, scenario: str, db: str, topic_template: str, flush_s: float | None = None):
        """The gateway (sink flush_interval_s default FLUSH_S) or the reference consumer (flush 1 s)."""
        client_id = f"bench-{kind}-{scenario}-{self.run_id}"
        root = self.root / f"{kind}-{scenario}"
        if kind == "gateway":
            return GatewayConsumer(
                root,
                broker_port=self.broker.port,
                influx=self.influx,
                db=db,
                cameras=CAMERAS,
                topic_template=topic_template,
                client_id=client_id,
                flush_interval_s=FLUSH_S if flush_s is None else flush_s,
                batch_size=BATCH,
            )
        return ReferenceConsumer(
            root,
            broker_port=self.broker.port,
            influx=self.influx,
            db=db,
            topic_filter=topic_template.replace("{camera}", "+"),
            client_id=client_id,
            batch=BATCH,
            flush_s=REF_FLUSH_S if flush_s is None else flush_s,
        )

    def done_with(self, db: str) -> None:
        """Drop a scenario's database once checked, so every scenario meets the same lean server."""
        if not self.keep:
            self.influx.query(f'DROP DATABASE "{db}"')

    def servers_cpu(self) -> dict[str, float]:
        return {"mosquitto": cpu_s(self.broker.proc.pid), "influxd": cpu_s(self.influx.proc.pid)}

    @staticmethod
    def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: round(after[k] - before[k], 2) for k in before}

    def register_session(self, consumer) -> None:
        """Start the consumer once so the broker holds its persistent session and subscriptions."""
        consumer.start()
        consumer.wait_connected()
        time.sleep(0.5)  # SUBACK
        consumer.stop()

    # -- scenario 1: backlog drain ----------------------------------------------------------------

    def backlog(self, kind: str) -> dict:
        n = self.sizes.backlog
        db = fresh_db(self.influx, f"bench_{kind}_backlog")
        topic = "bench/backlog/{camera}/report"
        c = self.consumer(kind, "backlog", db, topic)
        samples: list[tuple[float, int, int]] = []
        try:
            self.register_session(c)
            pubs, pub_rate = publish_backlog(
                self.broker.port, topic_template=topic, cameras=CAMERAS, count=n, nproc=self.sizes.publishers, seed=1
            )
            c.start()
            t0 = c.wait_connected()
            cpu0, srv0, th0 = cpu_s(c.pid), self.servers_cpu(), thread_cpu(c.pid)

            def done():
                if kind == "gateway":
                    seq, cur = c.log_ids()
                    samples.append((time.time(), seq, cur))
                    return cur >= n and time.time()
                return c.delivered() >= n and time.time()

            t1 = wait_until(done, timeout_s=60 + n / 1000, interval_s=0.02, what=f"{kind}: {n} points delivered")
            cpu1, srv1, hwm, th1 = cpu_s(c.pid), self.servers_cpu(), peak_rss_mb(c.pid), thread_cpu(c.pid)
            extra = c.metrics()
            loss = check_loss(self.influx, db, n, pubs.truth)
            self.done_with(db)
        finally:
            c.stop()
            c.drop_session(self.broker.port)
        wall = t1 - t0
        out = {
            "reports": n,
            "prequeue_publish_rate": round(pub_rate),
            "wall_s": round(wall, 3),
            "msg_per_s": round(n / wall),
            "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_us_per_msg": round((cpu1 - cpu0) / n * 1e6, 2),
            "cpu_utilisation": round((cpu1 - cpu0) / wall, 2),
            "peak_rss_mb": round(hwm, 1),
            "servers_cpu_s": self.cpu_delta(srv0, srv1),
            "counters": extra,
            **loss,
        }
        if kind == "gateway":
            out["cpu_us_per_msg_by_thread"] = gateway_cpu_split(c.pid, th0, th1, n)
            out["gateway_warnings"] = c.warnings()
        if samples:  # when the gateway's log had taken in the whole backlog: intake vs sink
            logged = next((t for t, seq, _ in samples if seq >= n), None)
            if logged is not None:
                out["gateway_all_logged_after_s"] = round(logged - t0, 3)
                out["gateway_log_intake_msg_per_s"] = round(n / max(logged - t0, 1e-6))
        return out

    # -- scenario 2: offered load -----------------------------------------------------------------

    def load(self, kind: str) -> dict:
        s = self.sizes
        n = int(s.load_rate * s.load_s)
        db = fresh_db(self.influx, f"bench_{kind}_load")
        topic = "bench/load/{camera}/report"
        c = self.consumer(kind, "load", db, topic)
        pubs = None
        samples: list[tuple[float, int, int]] = []
        try:
            c.start()
            c.wait_connected()
            time.sleep(0.5)
            pubs = Publishers(
                self.broker.port,
                topic_template=topic,
                cameras=CAMERAS,
                count=n,
                nproc=s.publishers,
                rate_each=s.load_rate / s.publishers,
                seed=2,
            )
            cpu0, srv0, th0 = cpu_s(c.pid), self.servers_cpu(), thread_cpu(c.pid)
            t0 = pubs.go()

            def done():
                if kind == "gateway":
                    seq, cur = c.log_ids()
                    samples.append((time.time(), seq, cur))
                    return cur >= n and time.time()
                return c.delivered() >= n and time.time()

            t1 = wait_until(done, timeout_s=60 + 10 * s.load_s, interval_s=0.02, what=f"{kind}: {n} points delivered")
            cpu1, srv1, hwm, th1 = cpu_s(c.pid), self.servers_cpu(), peak_rss_mb(c.pid), thread_cpu(c.pid)
            pubs.wait()
            extra = c.metrics()
            loss = check_loss(self.influx, db, pubs.published, pubs.truth)
            self.done_with(db)
        finally:
            if pubs is not None:
                pubs.kill()
            c.stop()
            c.drop_session(self.broker.port)
        wall = t1 - t0
        diag: dict = {}
        if kind == "gateway":
            diag["cpu_us_per_msg_by_thread"] = gateway_cpu_split(c.pid, th0, th1, n)
            logged = next((t for t, seq, _ in samples if seq >= n), t1)
            diag["all_logged_after_last_publish_s"] = round(logged - pubs.t_last, 3)
            diag["max_records_logged_not_yet_in_influxdb"] = max(seq - cur for _, seq, cur in samples)
            diag["gateway_warnings"] = c.warnings()
        return {
            "reports": n,
            "offered_target_msg_per_s": s.load_rate,
            "publishers": s.publishers,
            "offered_msg_per_s": round(pubs.offered_rate()),
            "wall_s": round(wall, 3),
            "msg_per_s": round(n / wall),
            "last_visible_after_last_publish_s": round(t1 - pubs.t_last, 3),
            "cpu_s": round(cpu1 - cpu0, 2),
            "cpu_us_per_msg": round((cpu1 - cpu0) / n * 1e6, 2),
            "cpu_utilisation": round((cpu1 - cpu0) / wall, 2),
            "peak_rss_mb": round(hwm, 1),
            "servers_cpu_s": self.cpu_delta(srv0, srv1),
            "counters": extra,
            **diag,
            **loss,
        }

    # -- scenario 3: latency ----------------------------------------------------------------------

    def latency(self, kind: str, flush_s: float) -> dict:
        s = self.sizes
        n = int(s.latency_rate * s.latency_s)
        tag = f"{kind}-{int(flush_s * 1000)}ms"
        db = fresh_db(self.influx, f"bench_latency_{tag.replace('-', '_')}")
        topic = f"bench/latency-{tag}/{{camera}}/report"
        c = self.consumer(kind, f"latency-{tag}", db, topic, flush_s=flush_s)
        times_dir = self.root / f"latency-{tag}"
        times_dir.mkdir()
        polls: list[tuple[float, float, int]] = []
        poll_s = 0.02
        http = httpx.Client(timeout=10)
        q = {"q": 'SELECT count("entries") FROM footfall', "db": db}
        pubs = None
        try:
            c.start()
            c.wait_connected()
            time.sleep(0.5)
            pubs = Publishers(
                self.broker.port,
                topic_template=topic,
                cameras=CAMERAS,
                count=n,
                nproc=1,
                rate_each=s.latency_rate,
                seed=3,
                times_dir=times_dir,
            )
            cpu0, th0 = cpu_s(c.pid), thread_cpu(c.pid)
            t0 = pubs.go()
            deadline = time.monotonic() + 60 + 3 * s.latency_s
            count = 0
            while count < n:
                if time.monotonic() > deadline:
                    raise BenchError(f"latency: only {count} of {n} points visible")
                ts = time.time()
                r = http.post(f"{self.influx.url}/query", data=q)
                tr = time.time()
                series = r.json()["results"][0].get("series")
                count = series[0]["values"][0][1] if series else 0
                polls.append((ts, tr, count))
                time.sleep(max(0.0, poll_s - (time.time() - ts)))
            cpu1, hwm, th1 = cpu_s(c.pid), peak_rss_mb(c.pid), thread_cpu(c.pid)
            t1 = polls[-1][1]
            pubs.wait()
            loss = check_loss(self.influx, db, pubs.published, pubs.truth)
            self.done_with(db)
        finally:
            http.close()
            if pubs is not None:
                pubs.kill()
            c.stop()
            c.drop_session(self.broker.port)
        stamps = array("d")
        stamps.frombytes(pubs.times_files[0].read_bytes())
        upper, lower = attribute(stamps, polls)
        query_ms = [1000 * (tr - ts) for ts, tr, _ in polls]
        by_thread = (
            {"cpu_us_per_msg_by_thread": gateway_cpu_split(c.pid, th0, th1, n), "gateway_warnings": c.warnings()}
            if kind == "gateway"
            else {}
        )
        return {
            "reports": n,
            "offered_msg_per_s": round(pubs.offered_rate()),
            "flush_interval_s": flush_s,
            "method": "one publisher, reports in order; count(entries) polled every 20 ms; report k is "
            "visible at the answer of the first poll counting > k (upper bound; lower bound = send time of "
            "the poll before)",
            "p50_s": round(percentile(upper, 50), 3),
            "p99_s": round(percentile(upper, 99), 3),
            "max_s": round(max(upper), 3),
            "p50_lower_bound_s": round(percentile(lower, 50), 3),
            "p99_lower_bound_s": round(percentile(lower, 99), 3),
            "poll_interval_s": poll_s,
            "polls": len(polls),
            "poll_query_ms_median": round(statistics.median(query_ms), 2),
            "cpu_us_per_msg": round((cpu1 - cpu0) / n * 1e6, 2),
            "cpu_utilisation": round((cpu1 - cpu0) / (t1 - t0), 3),
            "peak_rss_mb": round(hwm, 1),
            **by_thread,
            **loss,
        }

    # -- scenario 4: drain after an InfluxDB outage -----------------------------------------------

    def outage(self, rnd: int = 0) -> dict:
        s = self.sizes
        b = s.outage_backlog
        db = fresh_db(self.influx, f"bench_gateway_outage_{rnd}")
        topic = f"bench/outage{rnd}/{{camera}}/report"
        live_topic = f"bench/outage{rnd}-live/{{camera}}/report"
        live_cams = [f"live-{i:02d}" for i in range(4)]
        c = self.consumer("gateway", f"outage{rnd}", db, topic)
        # the live publisher's cameras are devices of the same gateway, on topics of their own
        c.proc.config_path.write_text(
            c.config_text
            + "".join(
                f'[[devices]]\nid = "{cam}"\nmodel = "vivotek-sc8131"\nsite = "shop-1"\n'
                f'topic = "{live_topic.format(camera=cam)}"\n'
                for cam in live_cams
            )
        )
        live = None
        samples: list[tuple[float, int, int, float]] = []
        try:
            self.register_session(c)
            pubs, pub_rate = publish_backlog(
                self.broker.port, topic_template=topic, cameras=CAMERAS, count=b, nproc=s.publishers, seed=4 + 10 * rnd
            )
            self.influx.stop()
            t_down = time.time()
            c.start()
            t_conn = c.wait_connected()
            cpu_conn = cpu_s(c.pid)
            t_logged = wait_until(
                lambda: c.log_ids()[0] >= b and time.time(), timeout_s=60 + b / 2000, what="backlog in the log"
            )
            cpu_logged = cpu_s(c.pid)
            hwm_logged = peak_rss_mb(c.pid)
            live = Publishers(
                self.broker.port,
                topic_template=live_topic,
                cameras=live_cams,
                count=int(s.live_rate * 3600),
                nproc=1,
                rate_each=s.live_rate,
                seed=5 + 10 * rnd,
                lazy=True,
            )
            live.go()
            time.sleep(1.0)
            seq_restart, cur_restart = c.log_ids()
            t_restart = time.time()
            self.influx.start()
            t_up = time.time()

            def drained():
                seq, cur = c.log_ids()
                samples.append((time.time(), seq, cur, cpu_s(c.pid), thread_cpu(c.pid)))
                return cur >= seq_restart and time.time()

            wait_until(drained, timeout_s=120 + b / 5000, interval_s=0.02, what="the backlog drained")
            hwm = peak_rss_mb(c.pid)
            gw_pid = c.pid
            live.stop()
            live.wait()
            expected = b + live.published
            wait_until(lambda: c.delivered() >= expected, timeout_s=60, what="the live messages delivered")
            extra = c.metrics()
            loss = check_loss(self.influx, db, expected, pubs.truth + live.truth)
            self.done_with(db)
        finally:
            if live is not None:
                live.kill()
            if not self.influx.running:
                self.influx.start()
            c.stop()
            c.drop_session(self.broker.port)
        first = next(i for i, smp in enumerate(samples) if smp[2] > cur_restart)
        t1, _, c1, cpu1, th1 = samples[first]
        t2, _, c2, cpu2, th2 = samples[-1]
        moved = c2 - c1
        out = {
            "backlog_records": b,
            "prequeue_publish_rate": round(pub_rate),
            "influxdb_down_s": round(t_restart - t_down, 1),
            "log_intake_msg_per_s": round(b / (t_logged - t_conn)),
            "log_intake_cpu_us_per_msg": round((cpu_logged - cpu_conn) / b * 1e6, 2),
            "log_intake_peak_rss_mb": round(hwm_logged, 1),
            "pending_at_restart": seq_restart - cur_restart,
            "influxdb_start_s": round(t_up - t_restart, 2),
            "first_write_after_restart_s": round(t1 - t_up, 2),
            "live_msg_per_s": round(live.offered_rate()),
            "drain_window_s": round(t2 - t1, 3),
            "drain_points": moved,
            "drain_points_per_s": round(moved / (t2 - t1)) if t2 > t1 else None,
            "drain_cpu_us_per_point": round((cpu2 - cpu1) / moved * 1e6, 2) if moved else None,
            "drain_cpu_utilisation": round((cpu2 - cpu1) / (t2 - t1), 2) if t2 > t1 else None,
            "drain_cpu_us_per_point_by_thread": gateway_cpu_split(gw_pid, th1, th2, moved) if moved else None,
            "peak_rss_mb": round(hwm, 1),
            "counters": extra,
            "gateway_warnings": c.warnings(),
            **loss,
        }
        out["influxdb_intake"] = self.intake(b)
        return out

    def intake(self, points: int) -> dict:
        """InfluxDB's own intake: pre-built 5,000-line batches of the gateway's exact lines, POSTed
        one after the other on one keep-alive connection, plain and gzip-compressed (level 3, as the
        sink sends), each into a fresh database, alternated INTAKE_ROUNDS times."""
        if self._intake_lines is None or self._intake_lines[0] != points:
            self._intake_lines = (points, *self._intake_batches(points))
        _, st, lines, bodies, gz = self._intake_lines
        return self._intake_http(st, lines, bodies, gz)

    @staticmethod
    def _intake_batches(points: int):
        st = Street(cameras=CAMERAS, interval_s=60, seed=6)
        base = {"district": "test-district", "street": "bench-st", "gateway": "gw-bench", "site": "shop-1"}
        lines = []
        for topic, payload in st.messages(points):
            device = topic.split("/")[1]
            for rule in orjson.loads(payload)["Data"]:
                for info in rule["CountingInfo"]:
                    start = datetime.fromisoformat(info["StartTime"])
                    tags = {**base, "device": device, "line": info["RuleName"]}
                    head = encode_head(
                        "footfall", tags, {"entries": info["In"], "exits": info["Out"], "interval_s": 60}
                    )
                    lines.append(encode_line(head, int(start.timestamp()) * 1_000_000_000))
        bodies = [b"\n".join(lines[i : i + BATCH]) for i in range(0, len(lines), BATCH)]
        gz = [zlib.compress(b, 3, wbits=31) for b in bodies]
        return st, lines, bodies, gz

    def _intake_http(self, st: Street, lines: list[bytes], bodies: list[bytes], gz: list[bytes]) -> dict:
        out: dict = {"points": len(lines), "batch": BATCH, "batches": len(bodies), "rounds": INTAKE_ROUNDS}
        with httpx.Client(timeout=60) as http:
            for rnd in range(INTAKE_ROUNDS):
                for mode in ("plain", "gzip"):
                    db = fresh_db(self.influx, f"bench_intake_{mode}_{rnd}")
                    posts = gz if mode == "gzip" else bodies
                    headers = {"Content-Encoding": "gzip"} if mode == "gzip" else {}
                    srv0 = cpu_s(self.influx.proc.pid)
                    t0 = time.perf_counter()
                    for body in posts:
                        r = http.post(f"{self.influx.url}/write", params={"db": db}, content=body, headers=headers)
                        if r.status_code != 204:
                            raise BenchError(f"intake: HTTP {r.status_code} {r.text[:200]}")
                    wall = time.perf_counter() - t0
                    srv1 = cpu_s(self.influx.proc.pid)
                    got = check_loss(self.influx, db, len(lines), st.truth)
                    m = out.setdefault(
                        mode, {"rounds_points_per_s": [], "influxd_cpu_us_per_point": [], "zero_loss": True}
                    )
                    m["rounds_points_per_s"].append(round(len(lines) / wall))
                    m["influxd_cpu_us_per_point"].append(round((srv1 - srv0) / len(lines) * 1e6, 2))
                    m["zero_loss"] = m["zero_loss"] and got["zero_loss"]
                    self.influx.query(f'DROP DATABASE "{db}"')
        for mode in ("plain", "gzip"):
            out[mode]["points_per_s"] = round(statistics.mean(out[mode]["rounds_points_per_s"]))
        return out


def summarise_outage(rounds: list[dict]) -> dict:
    """The drain rounds, and their means beside InfluxDB's own intake measured in the same rounds."""
    ok = [r for r in rounds if "drain_points_per_s" in r]
    out: dict = {"rounds": rounds, "zero_loss": all(r.get("zero_loss") for r in rounds) if rounds else None}
    if ok:
        mean = statistics.mean
        out["drain_points_per_s"] = round(mean(r["drain_points_per_s"] for r in ok))
        out["drain_cpu_us_per_point"] = round(mean(r["drain_cpu_us_per_point"] for r in ok), 2)
        out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in ok)
        for mode in ("plain", "gzip"):
            vals = [r["influxdb_intake"][mode]["points_per_s"] for r in ok if mode in r.get("influxdb_intake", {})]
            if vals:
                out[f"influxdb_intake_{mode}_points_per_s"] = round(mean(vals))
                out[f"drain_over_intake_{mode}"] = round(
                    out["drain_points_per_s"] / out[f"influxdb_intake_{mode}_points_per_s"], 3
                )
    return out


# -- latency attribution --------------------------------------------------------------------------


def attribute(stamps: array, polls: list[tuple[float, float, int]]) -> tuple[list[float], list[float]]:
    """Publish → visible per report. Reports go out in order from one publisher and reach InfluxDB in
    order (one MQTT session, the log's id order, one sink), so report k is visible once the count
    exceeds k. Upper bound: the answer time of the first poll that counted it; lower bound: the send
    time of the poll before it (it was not visible then)."""
    upper, lower = [], []
    j = 0
    prev_send = polls[0][0]
    for k, t_pub in enumerate(stamps):
        while polls[j][2] <= k:
            prev_send = polls[j][0]
            j += 1
        upper.append(polls[j][1] - t_pub)
        lower.append(max(0.0, prev_send - t_pub))
    return upper, lower


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# -- targets and report ---------------------------------------------------------------------------


def verdicts(res: dict) -> list[dict]:
    out = []

    def add(name: str, figure, target: str, ok: bool | None) -> None:
        out.append({"target": name, "figure": figure, "wanted": target, "result": _verdict(ok)})

    b, ld = res.get("backlog", {}), res.get("load", {})
    for label, sc in (("backlog drain", b), ("8,000 msg/s offered", ld)):
        g, r = sc.get("gateway"), sc.get("reference")
        if g and r and "cpu_us_per_msg" in g and "cpu_us_per_msg" in r:
            ratio = g["cpu_us_per_msg"] / r["cpu_us_per_msg"]
            add(
                f"gateway CPU/message vs reference, {label}",
                f"{ratio:.3f}× ({g['cpu_us_per_msg']} vs {r['cpu_us_per_msg']} µs)",
                "≤ 0.2×",
                ratio <= 0.2,
            )
    o = res.get("outage", {})
    if o.get("drain_points_per_s"):
        add(
            "backlog drain into InfluxDB, new messages arriving",
            f"{o['drain_points_per_s']:,} points/s (mean of "
            + ", ".join(f"{r['drain_points_per_s']:,}" for r in o["rounds"] if "drain_points_per_s" in r)
            + f"; InfluxDB's own intake {o.get('influxdb_intake_gzip_points_per_s', 0):,} gzip)",
            "≥ 100,000 points/s",
            o["drain_points_per_s"] >= 100_000,
        )
    rss = [
        (k, sc["gateway"]["peak_rss_mb"])
        for k, sc in (("backlog", b), ("load", ld))
        if "peak_rss_mb" in sc.get("gateway", {})
    ]
    if "peak_rss_mb" in o:
        rss.append(("outage drain", o["peak_rss_mb"]))
    if rss:
        worst = max(v for _, v in rss)
        add(
            "gateway peak RSS under load and draining",
            ", ".join(f"{k} {v:.1f} MB" for k, v in rss),
            "≤ 70 MB",
            worst <= 70,
        )
    lat = res.get("latency", {}).get("gateway")
    if lat and "p99_s" in lat:
        add(
            f"p99 publish → visible at 1,000 msg/s (flush_interval_s {lat['flush_interval_s']})",
            f"{lat['p99_s']:.3f} s (p50 {lat['p50_s']:.3f} s)",
            "≤ 1 s",
            lat["p99_s"] <= 1.0,
        )
    losses = []
    for name, sc in _scenario_runs(res):
        losses.append((name, sc.get("zero_loss")))
    bad = [n for n, ok in losses if not ok]
    add(
        "zero loss in every run",
        f"{len(losses) - len(bad)} of {len(losses)} runs exact"
        + (f"; LOSS or error in {', '.join(bad)}" if bad else ""),
        "every run",
        not bad if losses else None,
    )
    return out


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "PASS" if ok else "MISS"


def _scenario_runs(res: dict):
    for scen in ("backlog", "load"):
        for kind, sc in res.get(scen, {}).items():
            yield f"{scen}/{kind}", sc
    for flush, sc in res.get("latency", {}).items():
        yield f"latency/{flush}", sc
    for i, rnd in enumerate(res.get("outage", {}).get("rounds", [])):
        yield f"outage/{i + 1}", rnd
        for mode in ("plain", "gzip"):
            if mode in rnd.get("influxdb_intake", {}):
                yield f"intake/{i + 1}/{mode}", rnd["influxdb_intake"][mode]


def table(res: dict) -> str:
    out = []

    def fmt(v, spec=",.0f"):
        return "—" if v is None else format(v, spec)

    def ratio(a, b):
        return "—" if a is None or not b else f"{a / b:.3f}×"

    rows: list[tuple[str, ...]] = []
    for scen, title in (("backlog", "backlog drain"), ("load", "offered load"), ("latency", "1,000 msg/s offered")):
        g, r = res.get(scen, {}).get("gateway", {}), res.get(scen, {}).get("reference", {})
        if "reports" not in g and "reports" not in r:
            continue
        n = g.get("reports") or r.get("reports")
        if scen == "load":
            title += f", {g.get('offered_target_msg_per_s') or r.get('offered_target_msg_per_s'):,.0f} msg/s target"
        rows.append((f"{title} ({n:,} reports)", "", "", ""))
        if scen != "backlog":
            rows.append(
                (
                    "  offered msg/s (publishers achieved)",
                    fmt(g.get("offered_msg_per_s")),
                    fmt(r.get("offered_msg_per_s")),
                    "",
                )
            )
        wanted = [
            ("  CPU µs per message", "cpu_us_per_msg", ",.1f"),
            ("  CPU utilisation (cores)", "cpu_utilisation", ".2f"),
            ("  peak RSS MB", "peak_rss_mb", ".1f"),
        ]
        if scen != "latency":
            wanted.insert(1, ("  messages/s into InfluxDB", "msg_per_s", ",.0f"))
        else:
            wanted += [
                ("  p50 publish → visible s", "p50_s", ".3f"),
                ("  p99 publish → visible s", "p99_s", ".3f"),
                ("  flush interval s", "flush_interval_s", ".2f"),
            ]
        if scen == "load":
            wanted.append(("  last point visible after last publish s", "last_visible_after_last_publish_s", ".2f"))
        for label, key, spec in wanted:
            show_ratio = key in ("cpu_us_per_msg", "msg_per_s", "peak_rss_mb", "cpu_utilisation")
            rows.append(
                (
                    label,
                    fmt(g.get(key), spec),
                    fmt(r.get(key), spec),
                    ratio(g.get(key), r.get(key)) if show_ratio else "",
                )
            )
    if rows:
        out.append(_grid(("gateway beside the reference consumer", "gateway", "reference", "gateway/reference"), rows))

    d = res.get("latency", {}).get("gateway_same_flush_as_reference", {})
    if "p99_s" in d:
        out.append(
            f"gateway with the reference's flush_interval_s {d['flush_interval_s']}: p50 {d['p50_s']:.3f} s, "
            f"p99 {d['p99_s']:.3f} s, max {d['max_s']:.3f} s"
        )

    o = res.get("outage", {})
    rounds = [r for r in o.get("rounds", []) if "drain_points_per_s" in r]
    if rounds:
        rows = []

        def per_round(label: str, fn) -> None:
            rows.append((label, *(fn(r) for r in rounds)))

        per_round("backlog in the log when InfluxDB came back", lambda r: f"{r['pending_at_restart']:,} records")
        per_round(
            "log intake, InfluxDB down (broker backlog → log)",
            lambda r: f"{r['log_intake_msg_per_s']:,} msg/s, {r['log_intake_cpu_us_per_msg']} µs/msg",
        )
        per_round(
            "InfluxDB down / its start / first write after",
            lambda r: f"{r['influxdb_down_s']} s / {r['influxdb_start_s']} s / {r['first_write_after_restart_s']} s",
        )
        per_round("new messages during the drain", lambda r: f"{r['live_msg_per_s']:,} msg/s")
        per_round(
            "gateway drain into InfluxDB",
            lambda r: f"{r['drain_points_per_s']:,} points/s ({r['drain_window_s']} s)",
        )
        per_round(
            "gateway CPU during the drain",
            lambda r: f"{r['drain_cpu_us_per_point']} µs/point, {r['drain_cpu_utilisation']} cores",
        )
        per_round("gateway peak RSS (intake + drain)", lambda r: f"{r['peak_rss_mb']} MB")
        for mode in ("plain", "gzip"):
            per_round(
                f"InfluxDB's own intake, {BATCH:,}-point batches, {mode}",
                lambda r, mode=mode: (
                    f"{r['influxdb_intake'][mode]['points_per_s']:,} points/s" if "influxdb_intake" in r else "—"
                ),
            )
        header = ("drain after an InfluxDB outage (gateway)", *(f"round {i + 1}" for i in range(len(rounds))))
        out.append(_grid(header, rows))
        if "influxdb_intake_gzip_points_per_s" in o:
            out.append(
                f"mean of {len(rounds)} round(s): drain {o['drain_points_per_s']:,} points/s; InfluxDB's own intake "
                f"{o['influxdb_intake_gzip_points_per_s']:,} (gzip, as the sink sends) / "
                f"{o['influxdb_intake_plain_points_per_s']:,} (plain) points/s; drain/intake "
                f"{o['drain_over_intake_gzip']:.2f}× / {o['drain_over_intake_plain']:.2f}×"
            )

    rows = [(v["target"], v["figure"], v["wanted"], v["result"]) for v in res.get("targets", [])]
    out.append(_grid(("target (reported, not gating)", "figure", "wanted", "result"), rows))
    return "\n\n".join(out)


def _grid(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r):
        return "  ".join(
            str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description="The gateway beside a reference consumer (issue 8, `make bench`).")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (≈1 minute; results/latest-quick.json)")
    ap.add_argument("--only", default="backlog,load,latency,outage", help="comma-separated scenarios")
    ap.add_argument("--out", type=Path, help="default tests/bench/results/latest.json (latest-quick.json)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server and gateway logs)")
    args = ap.parse_args()
    sizes = QUICK if args.quick else FULL
    args.out = args.out or RESULTS / ("latest-quick.json" if args.quick else "latest.json")
    only = set(args.only.split(","))
    started = time.time()
    machine = machine_info()
    print(
        f"sdgw bench ({'quick' if args.quick else 'full'}) on {machine['cpu_model']}, {machine['cores']} cores, "
        f"Python {machine['python']}, mosquitto {machine['mosquitto']}, {machine['influxd']}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="sdgw-bench-"))
    res: dict = {}
    errors: list[str] = []

    def step(name: str, fn, *a):
        print(f"[{time.time() - started:6.1f} s] {name} …", flush=True)
        try:
            got = fn(*a)
        except Exception as exc:
            errors.append(f"{name}: {exc}")
            traceback.print_exc()
            return {"error": str(exc)}
        brief = {k: v for k, v in got.items() if not isinstance(v, dict)}
        print(f"           {json.dumps(brief)}", flush=True)
        return got

    with Mosquitto(root / "mosquitto") as broker, InfluxDB1(root / "influxd") as influx:
        bench = Bench(root, broker, influx, sizes, keep=args.keep)
        for scen in ("backlog", "load"):
            if scen in only:
                res[scen] = {k: step(f"{scen}/{k}", getattr(bench, scen), k) for k in ("gateway", "reference")}
        if "latency" in only:
            res["latency"] = {
                "gateway": step("latency/gateway", bench.latency, "gateway", FLUSH_S),
                "reference": step("latency/reference", bench.latency, "reference", REF_FLUSH_S),
            }
            if sizes.latency_same_flush:
                res["latency"]["gateway_same_flush_as_reference"] = step(
                    "latency/gateway (flush as the reference)", bench.latency, "gateway", SAME_FLUSH_AS_REF_S
                )
        if "outage" in only:
            rounds = [step(f"outage/round {i + 1}", bench.outage, i) for i in range(sizes.outage_rounds)]
            res["outage"] = summarise_outage(rounds)
    res["targets"] = verdicts(res)
    finished = time.time()
    doc = {
        "command": ".venv/bin/python tests/bench/run_bench.py --quick" if args.quick else "make bench",
        "mode": "quick" if args.quick else "full",
        "sizes": sizes.__dict__,
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "finished": datetime.fromtimestamp(finished, UTC).isoformat(timespec="seconds"),
        "duration_s": round(finished - started, 1),
        "machine": machine,
        "settings": {
            "cameras": len(CAMERAS),
            "rules_per_report": 1,
            "report_interval_s": 60,
            "gateway": {
                "sink_batch_size": BATCH,
                "sink_flush_interval_s": FLUSH_S,
                "gzip": True,
                "receive_max": 4096,
                "log_batch_max_records": 2000,
                "api": "enabled (sdgw run)",
                "heartbeat_s": 3600,
                "clock_poll_s": 5.0,
                "log_prune_interval_s": 1.0,
                "other": "tests/harness.py gateway_config defaults",
            },
            "broker": "gateway/localservers.py Mosquitto (persistence, autosave 1 s, queues and inflight unlimited)",
            "reference": {"batch": BATCH, "flush_s": 1.0, "json": "stdlib json", "mqtt": "paho 3.1.1, auto ack"},
        },
        "results": res,
        "errors": errors,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.parent == RESULTS and not (RESULTS / ".gitignore").exists():
        (RESULTS / ".gitignore").write_text(
            "# written by run_bench.py: results are machine-specific, never committed\n*\n"
        )
    args.out.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    print()
    print(table(res))
    print(f"\n{len(errors)} error(s); run took {finished - started:.0f} s; results in {args.out}")
    if args.keep:
        print(f"logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    lost = any(v["result"] == "MISS" for v in res["targets"] if v["target"] == "zero loss in every run")
    return 1 if errors or lost else 0


if __name__ == "__main__":
    sys.exit(main())
