"""Pieces of the benchmark (run_bench.py): process accounting from /proc, publisher processes, the two
consumers under test (the gateway and the reference consumer) behind one interface, InfluxDB
checks, MQTT session clean-up and machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from importlib import metadata
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt

from gateway.localservers import InfluxDB1, free_port
from tests.harness import GatewayProcess, gateway_config

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchError(RuntimeError):
    pass


# -- /proc ----------------------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (dead ones included)."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per live thread of a process, by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return out


def gateway_cpu_split(pid: int, before: dict[int, float], after: dict[int, float], n: int) -> dict[str, float]:
    """µs of CPU per message by thread: the event loop (main thread), the log writer (the first thread
    the gateway starts: DurableLog.open runs before anything else), and the rest (asyncio.to_thread
    workers: the sinks' log reads)."""
    delta = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    others = sorted(t for t in after if t != pid)
    writer = others[0] if others else None
    split = {
        "event_loop": delta.get(pid, 0.0),
        "log_writer": delta.get(writer, 0.0) if writer is not None else 0.0,
        "other_threads": sum(v for t, v in delta.items() if t not in (pid, writer)),
    }
    return {k: round(v / n * 1e6, 2) for k, v in split.items()}


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set since it started."""
    return status_kb(pid, "VmHWM") / 1024


def wait_until(pred, *, timeout_s: float, interval_s: float = 0.02, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


# -- publishers -----------------------------------------------------------------------------------


class Publishers:
    """`nproc` publisher.py processes, cameras split between them, started together by `go()`."""

    def __init__(
        self,
        port: int,
        *,
        topic_template: str,
        cameras: list[str],
        count: int,
        nproc: int,
        rate_each: float = 0.0,
        seed: int = 1,
        times_dir: Path | None = None,
        lazy: bool = False,
    ) -> None:
        self.count = count
        self.procs: list[subprocess.Popen] = []
        self.times_files: list[Path] = []
        self.results: list[dict] = []
        for k in range(nproc):
            n = count // nproc + (1 if k < count % nproc else 0)
            argv = [
                sys.executable,
                str(BENCH / "publisher.py"),
                "--port",
                str(port),
                "--cameras",
                ",".join(cameras[k::nproc]),
                "--topic-template",
                topic_template,
                "--count",
                str(n),
                "--rate",
                str(rate_each),
                "--seed",
                str(seed * 100 + k),
            ]
            if lazy:
                argv.append("--lazy")
            if times_dir is not None:
                path = times_dir / f"publish-times-{k}.f64"
                argv += ["--times", str(path)]
                self.times_files.append(path)
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        for p in self.procs:
            line = p.stdout.readline().strip()
            if line != "ready":
                self.kill()
                raise BenchError(f"publisher did not start (said {line!r})")

    def go(self) -> float:
        t = time.time()
        for p in self.procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        return t

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(BrokenPipeError):
                p.stdin.write("stop\n")
                p.stdin.flush()

    def wait(self, timeout_s: float = 300) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        out = []
        for p in self.procs:
            line = p.stdout.readline()
            if not line:
                raise BenchError(f"publisher {p.pid} exited without a result")
            out.append(orjson.loads(line))
            p.wait(max(1, deadline - time.monotonic()))
        self.results = out
        for r in out:
            if r["acked"] != r["published"]:
                raise BenchError(f"publisher: {r['published']} published, only {r['acked']} acknowledged")
        return out

    @property
    def published(self) -> int:
        return sum(r["published"] for r in self.results)

    @property
    def truth(self) -> Counter:
        total: Counter = Counter()
        for r in self.results:
            for camera, rule, direction, value in r["truth"]:
                total[(camera, rule, direction)] += value
        return total

    @property
    def t_first(self) -> float:
        return min(r["t_first"] for r in self.results)

    @property
    def t_last(self) -> float:
        return max(r["t_last"] for r in self.results)

    def offered_rate(self) -> float:
        span = self.t_last - self.t_first
        return self.published / span if span > 0 else float("nan")

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def publish_backlog(port: int, *, topic_template: str, cameras: list[str], count: int, nproc: int, seed: int):
    """Publish `count` reports as fast as the broker acknowledges them; returns (Publishers, msg/s)."""
    pubs = Publishers(port, topic_template=topic_template, cameras=cameras, count=count, nproc=nproc, seed=seed)
    try:
        t0 = pubs.go()
        pubs.wait()
    finally:
        pubs.kill()
    return pubs, pubs.published / (max(r["t_acked"] for r in pubs.results) - t0)


def drop_session(port: int, client_id: str, *, v5: bool) -> None:
    """Connect once with a clean start and no session expiry: the broker forgets the session (and
    anything still queued for it), so an old subscriber does not make the broker queue the next
    scenario's messages."""
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    kw = {} if v5 else {"clean_session": True}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)
    done = threading.Event()
    c.on_connect = lambda *a: done.set()
    if v5:
        c.connect("127.0.0.1", port, clean_start=True)
    else:
        c.connect("127.0.0.1", port)
    c.loop_start()
    done.wait(10)
    c.disconnect()
    c.loop_stop()


