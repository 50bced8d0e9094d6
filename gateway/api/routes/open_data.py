"""`GET /v1/open/footfall`: a street's daily footfall for anyone, no key (decisions.md D14).

What the street total sums: the `entries` of the street's **shop** sites (`kind = "shop"`, by their
configured `street`) over one local calendar day in the district's zone (`[gateway] timezone`).
Street entrances are left out: adding them would count a person twice (once into the street, once
into a shop). The total is published only when at least `min_sites` of those shops reported that day
(a site reported when it has any footfall point that day, zeros included) and the total reaches
`min_total`; otherwise `entries` is null and `reason` says which rule withheld it. Nothing
per-site is ever returned or hinted at: not a site id, not how many sites reported.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from gateway.api.caching import cached_response, response_headers
from gateway.api.deps import Ctx, OpenClient
from gateway.api.influxql import quote_ident, quote_literal
from gateway.api.problems import Problem, documented, unavailable
from gateway.api.query_params import IfNoneMatch, invalid_param, strict_query
from gateway.api.timebuckets import DATE_PATTERN, EARLIEST, TimeParamError, parse_date
from gateway.config import NAME
from gateway.sites import local_instant

router = APIRouter(tags=["open data"])

MAX_AGE_PAST_S = 3600  # late data after a gateway outage can still change a past day
MAX_AGE_TODAY_S = 300


class Rule(BaseModel):
    min_sites: int = Field(description="shops that must have reported that day")
    min_total: int = Field(description="the smallest total that is published")


class StreetDay(BaseModel):
    street: str
    date: str = Field(description="the local calendar day, YYYY-MM-DD")
    timezone: str = Field(description="the district's zone the day is taken in")
    complete: bool = Field(description="false while the day is still running")
    published: bool
    entries: int | None = Field(description="people into the street's shops that day; null when withheld")
    reason: str | None = Field(description="why the figure is withheld; null when published")
    rule: Rule


@router.get(
    "/v1/open/footfall",
    summary="A street's daily footfall (open data, no key)",
    description=(
        "The sum of people in over the street's shops for one local day. Withheld (null, with a reason) "
        "unless enough shops reported and the total is large enough. Rate-limited per client address "
        "(`[open_data] rate_limit_per_s` / `rate_limit_burst`, per replica): 429 with Retry-After."
    ),
    response_model=StreetDay,
    responses={
        200: {"headers": response_headers(private=False)},
        304: {"description": "Not modified: the If-None-Match ETag is current"},
        **documented(
            404, 422, 429, 502, 503, 504, descriptions={404: "No such street", 429: "Rate limit: wait Retry-After"}
        ),
    },
    dependencies=[strict_query("street", "date")],
)
async def street_footfall(
    ctx: Ctx,
    _client: OpenClient,
    street: Annotated[str, Query(pattern=NAME, description="a street of the district")],
    date: Annotated[str, Query(pattern=DATE_PATTERN, description="a local date YYYY-MM-DD, not in the future")],
    if_none_match: IfNoneMatch = None,
) -> Response:
    policy = ctx.config.open_data
    shops = sorted(s.id for s in ctx.config.sites if s.street == street and s.kind == "shop")
    if not shops:
        raise Problem(404, "no such street")
    zone = ZoneInfo(ctx.config.gateway.timezone)
    try:
        day = parse_date(date)
    except TimeParamError as exc:
        raise invalid_param("date", f"expected {exc}") from None
    now = datetime.now(UTC)
    today = now.astimezone(zone).date()
    if day > today:
        raise invalid_param("date", "a day that has begun (not in the future)")
    if day < EARLIEST.date():
        raise invalid_param("date", f"a day from {EARLIEST.date()}")
    if ctx.influx is None:
        raise unavailable("no sink is configured to answer queries")
    opens, closes = local_instant(day, 0, zone), local_instant(day + timedelta(days=1), 0, zone)
    sites = " OR ".join(f"{quote_ident('site')} = {quote_literal(s)}" for s in shops)
    q = (
        f'SELECT sum("entries") AS "in" FROM {quote_ident("footfall")} WHERE '
        f"{quote_ident('district')} = {quote_literal(ctx.config.gateway.district)} AND ({sites}) AND "
        f"time >= {int(opens.timestamp()) * 10**9} AND time < {int(closes.timestamp()) * 10**9} "
        f"GROUP BY {quote_ident('site')}"
    )
    per_site = await ctx.influx.rows(q)
    reported = len({r["site"] for r in per_site})
    total = sum(int(r["in"] or 0) for r in per_site)
    reason = None
    if reported < policy.min_sites:
        reason = f"fewer than {policy.min_sites} shops on this street reported that day"
    elif total < policy.min_total:
        reason = f"the street's total is below {policy.min_total}"
    doc = {
        "street": street,
        "date": day.isoformat(),
        "timezone": zone.key,
        "complete": closes <= now,
        "published": reason is None,
        "entries": total if reason is None else None,
        "reason": reason,
        "rule": {"min_sites": policy.min_sites, "min_total": policy.min_total},
    }
    max_age = MAX_AGE_PAST_S if closes <= now else MAX_AGE_TODAY_S
    return cached_response(
        orjson.dumps(doc), media_type="application/json", max_age_s=max_age, if_none_match=if_none_match, private=False
    )
