"""Parcel lockers (operator): banks, occupancy and open alarms; a bank's compartments; remote open.

The two reads answer from InfluxDB like every route (decisions.md D15): the latest point of each
series — `locker_occupancy` per bank, `locker_alarm` per (bank, compartment, alarm),
`locker_controller` per (bank, board), `locker_compartment` per (bank, compartment), the full state of
a compartment written at each change — so each is one `ORDER BY time DESC LIMIT 1` query per
measurement. The open is a command, not a read: only the gateway that owns the bank's bus serves it
(`gateway/lockers_control.py`); the central `sdgw api` answers 421 saying so.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from gateway.api.deps import Ctx, OperatorKey
from gateway.api.influxql import quote_ident, quote_literal
from gateway.api.problems import MEDIA_TYPE, Problem, documented, unavailable
from gateway.api.routes.gateways import rfc3339
from gateway.lockers_control import IdempotencyConflict, OpenRequest, OpenResult

router = APIRouter(tags=["lockers"])

BANK_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
IDEMPOTENCY_PATTERN = r"^[\x21-\x7e]{1,200}$"  # visible ASCII, as a header value can carry it
OCCUPANCY = ("compartments", "loaded", "empty", "unknown", "out_of_service", "doors_open")


class Occupancy(BaseModel):
    compartments: int
    loaded: int
    empty: int
    unknown: int = Field(description="no item sensor and no parcel events: never guessed (D10)")
    out_of_service: int
    doors_open: int


class Alarm(BaseModel):
    bank: str
    alarm: str = Field(description="door_left_open | forced_open | lock_jammed | controller_offline")
    compartment: int | None = None
    board: int | None = None
    since: str = Field(description="RFC 3339, UTC: when it was raised")
    detail: str | None = None


class Bank(BaseModel):
    bank: str
    gateway: str
    street: str
    site: str | None = None
    occupancy: Occupancy | None = None
    as_of: str | None = Field(None, description="RFC 3339, UTC: the latest occupancy point")


class Banks(BaseModel):
    banks: list[Bank]
    alarms: list[Alarm] = Field(description="alarms raised and not cleared")


class Compartment(BaseModel):
    compartment: int
    door: str = Field(description="open | closed | unknown")
    item: str = Field(description="present | absent | unknown (no item sensor)")
    load: str = Field(description="loaded | empty | unknown")
    in_service: bool
    command: str = Field(description="none | pending | unconfirmed (an open awaiting its confirmation)")
    alarms: list[str]
    as_of: str = Field(description="RFC 3339, UTC: the state's last change")


class BankDetail(BaseModel):
    bank: Bank
    compartments: list[Compartment]
    alarms: list[Alarm]


class OpenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, description="why; written to the audit record")
    force: bool = Field(False, description="open even while an earlier open is unconfirmed (audited)")


class Opened(BaseModel):
    outcome: str = Field(description="opened: the controller reported the door open")
    bank: str
    compartment: int
    transaction_id: str
    latency_ms: int | None = None
    forced: bool


def _district(ctx: Ctx) -> str:
    return f"{quote_ident('district')} = {quote_literal(ctx.config.gateway.district)}"


def _latest(measurement: str, where: list[str], group: tuple[str, ...]) -> str:
    by = ",".join(quote_ident(t) for t in group)
    return (
        f"SELECT * FROM {quote_ident(measurement)} WHERE {' AND '.join(where)} GROUP BY {by} ORDER BY time DESC LIMIT 1"
    )


async def _rows(ctx: Ctx, q: str) -> list[dict[str, Any]]:
    if ctx.influx is None:
        raise unavailable("no sink is configured to answer queries")
    return await ctx.influx.rows(q)


def _bank(row: dict) -> Bank:
    occupancy = Occupancy(**{k: int(row[k]) for k in OCCUPANCY}) if row.get("compartments") is not None else None
    return Bank(
        bank=row["bank"],
        gateway=row.get("gateway", ""),
        street=row.get("street", ""),
        site=row.get("site") or None,
        occupancy=occupancy,
        as_of=rfc3339(row["time"]),
    )


async def _alarms(ctx: Ctx, where: list[str]) -> list[Alarm]:
    out = []
    for row in await _rows(ctx, _latest("locker_alarm", where, ("bank", "compartment", "alarm"))):
        if row.get("is_active") is True:
            out.append(
                Alarm(
                    bank=row["bank"],
                    alarm=row["alarm"],
                    compartment=int(row["compartment"]),
                    since=rfc3339(row["time"]),
                    detail=row.get("detail"),
                )
            )
    for row in await _rows(ctx, _latest("locker_controller", where, ("bank", "board"))):
        if row.get("is_online") is False:
            out.append(
                Alarm(bank=row["bank"], alarm="controller_offline", board=int(row["board"]), since=rfc3339(row["time"]))
            )
    out.sort(key=lambda a: (a.bank, a.compartment or 0, a.alarm, a.board or 0))
    return out


@router.get(
    "/v1/lockers",
    summary="Locker banks with their occupancy, and the alarms open now",
    response_model=Banks,
    responses=documented(401, 403, 502, 503, 504),
)
async def list_banks(ctx: Ctx, _key: OperatorKey) -> Banks:
    where = [_district(ctx)]
    rows = await _rows(ctx, _latest("locker_occupancy", where, ("bank",)))
    banks = sorted((_bank(r) for r in rows), key=lambda b: b.bank)
    return Banks(banks=banks, alarms=await _alarms(ctx, where))


@router.get(
    "/v1/lockers/{bank}",
    summary="A bank's compartments and their state",
    response_model=BankDetail,
    responses=documented(401, 403, 404, 422, 502, 503, 504),
)
async def bank_detail(
    ctx: Ctx,
    _key: OperatorKey,
    bank: Annotated[str, Path(pattern=BANK_PATTERN, description="the bank's name (its `bank` tag)")],
) -> BankDetail:
    where = [_district(ctx), f"{quote_ident('bank')} = {quote_literal(bank)}"]
    occupancy = await _rows(ctx, _latest("locker_occupancy", where, ("bank",)))
    states = await _rows(ctx, _latest("locker_compartment", where, ("compartment",)))
    if not occupancy and not states:
        raise Problem(404, f"no locker bank {bank!r} has reported in this district")
    compartments = sorted(
        (
            Compartment(
                compartment=int(r["compartment"]),
                door=r["door"],
                item=r["item"],
                load=r["load"],
                in_service=bool(r["in_service"]),
                command=r["command"],
                alarms=[] if r["alarms"] == "none" else r["alarms"].split(","),
                as_of=rfc3339(r["time"]),
            )
            for r in states
        ),
        key=lambda c: c.compartment,
    )
    head = _bank(occupancy[0]) if occupancy else _bank({**states[0], "compartments": None})
    return BankDetail(bank=head, compartments=compartments, alarms=await _alarms(ctx, where))


def _problem(status: int, type_: str, title: str, detail: str, instance: str, **extensions: Any) -> dict:
    return {
        "type": f"urn:sdgw:problem:{type_}" if type_ else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        **extensions,
    }


def render(result: OpenResult, instance: str) -> tuple[int, dict]:
    """An open's result → (HTTP status, body). Only a reported opening is a 200 (never a false one)."""
    where = f"compartment {result.compartment} of bank {result.bank!r}"
    facts = {"outcome": result.outcome, "bank": result.bank, "compartment": result.compartment}
    if result.transaction_id:
        facts["transaction_id"] = result.transaction_id
    match result.outcome:
        case "opened":
            body = Opened(
                outcome="opened",
                bank=result.bank,
                compartment=result.compartment,
                transaction_id=result.transaction_id,
                latency_ms=result.latency_ms,
                forced=result.forced,
            )
            return 200, body.model_dump()
        case "failed":
            detail = f"the controller reported the door of {where} still shut ({result.detail or 'no detail'})"
            return 502, _problem(502, "locker-open-failed", "The door did not open", detail, instance, **facts)
        case "unconfirmed":
            detail = (
                f"the controller did not confirm the open of {where} in time; the compartment is 'open "
                "unconfirmed' until its next status shows the door, and a second open is refused meanwhile "
                "unless force=true"
            )
            return 504, _problem(
                504, "locker-open-unconfirmed", "The open was not confirmed", detail, instance, **facts
            )
        case "refused_pending":
            detail = f"an earlier open of {where} is still unconfirmed; pass force=true to open anyway (audited)"
            return 409, _problem(409, "locker-open-pending", "An open is already pending", detail, instance, **facts)
        case "refused_out_of_service":
            detail = f"{where} is out of service; pass force=true to open anyway (audited)"
            return 409, _problem(
                409, "locker-out-of-service", "The compartment is out of service", detail, instance, **facts
            )
        case "unknown_compartment":
            return 404, _problem(
                404, "", "Not Found", f"bank {result.bank!r} has no compartment {result.compartment}", instance
            )
        case _:
            return 404, _problem(404, "", "Not Found", f"bank {result.bank!r} is not on this gateway", instance)


