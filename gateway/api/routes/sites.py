"""`GET /v1/sites`: the caller's sites from the configuration — every site for an operator key,
its own for a merchant key — with what a client needs to read footfall: kind, street, zone and
business hours (gateway/sites.py)."""

from __future__ import annotations

from typing import Literal

import orjson
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from gateway.api.caching import cached_response, response_headers
from gateway.api.deps import Ctx, LimitedScope
from gateway.api.problems import documented
from gateway.api.query_params import RATE_LIMIT_DOC, IfNoneMatch, strict_query
from gateway.config import SiteConfig

router = APIRouter(tags=["footfall"])

MAX_AGE_S = 300  # sites change with the configuration only


class SiteOut(BaseModel):
    id: str
    name: str
    kind: Literal["shop", "entrance"]
    street: str
    merchant: str | None
    timezone: str = Field(description="IANA zone: buckets and business days are aligned in it")
    hours: dict[str, str] = Field(description='per weekday (mon … sun): "HH:MM-HH:MM" or "closed"')
    closed_dates: list[str] = Field(description="dates (YYYY-MM-DD) on which no business day opens")


class SiteList(BaseModel):
    sites: list[SiteOut]


def site_out(site: SiteConfig) -> dict:
    return {
        "id": site.id,
        "name": site.name,
        "kind": site.kind,
        "street": site.street,
        "merchant": site.merchant,
        "timezone": site.timezone,
        "hours": site.schedule.week_text(),
        "closed_dates": [d.isoformat() for d in sorted(site.closed_dates)],
    }


@router.get(
    "/v1/sites",
    summary="The caller's sites: kind, street, time zone, business hours",
    description="An operator key sees every configured site, a merchant key its own. " + RATE_LIMIT_DOC,
    response_model=SiteList,
    responses={
        200: {"headers": response_headers()},
        304: {"description": "Not modified: the If-None-Match ETag is current"},
        **documented(401, 422, 429, descriptions={429: "Rate limit: wait Retry-After seconds"}),
    },
    dependencies=[strict_query()],
)
async def list_sites(ctx: Ctx, scope: LimitedScope, if_none_match: IfNoneMatch = None) -> Response:
    sites = [site_out(s) for s in ctx.config.sites if scope.allows(s.id)]
    return cached_response(
        orjson.dumps({"sites": sites}),
        media_type="application/json",
        max_age_s=MAX_AGE_S,
        if_none_match=if_none_match,
    )
