"""`GET /v1/footfall`: people in and out of one site per time bucket, buckets aligned in the site's
zone (gateway/api/timebuckets.py), empty buckets as zeros, JSON or CSV.

One InfluxQL query per request: the `footfall` points of the site (every device and line mapped to
it) summed per grain cell in UTC, then re-bucketed into local buckets here. A point counts in the
bucket holding its time, which for an interval report is the interval's start (D8, D12).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.caching import cached_response, response_headers
from gateway.api.deps import Ctx, LimitedScope
from gateway.api.influxql import quote_ident, quote_literal
from gateway.api.problems import documented, unavailable
from gateway.api.query_params import RATE_LIMIT_DOC, IfNoneMatch, invalid_param, strict_query
from gateway.api.timebuckets import (
    EARLIEST,
    MAX_DAYS,
    TIME_PATTERN,
    Interval,
    TimeParamError,
    boundaries,
    check_range,
    local_text,
    parse_time,
    query_grain,
    rebucket,
)
from gateway.config import NAME
from gateway.sites import local_instant

router = APIRouter(tags=["footfall"])

# Pollers see new data within about a bucket's tenth; an ETag revalidation is cheap in between.
MAX_AGE_S: dict[str, int] = {"15m": 60, "1h": 300, "1d": 900}
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
TIME_DOC = (
    "RFC 3339 with an offset (`2026-03-29T10:00:00+02:00`, `…Z`), or a plain date `YYYY-MM-DD` read in the "
    "site's zone: as `from` that day's first instant, as `to` the end of that day (the day is included). "
    "The range is widened to whole buckets."
)


class InOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    in_: int = Field(alias="in", description="people in (entries)")
    out: int = Field(description="people out (exits)")


class Bucket(InOut):
    start: str = Field(description="RFC 3339 in the site's offset; inclusive")
    end: str = Field(description="RFC 3339 in the site's offset; exclusive")


class Footfall(BaseModel):
    site: str
    timezone: str
    interval: Interval
    start: str = Field(alias="from", description="the first bucket's start")
    end: str = Field(alias="to", description="the last bucket's end")
    buckets: list[Bucket]
    totals: InOut


def _parse(name: str, text: str, zone, *, is_end: bool) -> datetime:
    try:
        return parse_time(text, zone, is_end=is_end)
    except TimeParamError as exc:
        raise invalid_param(name, f"expected {exc}") from None


def _csv(buckets: list[dict]) -> bytes:
    lines = ["start,end,in,out"] + [f"{b['start']},{b['end']},{b['in']},{b['out']}" for b in buckets]
    return ("\r\n".join(lines) + "\r\n").encode()  # RFC 4180 line ends


@router.get(
    "/v1/footfall",
    summary="People in and out of a site per 15 min, hour or local day",
    description=(
        "Buckets are aligned in the site's time zone, daylight saving included: a `1d` bucket is a local "
        "calendar day (23 or 25 hours on a change day). Empty buckets are zeros. Longest range: "
        + ", ".join(f"{d} days at {i}" for i, d in MAX_DAYS.items())
        + ". An unknown site and a site of another merchant both answer 404. "
        + RATE_LIMIT_DOC
    ),
    response_model=Footfall,
    responses={
        200: {
            "headers": response_headers(),
            "content": {"text/csv": {"schema": {"type": "string"}, "example": "start,end,in,out\r\n"}},
        },
        304: {"description": "Not modified: the If-None-Match ETag is current"},
        **documented(
            401, 404, 422, 429, 502, 503, 504, descriptions={404: "No such site", 429: "Rate limit: wait Retry-After"}
        ),
    },
    dependencies=[strict_query("site", "interval", "from", "to", "format")],
)
async def get_footfall(
    ctx: Ctx,
    scope: LimitedScope,
    site: Annotated[str, Query(pattern=NAME, description="a site id from /v1/sites")],
    interval: Annotated[Interval, Query(description="bucket length")] = "1h",
    from_: Annotated[
        str | None,
        Query(alias="from", pattern=TIME_PATTERN, description=TIME_DOC + " Default: today's local midnight."),
    ] = None,
    to: Annotated[str | None, Query(pattern=TIME_PATTERN, description=TIME_DOC + " Default: now.")] = None,
    format: Annotated[Literal["json", "csv"], Query(description="`csv`: start,end,in,out rows")] = "json",
    if_none_match: IfNoneMatch = None,
) -> Response:
    conf = scope.site(ctx, site)
    zone = conf.zone
    now = datetime.now(UTC)
    start = _parse("from", from_, zone, is_end=False) if from_ else local_instant(now.astimezone(zone).date(), 0, zone)
    if to:
        end = _parse("to", to, zone, is_end=True)
    else:
        end = max(now, start + timedelta(microseconds=1)) if start <= now else now
    try:
        check_range(start, end, interval, zone)
    except TimeParamError as exc:
        name = "from" if start >= end or start < EARLIEST else "to"
        raise invalid_param(name, str(exc), max_days=MAX_DAYS[interval]) from None
    if ctx.influx is None:
        raise unavailable("no sink is configured to answer queries")

    bounds = boundaries(start, end, interval, zone)
    grain_s, offset_s = query_grain(bounds)
    first_ns, last_ns = int(bounds[0].timestamp()) * 10**9, int(bounds[-1].timestamp()) * 10**9
    q = (
        f'SELECT sum("entries") AS "in", sum("exits") AS "out" FROM {quote_ident("footfall")} WHERE '
        f"{quote_ident('district')} = {quote_literal(ctx.config.gateway.district)} AND "
        f"{quote_ident('site')} = {quote_literal(conf.id)} AND time >= {first_ns} AND time < {last_ns} "
        f"GROUP BY time({grain_s}s, {offset_s}s) fill(none)"
    )
    rows = [(r["time"], int(r["in"] or 0), int(r["out"] or 0)) for r in await ctx.influx.rows(q)]
    sums = rebucket(bounds, rows)
    buckets = [
        {"start": local_text(bounds[i], zone), "end": local_text(bounds[i + 1], zone), "in": s_in, "out": s_out}
        for i, (s_in, s_out) in enumerate(sums)
    ]
    if format == "csv":
        body, media_type = _csv(buckets), CSV_MEDIA_TYPE
    else:
        doc = {
            "site": conf.id,
            "timezone": zone.key,
            "interval": interval,
            "from": local_text(bounds[0], zone),
            "to": local_text(bounds[-1], zone),
            "buckets": buckets,
            "totals": {"in": sum(s for s, _ in sums), "out": sum(s for _, s in sums)},
        }
        body, media_type = orjson.dumps(doc), "application/json"
    return cached_response(body, media_type=media_type, max_age_s=MAX_AGE_S[interval], if_none_match=if_none_match)
