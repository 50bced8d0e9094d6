"""Helpers for the API tests: a config on disk, the CLI in a subprocess, a real uvicorn in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from gateway.api.server import serve
from gateway.config import GatewayConfig, parse_config
from gateway.localservers import free_port

ROOT = Path(__file__).resolve().parent.parent


def write_config(
    tmp_path: Path,
    *,
    influx_url: str,
    database: str,
    port: int | None = None,
    metrics_open_to_loopback: bool = True,
    heartbeat_s: float = 60.0,
    query_timeout_s: float = 5.0,
    sites: tuple[str, ...] = ("shop-1", "shop-2", "shop-3"),
) -> tuple[Path, GatewayConfig]:
    site_tables = "".join(f'[[sites]]\nid = "{s}"\n' for s in sites)
    text = f"""
[gateway]
district = "d1"
street = "s1"
id = "g1"
data_dir = "{tmp_path / "data"}"

[[sinks]]
name = "central"
url = "{influx_url}"
database = "{database}"

{site_tables}
[status]
heartbeat_s = {heartbeat_s}

[api]
host = "127.0.0.1"
port = {port or free_port()}
metrics_open_to_loopback = {"true" if metrics_open_to_loopback else "false"}
query_timeout_s = {query_timeout_s}
"""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "sdgw.toml"
    path.write_text(text)
    return path, parse_config(text, path)


def cli(*args: str, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    """`sdgw <args>` through gateway.cli_api, as the operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli_api", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "") -> Any:
    """Poll until condition() is truthy; its value. A deadline, never a bare sleep."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s} s: {what or condition}")
        time.sleep(interval_s)


class ServerThread:
    """`serve(app)` on a free loopback port in a thread with its own event loop; stop() cancels it."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.app = app
        self.host = host
        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="api-test-server", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            ready = asyncio.Event()
            self._task = asyncio.create_task(serve(self.app, self.host, self.port, ready=ready))
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({self._task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            self._started.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
        finally:
            self._started.set()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._started.wait(15):
            raise TimeoutError("the API server did not start")
        if self.error is not None or (self._task is not None and self._task.done()):
            self.stop()
            raise RuntimeError(f"the API server failed to start: {self.error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(15)
        assert not self._thread.is_alive(), "the API server did not stop"

    def __exit__(self, *exc: object) -> None:
        self.stop()
