"""`GET /v1/health`, without a key: a load balancer's and a technician's question "is this up?".

Gateway mode passes on the gateway's own verdict (sources, sinks, log, clock). Api mode checks what
`sdgw api` depends on: InfluxDB answers, its database exists, the key file is readable.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel

from gateway.api.context import ApiContext
from gateway.api.deps import Ctx
from gateway.api.influxql import InfluxQueryError
from gateway.api.problems import Problem, documented

router = APIRouter(tags=["health"])


class Health(BaseModel):
    healthy: Literal[True] = True
    mode: Literal["gateway", "api"]
    details: dict[str, Any]


async def _api_checks(ctx: ApiContext) -> tuple[list[str], dict[str, Any]]:
    reasons: list[str] = []
    details: dict[str, Any] = {}
    if ctx.influx is None:
        reasons.append("no sink is configured to answer queries")
    else:
        details["influxdb"] = {"sink": ctx.influx.name, "database": ctx.influx.database}
        try:
            await ctx.influx.ping()
            databases = await ctx.influx.databases()
        except InfluxQueryError as exc:
            reasons.append(str(exc))
        else:
            if ctx.influx.database not in databases:
                reasons.append(f"database {ctx.influx.database!r} does not exist on InfluxDB {ctx.influx.name!r}")
    status = ctx.keys.status()
    details["key_file"] = {"readable": status.readable}
    if not status.readable:
        reasons.append(f"key file {status.problem}")
    return reasons, details


@router.get(
    "/v1/health",
    summary="Whether this API (and, on a gateway, the gateway) is healthy",
    response_model=Health,
    responses=documented(503, descriptions={503: "Unhealthy; `reasons` says why"}),
)
async def health(ctx: Ctx) -> Health:
    if ctx.local_health is not None:
        state = dict(ctx.local_health())
        healthy = bool(state.pop("healthy", False))
        reasons = [str(r) for r in state.pop("reasons", [])]
        details = state
    else:
        reasons, details = await _api_checks(ctx)
        healthy = not reasons
    if not healthy:
        detail = "; ".join(reasons) or "unhealthy"
        raise Problem(503, detail, type_="unhealthy", title="Unhealthy", reasons=reasons, details=details)
    return Health(mode=ctx.mode, details=details)
