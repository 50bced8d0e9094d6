"""Real Mosquitto, InfluxDB 1.x and VictoriaMetrics processes on loopback, for tests, the demo and
the benchmarks.

Each server runs from Debian's binary with its own config and data in a directory we own, on a free
loopback port below 32768 (the ephemeral range starts above it, so a port we picked is not taken
from under us by an outgoing connection). Processes are stopped by the PID we started, never by
name. `restart()` keeps the data directory, so persistence across a restart is the real thing.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

PORT_RANGE = (20000, 32767)
GUARANTEES = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "sdgw-guarantees.conf"


def free_port() -> int:
    """A loopback TCP port below 32768 that nothing listens on right now."""
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free loopback port below 32768")


def _which(name: str, *extra: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in extra:
        if os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f"{name} not installed (run `make setup` or deploy/dev-setup.sh)")


def _wait_tcp(port: int, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start-up")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s}s")


class _Server:
    name = "server"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / f"{self.name}.log"

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> None:
        assert self.proc is not None
        _wait_tcp(self.port, self.proc, 30, self.name)

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            self._argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root
        )
        log.close()
        self._ready()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Mosquitto(_Server):
    """Mosquitto with the broker settings the no-loss guarantee depends on (decisions.md D4):
    persistence, queues sized for an outage, inflight ≥ the gateway's Receive Maximum."""

    name = "mosquitto"

    def __init__(self, root: Path, *, extra_conf: str = "") -> None:
        super().__init__(root)
        self.conf_path = self.root / "mosquitto.conf"
        (self.root / "data").mkdir(exist_ok=True)
        self.conf_path.write_text(
            f"""# written by gateway.localservers for a test/demo broker
per_listener_settings false
# As root, mosquitto drops to the `mosquitto` user, which cannot write its save file into our
# private temp dir: stay the user who started it.
user {getpass.getuser()}
listener {self.port} 127.0.0.1
allow_anonymous true
persistence_location {self.root / "data"}/
{GUARANTEES.read_text()}
log_dest stderr
log_type error
log_type warning
log_type notice
{extra_conf}
"""
        )

    def _argv(self) -> list[str]:
        return [_which("mosquitto", "/usr/sbin/mosquitto"), "-c", str(self.conf_path)]


class InfluxDB1(_Server):
    """Debian's InfluxDB 1.6.7: v1 `/write` and InfluxQL `/query`."""

    name = "influxd"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.rpc_port = free_port()
        self.conf_path = self.root / "influxdb.conf"
        self.conf_path.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{self.root / "meta"}"
[data]
  dir = "{self.root / "data"}"
  wal-dir = "{self.root / "wal"}"
  query-log-enabled = false
  wal-fsync-delay = "0s"
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[logging]
  level = "warn"
"""
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _argv(self) -> list[str]:
        return [_which("influxd"), "-config", str(self.conf_path)]

    def _ready(self) -> None:
        super()._ready()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/ping", timeout=1).status_code == 204:
                    return
            time.sleep(0.05)
        raise TimeoutError("influxd did not answer /ping")

    def query(self, q: str, db: str | None = None, **params) -> dict:
        """InfluxQL over /query; returns the decoded JSON answer."""
        args = {"q": q, "epoch": "ns", **params}
        if db:
            args["db"] = db
        if getattr(self, "_client", None) is None:
            self._client = httpx.Client(timeout=30)
        r = self._client.post(f"{self.url}/query", data=args)
        r.raise_for_status()
        return r.json()

    def create_database(self, db: str) -> None:
        self.query(f'CREATE DATABASE "{db}"')

    def rows(self, q: str, db: str) -> list[dict]:
        """A SELECT's rows as dicts (all series concatenated, tags merged in)."""
        out: list[dict] = []
        for result in self.query(q, db).get("results", []):
            if "error" in result:
                raise RuntimeError(result["error"])
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    out.append({**tags, **dict(zip(series["columns"], values, strict=True))})
        return out


class VictoriaMetrics(_Server):
    """VictoriaMetrics: accepts both line-protocol dialects (v1 `/write`, v2 `/api/v2/write`);
    started with dedup so that a re-sent sample collapses (decisions.md D16)."""

    name = "victoria-metrics"

    def _argv(self) -> list[str]:
        return [
            _which("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.root / 'data'}",
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-retentionPeriod=100y",  # test data is stamped in the past: keep it
            "-loggerLevel=ERROR",
        ]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def export(self, match: str) -> list[dict]:
        """Every sample of the series matching `match`, from /api/v1/export (JSON lines)."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10)
        r = httpx.post(f"{self.url}/api/v1/export", data={"match[]": match}, timeout=30)
        r.raise_for_status()
        import orjson

        return [orjson.loads(line) for line in r.content.splitlines() if line.strip()]
