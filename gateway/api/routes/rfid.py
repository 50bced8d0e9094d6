"""RFID traceability (operator): where an item or a product was seen, and what is at a reader now.

Both answer from `rfid_presence` in InfluxDB (decisions.md D9, D15), never from the gateway's
memory. "Present now" = the tags whose latest presence record at that reader within the last two
summary intervals is not a departure. Card sightings (people, as pseudonyms) are never listed:
these routes are about items.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from gateway.api.deps import Ctx, OperatorKey
from gateway.api.influxql import quote_ident, quote_literal
from gateway.api.problems import Problem, documented, unavailable
from gateway.api.routes.gateways import rfc3339

router = APIRouter(tags=["rfid"])

MAX_RANGE = timedelta(days=92)
MAX_ROWS = 10_000
EPC_PATTERN = r"^[0-9A-Fa-f]{8,124}$"
GTIN_PATTERN = r"^[0-9]{14}$"
READER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}(/[A-Za-z0-9_.:-]{1,63})?$"
FIELDS = ("event", "epc", "serial", "reads", "peak_rssi_dbm", "dwell_s")


class Sighting(BaseModel):
    time: str = Field(description="RFC 3339, UTC")
    event: str = Field(description="arrive | depart | summary")
    epc: str
    gtin: str | None = None
    serial: str | None = None
    street: str
    gateway: str
    site: str | None = None
    reader: str
    antenna: int
    reads: int | None = None
    peak_rssi_dbm: float | None = None
    dwell_s: float | None = None


class Sightings(BaseModel):
    query: dict[str, str]
    sightings: list[Sighting]
    truncated: bool = Field(description=f"more than {MAX_ROWS} sightings matched; narrow the range")


class PresentItem(BaseModel):
    epc: str
    gtin: str | None = None
    serial: str | None = None
    antenna: int
    last_event: str
    last_seen: str = Field(description="RFC 3339, UTC: the latest presence record")


class Present(BaseModel):
    reader: str
    window_s: float
    items: list[PresentItem]


def _bad_request(detail: str, *names: str) -> Problem:
    """The API's one 422 shape (problems.py): type invalid-request, `errors` naming each parameter."""
    errors = [{"in": "query", "name": name, "detail": detail} for name in names]
    return Problem(422, detail, type_="invalid-request", title="Invalid request", errors=errors)


def _sighting(row: dict) -> Sighting:
    return Sighting(
        time=rfc3339(row["time"]),
        event=row["event"],
        epc=row["epc"],
        gtin=row.get("gtin") or None,
        serial=row.get("serial"),
        street=row.get("street", ""),
        gateway=row.get("gateway", ""),
        site=row.get("site") or None,
        reader=row.get("reader", ""),
        antenna=int(row.get("antenna") or 0),
        reads=row.get("reads"),
        peak_rssi_dbm=row.get("peak_rssi_dbm"),
        dwell_s=row.get("dwell_s"),
    )


@router.get(
    "/v1/rfid/sightings",
    summary="Where an item (EPC) or a product (GTIN) was seen, and when",
    response_model=Sightings,
    responses=documented(401, 403, 422, 502, 503, 504),
)
async def sightings(
    ctx: Ctx,
    _key: OperatorKey,
    gtin: Annotated[str | None, Query(pattern=GTIN_PATTERN, description="GTIN-14 of a product")] = None,
    epc: Annotated[str | None, Query(pattern=EPC_PATTERN, description="an item's EPC, hex")] = None,
    from_: Annotated[datetime | None, Query(alias="from", description="RFC 3339; default: 24 h before `to`")] = None,
    to: Annotated[datetime | None, Query(description="RFC 3339; default: now")] = None,
) -> Sightings:
    if (gtin is None) == (epc is None):
        raise _bad_request("give exactly one of `gtin` (a product) or `epc` (an item)", "gtin", "epc")
    end = to or datetime.now(UTC)
    start = from_ or end - timedelta(days=1)
    if end.tzinfo is None or start.tzinfo is None:
        raise _bad_request("`from` and `to` need a time zone (e.g. 2026-11-25T08:00:00Z)", "from", "to")
    if start >= end:
        raise _bad_request("`from` must be before `to`", "from")
    if end - start > MAX_RANGE:
        raise _bad_request(f"the range may span at most {MAX_RANGE.days} days", "to")
    if ctx.influx is None:
        raise unavailable("no sink is configured to answer queries")
    where = [
        f"{quote_ident('district')} = {quote_literal(ctx.config.gateway.district)}",
        f"time >= {int(start.timestamp() * 1e9)} AND time < {int(end.timestamp() * 1e9)}",
    ]
    if gtin is not None:
        where.append(f"{quote_ident('gtin')} = {quote_literal(gtin)}")
    else:
        where.append(f"{quote_ident('epc')} = {quote_literal(epc.upper())}")  # type: ignore[union-attr]
    fields = ",".join(quote_ident(f) for f in FIELDS)
    tags = ",".join(quote_ident(t) for t in ("street", "gateway", "site", "reader", "antenna", "gtin"))
    q = (
        f"SELECT {fields} FROM {quote_ident('rfid_presence')} WHERE {' AND '.join(where)} "
        f"GROUP BY {tags} LIMIT {MAX_ROWS + 1}"
    )
    rows = [r for r in await ctx.influx.rows(q) if r.get("epc")]
    rows.sort(key=lambda r: r["time"])
    query = {"from": rfc3339(int(start.timestamp() * 1e9)), "to": rfc3339(int(end.timestamp() * 1e9))}
    query.update({"gtin": gtin} if gtin else {"epc": epc.upper()})  # type: ignore[union-attr]
    return Sightings(query=query, sightings=[_sighting(r) for r in rows[:MAX_ROWS]], truncated=len(rows) > MAX_ROWS)


@router.get(
    "/v1/rfid/readers/{reader:path}/present",
    summary="The items at a reader now",
    response_model=Present,
    responses=documented(401, 403, 422, 502, 503, 504),
)
async def present(
    ctx: Ctx,
    _key: OperatorKey,
    reader: Annotated[str, Path(pattern=READER_PATTERN, description="the reader's device id")],
) -> Present:
    if ctx.influx is None:
        raise unavailable("no sink is configured to answer queries")
    window_s = 2 * ctx.config.rfid.summary_interval_s
    fields = ",".join(quote_ident(f) for f in FIELDS)
    q = (
        f"SELECT {fields} FROM {quote_ident('rfid_presence')} WHERE "
        f"{quote_ident('district')} = {quote_literal(ctx.config.gateway.district)} AND "
        f"{quote_ident('reader')} = {quote_literal(reader)} AND time > now() - {int(window_s * 1000)}ms "
        f"GROUP BY {quote_ident('antenna')},{quote_ident('gtin')}"
    )
    latest: dict[str, dict] = {}
    for row in await ctx.influx.rows(q):
        epc = row.get("epc")
        if epc and (epc not in latest or row["time"] >= latest[epc]["time"]):
            latest[epc] = row
    items = [
        PresentItem(
            epc=epc,
            gtin=row.get("gtin") or None,
            serial=row.get("serial"),
            antenna=int(row.get("antenna") or 0),
            last_event=row["event"],
            last_seen=rfc3339(row["time"]),
        )
        for epc, row in sorted(latest.items())
        if row["event"] != "depart"
    ]
    return Present(reader=reader, window_s=window_s, items=items)
