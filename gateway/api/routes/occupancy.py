"""`GET /v1/occupancy`: how many people are in a site now = people in − people out since its
business day opened (gateway/sites.py), clamped at 0 (counters miss people both ways; a negative
crowd is never shown). Stateless: one InfluxQL request with two statements — the sums since the
opening, and the latest point, whose interval end is the figure's time (`as_of`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from gateway.api.caching import cached_response, response_headers
from gateway.api.deps import Ctx, LimitedScope
from gateway.api.influxql import quote_ident, quote_literal
from gateway.api.problems import documented, unavailable
from gateway.api.query_params import RATE_LIMIT_DOC, IfNoneMatch, strict_query
from gateway.api.timebuckets import local_text
from gateway.config import NAME
from gateway.sites import current_business_day

router = APIRouter(tags=["footfall"])

MAX_AGE_S = 15
NS = 1_000_000_000


class BusinessDayOut(BaseModel):
    date: str = Field(description="the local date the business day opened on")
    opens: str = Field(description="RFC 3339 in the site's offset")
    closes: str = Field(description="RFC 3339 in the site's offset")


class Occupancy(BaseModel):
    site: str
    timezone: str
    occupancy: int = Field(description="max(0, in − out) since the business day opened")
    entries: int = Field(description="people in since the business day opened")
    exits: int = Field(description="people out since the business day opened")
    open: bool = Field(description="whether the site is within its business hours now")
    business_day: BusinessDayOut = Field(description="the business day in progress, or the last one if closed now")
    as_of: str | None = Field(description="end of the latest counted report (RFC 3339); null: none since opening")


@router.get(
    "/v1/occupancy",
    summary="People in a site now: in − out since its business day opened",
    description="An unknown site and a site of another merchant both answer 404. " + RATE_LIMIT_DOC,
    response_model=Occupancy,
    responses={
        200: {"headers": response_headers()},
        304: {"description": "Not modified: the If-None-Match ETag is current"},
        **documented(
            401, 404, 422, 429, 502, 503, 504, descriptions={404: "No such site", 429: "Rate limit: wait Retry-After"}
        ),
    },
    dependencies=[strict_query("site")],
)
async def get_occupancy(
    ctx: Ctx,
    scope: LimitedScope,
    site: Annotated[str, Query(pattern=NAME, description="a site id from /v1/sites")],
    if_none_match: IfNoneMatch = None,
) -> Response:
    conf = scope.site(ctx, site)
    zone = conf.zone
    now = datetime.now(UTC)
    day = current_business_day(conf.schedule, zone, now)
    if ctx.influx is None:
        raise unavailable("no sink is configured to answer queries")
    where = (
        f"{quote_ident('district')} = {quote_literal(ctx.config.gateway.district)} AND "
        f"{quote_ident('site')} = {quote_literal(conf.id)} AND "
        f"time >= {int(day.opens.timestamp()) * NS} AND time <= {int(now.timestamp() * NS)}"
    )
    measurement = quote_ident("footfall")
    q = (
        f'SELECT sum("entries") AS "in", sum("exits") AS "out" FROM {measurement} WHERE {where}; '
        f'SELECT "entries", "interval_s" FROM {measurement} WHERE {where} ORDER BY time DESC LIMIT 1'
    )
    entries = exits = 0
    as_of = None
    for series in await ctx.influx.query(q):
        for row in series.rows():
            if "in" in row:
                entries, exits = int(row["in"] or 0), int(row["out"] or 0)
            else:
                end_ns = row["time"] + int(row.get("interval_s") or 0) * NS
                as_of = local_text(datetime.fromtimestamp(end_ns / NS, UTC), zone)
    doc = {
        "site": conf.id,
        "timezone": zone.key,
        "occupancy": max(0, entries - exits),
        "entries": entries,
        "exits": exits,
        "open": day.is_open_at(now),
        "business_day": {
            "date": day.date.isoformat(),
            "opens": local_text(day.opens, zone),
            "closes": local_text(day.closes, zone),
        },
        "as_of": as_of,
    }
    return cached_response(
        orjson.dumps(doc), media_type="application/json", max_age_s=MAX_AGE_S, if_none_match=if_none_match
    )
