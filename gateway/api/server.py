"""Serving the app with uvicorn inside an event loop someone else owns.

`serve()` runs inside the gateway's TaskGroup: the gateway owns SIGTERM/SIGINT (its shutdown order
matters, decisions.md D4), so uvicorn must not install handlers. uvicorn 0.54 has no switch for
that: `Server.serve()` wraps everything in `capture_signals()`, which replaces the process's
SIGINT/SIGTERM handlers with `signal.signal` (bypassing the loop's own `add_signal_handler`) and
re-raises the captured signal on exit. `_EmbeddedServer` overrides that one method with a no-op.

Cancelling `serve()` shuts down the way a signal would: stop accepting, close idle connections,
let running requests finish (at most `GRACEFUL_S`), run the lifespan shutdown, then re-raise the
CancelledError. A port that cannot be bound raises ApiServerError instead of uvicorn's
`sys.exit(1)`, which inside a task would take the whole gateway down.

The client address /metrics trusts: uvicorn's proxy headers are on and trust loopback peers only, so
behind a reverse proxy on the same host the proxy must set X-Forwarded-For, or every client looks
like loopback (set `metrics_open_to_loopback = false` there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from gateway.config import GatewayConfig
from gateway.errors import ApiServerError  # defined there, raised and re-exported here

log = logging.getLogger("sdgw.api")

GRACEFUL_S = 5.0


class _EmbeddedServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: asyncio.Event | None) -> None:
        super().__init__(config)
        self._ready = ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        await super().startup(sockets)
        if self.started and self._ready is not None:
            self._ready.set()


async def serve(app: FastAPI, host: str, port: int, *, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled. `ready` is set once the socket listens."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,  # never a line per request (and never a header): metrics count them
        lifespan="on",
        proxy_headers=True,
        forwarded_allow_ips="127.0.0.1,::1",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_S,
    )
    server = _EmbeddedServer(config, ready)

    async def run() -> None:
        try:
            await server.serve()
        except SystemExit as exc:  # uvicorn's answer to a bind or lifespan failure
            raise ApiServerError(f"the API could not start on {host}:{port} (see the log line above)") from exc

    task = asyncio.create_task(run(), name="api-uvicorn")
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise


async def run_api_only(config: GatewayConfig, *, ready: asyncio.Event | None = None) -> None:
    """`sdgw api`: the API alone over the district's InfluxDB, until SIGTERM or SIGINT."""
    from gateway.api.app import build_context, create_app

    app = create_app(build_context(config, mode="api"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        server = asyncio.create_task(serve(app, config.api.host, config.api.port, ready=ready), name="api-server")
        stopping = asyncio.create_task(stop.wait(), name="api-stop")
        await asyncio.wait({server, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if server.done():
            stopping.cancel()
            server.result()  # raises ApiServerError when it could not start
            return
        log.warning("API stopping")
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        log.warning("API stopped")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
