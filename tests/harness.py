"""Run the real gateway (`sdgw run`) as a process against real servers, for the integration tests
and the benchmarks: write its config, start it, kill it, wait for conditions with deadlines."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.localservers import free_port

ROOT = Path(__file__).resolve().parent.parent


def wait_for(predicate: Callable[[], object], *, timeout_s: float, interval_s: float = 0.1, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")


def gateway_config(
    root: Path,
    *,
    broker_port: int,
    sinks: list[dict],
    cameras: list[str],
    topic_template: str = "vivotek/{camera}/report",
    gateway_id: str = "gw-test",
    street: str = "test-st",
    cap_bytes: int = 1 << 30,
    receive_max: int = 4096,
    sync_check: str = "assume-synced",
    flag_file: Path | None = None,
    heartbeat_s: float = 60,
    client_id: str | None = None,
    api_port: int | None = None,
    extra: str = "",
) -> str:
    lines = [
        "[gateway]",
        'district = "test-district"',
        f'street = "{street}"',
        f'id = "{gateway_id}"',
        f'data_dir = "{root}"',
        "[clock]",
        f'sync_check = "{sync_check}"',
        "poll_s = 0.2",
    ]
    if flag_file is not None:
        lines.append(f'flag_file = "{flag_file}"')
    lines += [
        "[log]",
        f"cap_bytes = {cap_bytes}",
        "prune_interval_s = 0.5",
        "[mqtt]",
        'host = "127.0.0.1"',
        f"port = {broker_port}",
        f"receive_max = {receive_max}",
        "reconnect_max_s = 1.0",
        "keepalive_s = 10",
    ]
    if client_id:
        lines.append(f'client_id = "{client_id}"')
    lines += ["[status]", f"heartbeat_s = {heartbeat_s}"]
    lines += ["[api]", f"port = {api_port or free_port()}"]
    for s in sinks:
        lines.append("[[sinks]]")
        for k, v in s.items():
            lines.append(f"{k} = {v!r}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}")
    lines += ["[[sites]]", 'id = "shop-1"', 'merchant = "m-1"']
    for cam in cameras:
        lines += [
            "[[devices]]",
            f'id = "{cam}"',
            'model = "vivotek-sc8131"',
            'site = "shop-1"',
            f'topic = "{topic_template.format(camera=cam)}"',
        ]
    return "\n".join(lines).replace("'", '"') + "\n" + extra


class GatewayProcess:
    """`sdgw run -c <root>/gateway.toml` as a child process, its log in <root>/gateway.log."""

    def __init__(self, root: Path, config_text: str, *, env: dict | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path = self.root / "gateway.toml"
        self.config_path.write_text(config_text)
        self.log_path = self.root / "gateway.log"
        self.proc: subprocess.Popen | None = None
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.starts = 0

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "run", "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=self.env,
        )
        log.close()
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, like a crash or a power cut of the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("gateway did not stop on SIGTERM") from None
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.running:
            with contextlib.suppress(AssertionError):
                self.stop()


def pseudonym_key_file(root: Path) -> Path:
    """A district secret and the gateway's key file from it (`sdgw pseudonym-keys`, starting today),
    as the district makes them (decisions.md D13)."""
    root.mkdir(parents=True, exist_ok=True)
    secret = root / "district-secret"
    secret.write_bytes(b"district secret for tests only!!")
    key_file = root / "pseudonym-keys.json"
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    args = ["pseudonym-keys", "--secret-file", str(secret), "--out", str(key_file), "--start", today]
    subprocess.run([sys.executable, "-m", "gateway.cli", *args], check=True, cwd=ROOT, capture_output=True)
    return key_file