_OPEN_RESPONSES = documented(
    401,
    403,
    404,
    409,
    421,
    422,
    502,
    504,
    descriptions={
        404: "No such bank on this gateway, or no such compartment",
        409: "An earlier open is unconfirmed, or the compartment is out of service (force=true overrides)",
        421: "This API does not own the bank's bus (the central `sdgw api`): ask the bank's gateway",
        422: "Invalid body or header, or an Idempotency-Key reused for a different request",
        502: "The controller reported the door still shut",
        504: "The controller did not confirm in time: the compartment is 'open unconfirmed'",
    },
)


@router.post(
    "/v1/lockers/{bank}/compartments/{compartment}/open",
    summary="Open a compartment: send the command, wait for the controller's confirmation",
    response_model=Opened,
    responses=_OPEN_RESPONSES,
)
async def open_compartment(
    ctx: Ctx,
    key: OperatorKey,
    body: OpenBody,
    bank: Annotated[str, Path(pattern=BANK_PATTERN, description="the bank's name (its `bank` tag)")],
    compartment: Annotated[int, Path(ge=1, le=999, description="the compartment number")],
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_PATTERN,
            description="a retry with the same key gets the first answer, and nothing is opened again",
        ),
    ] = None,
) -> JSONResponse:
    path = f"/v1/lockers/{bank}/compartments/{compartment}/open"
    if ctx.lockers is None:
        raise Problem(
            421,
            "locker commands are served by the gateway that owns the bank's bus; this API has no bus "
            "(decisions.md D15): send the request to the bank's gateway",
            type_="not-bus-owner",
            title="This API does not own the bank",
        )
    request = OpenRequest(bank, compartment, body.reason, body.force, key.id, idempotency_key)
    try:
        status, answer = await ctx.lockers.open(request, lambda result: render(result, path))
    except IdempotencyConflict:
        raise Problem(
            422,
            "this Idempotency-Key was used for a different request (bank, compartment, reason or force)",
            type_="idempotency-key-reused",
            title="Idempotency-Key reused",
        ) from None
    media = "application/json" if status < 400 else MEDIA_TYPE
    return JSONResponse(answer, status_code=status, media_type=media)