# -- InfluxDB -------------------------------------------------------------------------------------


def influx_count(influx: InfluxDB1, db: str) -> int:
    rows = influx.rows('SELECT count("entries") FROM footfall', db)
    return rows[0]["count"] if rows else 0


def influx_totals(influx: InfluxDB1, db: str) -> Counter:
    rows = influx.rows('SELECT sum("entries") AS i, sum("exits") AS o FROM footfall GROUP BY device, line', db)
    out: Counter = Counter()
    for r in rows:
        out[(r["device"], r["line"], "in")] += r["i"]
        out[(r["device"], r["line"], "out")] += r["o"]
    return out


def fresh_db(influx: InfluxDB1, db: str) -> str:
    influx.query(f'DROP DATABASE "{db}"')
    influx.create_database(db)
    return db


def check_loss(influx: InfluxDB1, db: str, expected: int, truth: Counter, *, settle_s: float = 10) -> dict:
    """Points in InfluxDB == reports published (one rule each), totals == the emulator's truth."""
    deadline = time.monotonic() + settle_s
    count = influx_count(influx, db)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.2)
        count = influx_count(influx, db)
    totals = influx_totals(influx, db)
    ok = count == expected and totals == truth
    return {"expected_points": expected, "points": count, "totals_match_truth": totals == truth, "zero_loss": ok}


# -- the consumers --------------------------------------------------------------------------------


class GatewayConsumer:
    """`sdgw run` (tests/harness.py) with one v1 sink; progress = the sink's cursor in the log."""

    kind = "gateway"

    def __init__(
        self,
        root: Path,
        *,
        broker_port: int,
        influx: InfluxDB1,
        db: str,
        cameras: list[str],
        topic_template: str,
        client_id: str,
        flush_interval_s: float,
        batch_size: int = 5000,
        receive_max: int = 4096,
    ) -> None:
        self.root = root
        self.client_id = client_id
        self.api_port = free_port()
        sink = {
            "name": "edge",
            "url": influx.url,
            "dialect": "v1",
            "database": db,
            "batch_size": batch_size,
            "flush_interval_s": flush_interval_s,
        }
        cfg = gateway_config(
            root,
            broker_port=broker_port,
            sinks=[sink],
            cameras=cameras,
            topic_template=topic_template,
            gateway_id="gw-bench",
            street="bench-st",
            client_id=client_id,
            heartbeat_s=3600,  # no gateway_health record during a run: record ids = reports
            receive_max=receive_max,
            api_port=self.api_port,
        )
        # The shipped defaults instead of the test harness's quick polling.
        cfg = cfg.replace("poll_s = 0.2", "poll_s = 5.0").replace("prune_interval_s = 0.5", "prune_interval_s = 1.0")
        self.config_text = cfg
        self.proc = GatewayProcess(root, cfg)
        self._db: sqlite3.Connection | None = None
        self._connects_seen = 0

    @property
    def pid(self) -> int:
        assert self.proc.proc is not None
        return self.proc.proc.pid

    def start(self) -> None:
        self._connects_seen = self.proc.log_text().count("MQTT connected to")
        self.proc.start()

    def wait_connected(self, timeout_s: float = 30) -> float:
        """Wall time at which the gateway's 'MQTT connected' log line was seen (polled every 5 ms)."""

        def seen():
            if not self.proc.running:
                raise BenchError(f"gateway exited: {self.proc.log_text()[-2000:]}")
            return self.proc.log_text().count("MQTT connected to") > self._connects_seen and time.time()

        return wait_until(seen, timeout_s=timeout_s, interval_s=0.005, what="gateway MQTT connection")

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None:
            path = self.root / "log.sqlite"
            if not path.exists():
                return None
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 1000")
        return self._db

    def log_ids(self) -> tuple[int, int]:
        """(last record id appended, the sink's cursor): read-only reads of the log beside the writer."""
        conn = self._conn()
        if conn is None:
            return 0, 0
        try:
            seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
            cur = conn.execute("SELECT last_id FROM cursors WHERE sink = 'edge'").fetchone()
        except sqlite3.OperationalError:
            return 0, 0
        return (seq[0] if seq else 0), (cur[0] if cur else 0)

    def delivered(self) -> int:
        return self.log_ids()[1]

    def metrics(self) -> dict[str, float]:
        """A few counters from the gateway's own /metrics (read after the CPU figures are taken)."""
        try:
            text = httpx.get(f"http://127.0.0.1:{self.api_port}/metrics", timeout=5).text
        except httpx.HTTPError:
            return {}
        wanted = (
            "sdgw_mqtt_messages_received_total",
            "sdgw_mqtt_redeliveries_total",
            "sdgw_mqtt_protocol_violations_total",
            "sdgw_log_records_appended_total",
            "sdgw_log_duplicates_total",
            "sdgw_dead_letters_total",
            "sdgw_sink_records_sent_total",
        )
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
            if m and m.group(1) in wanted:
                out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(3))
        return out

    def warnings(self) -> list[str]:
        """The gateway's own warnings and errors in this run, start-up and shutdown lines left out."""
        routine = ("starting (log", "API listening", "clock synchronised", "gateway stopping", "gateway stopped")
        out = []
        for line in self.proc.log_text().splitlines():
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if doc.get("level") in ("warning", "error", "critical") and not any(r in doc["msg"] for r in routine):
                out.append(f"{doc['ts']} {doc['level']}: {doc['msg'][:300]}")
        return out

    def stop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self.proc.stop()

    def drop_session(self, port: int) -> None:
        drop_session(port, self.client_id, v5=True)


