"""`GET /metrics`: the Prometheus text exposition of the host's registry — the gateway's metrics
under `sdgw run`, the API process's own under `sdgw api`. An operator key is needed unless config
opens it to loopback (decisions.md D15), where a local Prometheus or node agent scrapes it."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.api.deps import Ctx, MetricsAccess
from gateway.api.problems import documented

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "text exposition"},
        **documented(401, 403),
    },
)
async def metrics(ctx: Ctx, _access: MetricsAccess) -> Response:
    return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)
