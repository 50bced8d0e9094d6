"""The HTTP API: one FastAPI app for `sdgw run` (beside ingestion) and `sdgw api` (alone), built
from an ApiContext (context.py). Routers live one per resource in routes/; auth and scope are
dependencies (deps.py); every error is problem+json (problems.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway import __version__, status_page
from gateway.api import problems
from gateway.api.context import ApiContext, build_context
from gateway.api.ratelimit import TokenBuckets
from gateway.api.request_metrics import RequestMetrics
from gateway.api.routes import (
    footfall,
    gateways,
    health,
    ingest,
    lockers,
    metrics,
    occupancy,
    open_data,
    rfid,
    sites,
)

__all__ = ["ApiContext", "build_context", "create_app"]

DESCRIPTION = """\
The Smart District Gateway's API. Every answer comes from InfluxDB, so any replica answers alike.

Authenticate with `Authorization: Bearer <key>` (keys come from `sdgw keys create`). Operator keys
see the whole district; merchant keys see their own sites only. Errors are RFC 9457 problem details
(`application/problem+json`).
"""


def create_app(ctx: ApiContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if ctx.influx is not None:
                await ctx.influx.aclose()

    app = FastAPI(
        title="Smart District Gateway API",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    problems.install(app)
    app.add_middleware(RequestMetrics, registry=ctx.registry)
    for module in (health, gateways, metrics, rfid, lockers, ingest):
        app.include_router(module.router)
    # merchant footfall API and open data; their rate limits are this process's own (per replica)
    api, opened = ctx.config.api, ctx.config.open_data
    app.state.key_limits = TokenBuckets(api.rate_limit_per_s, api.rate_limit_burst)
    app.state.open_limits = TokenBuckets(opened.rate_limit_per_s, opened.rate_limit_burst)
    for module in (sites, footfall, occupancy):
        app.include_router(module.router)
    if opened.enabled:  # switched off: the route does not exist (404, and not in the OpenAPI document)
        app.include_router(open_data.router)
    # the technician's page: answers where the host set app.state.status_source (`sdgw run`), else 404
    app.include_router(status_page.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = problems.add_problem_schema(doc)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