class ReferenceConsumer:
    """tests/bench/reference_consumer.py; progress = the points it reports InfluxDB accepted."""

    kind = "reference"

    def __init__(
        self,
        root: Path,
        *,
        broker_port: int,
        influx: InfluxDB1,
        db: str,
        topic_filter: str,
        client_id: str,
        batch: int = 5000,
        flush_s: float = 1.0,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.client_id = client_id
        self.argv = [
            sys.executable,
            str(BENCH / "reference_consumer.py"),
            "--port",
            str(broker_port),
            "--topic",
            topic_filter,
            "--client-id",
            client_id,
            "--influx-url",
            influx.url,
            "--db",
            db,
            "--batch",
            str(batch),
            "--flush-s",
            str(flush_s),
            "--street",
            "bench-st",
            "--gateway",
            "gw-bench",
        ]
        self.proc: subprocess.Popen | None = None
        self.connects: list[float] = []
        self.written = 0
        self.received = 0
        self.progress: list[tuple[float, int, int]] = []
        self._connects_seen = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self._connects_seen = len(self.connects)
        err = open(self.root / "reference.log", "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL)
        err.close()
        self.written = 0
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            doc = orjson.loads(line)
            if doc.get("event") == "connected":
                self.connects.append(time.time())
            elif "written" in doc:
                self.written = doc["written"]
                self.received = doc["received"]
                self.progress.append((doc["t"], doc["written"], doc["received"]))

    def wait_connected(self, timeout_s: float = 30) -> float:
        def seen():
            if self.proc is None or self.proc.poll() is not None:
                raise BenchError("reference consumer exited")
            return len(self.connects) > self._connects_seen and self.connects[-1]

        return wait_until(seen, timeout_s=timeout_s, interval_s=0.005, what="reference consumer connection")

    def delivered(self) -> int:
        return self.written

    def metrics(self) -> dict[str, float]:
        return {"messages_received": self.received}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def drop_session(self, port: int) -> None:
        drop_session(port, self.client_id, v5=False)


# -- machine --------------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


def machine_info() -> dict:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    versions = {}
    for pkg in ("paho-mqtt", "mqtt5", "httpx", "orjson"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[pkg] = metadata.version(pkg)
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = bool(_first_line(["git", "-C", str(ROOT), "status", "--porcelain"]))
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "mosquitto": _first_line([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-h"]).replace(
            "mosquitto version ", ""
        ),
        "influxd": _first_line(["influxd", "version"]),
        "packages": versions,
        "git_commit": commit + (" (uncommitted changes)" if dirty else ""),
    }


def _os_name() -> str:
    with contextlib.suppress(OSError), open("/etc/os-release") as f:
        for line in f:
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    return platform.system()
