"""`GET /v1/gateways` (operator): every gateway of the district, from its last `gateway_health`
heartbeat in InfluxDB — no local state, so any replica gives the same answer (decisions.md D15).

A gateway is `online` when its last heartbeat is at most 3 × `status.heartbeat_s` old: one lost
heartbeat is noise, three are an outage. Gateways silent for longer than the look-back (30 days)
are not listed. The heartbeat's fields (runtime.py `_heartbeat`): `uptime_s`, `log_bytes`,
`clock_synchronised`, `dead_letters`, `pending_<sink>`.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from gateway.api.deps import Ctx, OperatorKey
from gateway.api.influxql import quote_ident, quote_literal
from gateway.api.problems import documented, unavailable
from gateway.config import NAME

router = APIRouter(tags=["gateways"])

LOOKBACK = "30d"
MISSED_HEARTBEATS = 3
_PENDING = "pending_"


class GatewayState(BaseModel):
    gateway: str
    district: str
    street: str
    state: Literal["online", "offline"]
    last_heartbeat: str = Field(description="RFC 3339, UTC")
    uptime_s: int | None = None
    clock_synchronised: bool | None = None
    log_bytes: int | None = None
    dead_letters: int | None = None
    pending: dict[str, int] = Field(default_factory=dict, description="records waiting per sink")


class GatewayList(BaseModel):
    district: str
    online_within_s: float = Field(description="a gateway is online if it was heard from within this many seconds")
    gateways: list[GatewayState]


def rfc3339(ts_ns: int) -> str:
    seconds, frac = divmod(ts_ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return text + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def _int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


@router.get(
    "/v1/gateways",
    summary="The district's gateways, online or offline, from their last heartbeat",
    response_model=GatewayList,
    responses=documented(401, 403, 422, 502, 503, 504),
)
async def list_gateways(
    ctx: Ctx,
    _key: OperatorKey,
    street: Annotated[str | None, Query(pattern=NAME, description="only this street")] = None,
    state: Annotated[Literal["online", "offline"] | None, Query(description="only gateways in this state")] = None,
) -> GatewayList:
    if ctx.influx is None:
        raise unavailable("no sink is configured to answer queries")
    district = ctx.config.gateway.district
    where = [f"time > now() - {LOOKBACK}", f"{quote_ident('district')} = {quote_literal(district)}"]
    if street is not None:
        where.append(f"{quote_ident('street')} = {quote_literal(street)}")
    tags = ",".join(quote_ident(t) for t in ("district", "street", "gateway"))
    # The whole last point per gateway: its time is the heartbeat's (several last() selectors in one
    # query would return time 0), and `*` brings every pending_<sink> field whatever the sinks are.
    q = (
        f"SELECT * FROM {quote_ident('gateway_health')} WHERE {' AND '.join(where)} "
        f"GROUP BY {tags} ORDER BY time DESC LIMIT 1"
    )
    online_within_s = MISSED_HEARTBEATS * ctx.config.status.heartbeat_s
    now_ns = time.time_ns()
    items = []
    for row in await ctx.influx.rows(q):
        age_s = (now_ns - row["time"]) / 1e9
        item = GatewayState(
            gateway=row["gateway"],
            district=row["district"],
            street=row["street"],
            state="online" if age_s <= online_within_s else "offline",
            last_heartbeat=rfc3339(row["time"]),
            uptime_s=_int(row.get("uptime_s")),
            clock_synchronised=row.get("clock_synchronised"),
            log_bytes=_int(row.get("log_bytes")),
            dead_letters=_int(row.get("dead_letters")),
            pending={k[len(_PENDING) :]: int(v) for k, v in row.items() if k.startswith(_PENDING) and v is not None},
        )
        if state is None or item.state == state:
            items.append(item)
    items.sort(key=lambda i: (i.street, i.gateway))
    return GatewayList(district=district, online_within_s=online_within_s, gateways=items)
