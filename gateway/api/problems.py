"""Every error the API returns is an RFC 9457 problem: `application/problem+json` with `type`,
`title`, `status`, `detail` and `instance` (the request path), plus named extensions.

`type` is `about:blank` where the HTTP status says it all (404, 405, 500: RFC 9457 §4.2.1, title =
the status phrase), else a URN of ours, one per problem class a client may act on differently:

    urn:sdgw:problem:unauthorized           401  `reason`: missing | malformed | unknown | revoked
    urn:sdgw:problem:forbidden              403  `reason`: operator-only | site-out-of-scope
    urn:sdgw:problem:invalid-request        422  `errors`: [{in, name, detail}], input never echoed
    urn:sdgw:problem:query-database-error   502  InfluxDB answered with an error
    urn:sdgw:problem:query-database-unavailable 503  unreachable, database missing, or none configured
    urn:sdgw:problem:query-database-timeout 504
    urn:sdgw:problem:unhealthy              503  /v1/health: `reasons`
    urn:sdgw:problem:rate-limited           429  `retry_after_s` (and the Retry-After header)
    (routes add their own where a client acts differently: lockers, ingest — see their modules)

Problems never carry a key, a credential or an internal URL.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.api.influxql import (
    InfluxDatabaseMissing,
    InfluxQueryError,
    InfluxTimeout,
    InfluxUnreachable,
)

log = logging.getLogger("sdgw.api")

MEDIA_TYPE = "application/problem+json"
_URN = "urn:sdgw:problem:"
BEARER_REALM = 'Bearer realm="sdgw"'


class ProblemDetail(BaseModel):
    """RFC 9457 problem details; extensions (reason, errors, reasons, …) are extra members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="URI of the problem class")
    title: str = Field(description="short summary of the problem class")
    status: int = Field(description="the HTTP status code")
    detail: str | None = Field(None, description="what happened this time")
    instance: str | None = Field(None, description="the request path")


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


class Problem(Exception):
    """Raise anywhere in a request to answer with this problem."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        type_: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = _URN + type_ if type_ else "about:blank"
        self.title = title or HTTPStatus(status).phrase
        self.headers = headers or {}
        self.extensions = extensions


def unauthorized(reason: str, detail: str) -> Problem:
    # RFC 6750 §3: no error code when the request carried no credentials, invalid_token otherwise.
    challenge = BEARER_REALM if reason == "missing" else BEARER_REALM + ', error="invalid_token"'
    return Problem(
        401,
        detail,
        type_="unauthorized",
        title="A valid API key is needed",
        headers={"WWW-Authenticate": challenge},
        reason=reason,
    )


def forbidden(reason: str, detail: str) -> Problem:
    return Problem(
        403,
        detail,
        type_="forbidden",
        title="This API key may not do that",
        headers={"WWW-Authenticate": BEARER_REALM + ', error="insufficient_scope"'},
        reason=reason,
    )


def unavailable(detail: str) -> Problem:
    return Problem(503, detail, type_="query-database-unavailable", title="The query database is unavailable")


def respond(request: Request, problem: Problem) -> ProblemResponse:
    body = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": request.url.path,
        **problem.extensions,
    }
    return ProblemResponse(body, status_code=problem.status, headers=problem.headers)


def _influx_problem(exc: InfluxQueryError) -> Problem:
    if isinstance(exc, InfluxTimeout):
        return Problem(504, str(exc), type_="query-database-timeout", title="The query database did not answer in time")
    if isinstance(exc, InfluxUnreachable | InfluxDatabaseMissing):
        return unavailable(str(exc))
    return Problem(502, str(exc), type_="query-database-error", title="The query database answered with an error")


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        where = loc[0] if loc else "request"
        name = ".".join(loc[1:]) or where
        errors.append({"in": where, "name": name, "detail": err.get("msg", "invalid")})
    detail = "; ".join(f"{e['in']} parameter {e['name']!r}: {e['detail']}" for e in errors)
    return Problem(422, detail or "invalid request", type_="invalid-request", title="Invalid request", errors=errors)


def install(app: FastAPI) -> None:
    """Route every error through problem+json."""

    async def on_problem(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, Problem)
        return respond(request, exc)

    async def on_http(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else None
        if exc.status_code == 404 and detail is None:
            detail = f"no resource at {request.url.path} (see /docs)"
        if exc.status_code == 405 and detail is None:
            allowed = next((v for k, v in (exc.headers or {}).items() if k.lower() == "allow"), "?")
            detail = f"{request.method} is not allowed here; allowed: {allowed}"
        return respond(request, Problem(exc.status_code, detail, headers=dict(exc.headers or {})))

    async def on_validation(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(request, _validation_problem(exc))

    async def on_influx(request: Request, exc: Exception) -> ProblemResponse:
        assert isinstance(exc, InfluxQueryError)
        return respond(request, _influx_problem(exc))

    async def on_crash(request: Request, exc: Exception) -> ProblemResponse:
        # Starlette's ServerErrorMiddleware re-raises after this answer; uvicorn logs the traceback.
        return respond(request, Problem(500, "an unexpected error; it has been logged"))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(InfluxQueryError, on_influx)
    app.add_exception_handler(Exception, on_crash)


_DESCRIPTIONS = {
    401: "No API key, or one that is malformed, unknown or revoked",
    403: "The key's role or sites do not allow this",
    404: "Not found",
    422: "A parameter is invalid; `errors` names it",
    500: "Unexpected error",
    502: "InfluxDB answered with an error",
    503: "InfluxDB unreachable, or its database missing",
    504: "InfluxDB did not answer in time",
}


def documented(*statuses: int, descriptions: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for these statuses, as problem+json (schema added by `add_problem_schema`)."""
    ref = {"$ref": "#/components/schemas/ProblemDetail"}
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        text = (descriptions or {}).get(status) or _DESCRIPTIONS.get(status) or HTTPStatus(status).phrase
        out[status] = {"description": text, "content": {MEDIA_TYPE: {"schema": ref}}}
    return out


def add_problem_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["ProblemDetail"] = ProblemDetail.model_json_schema(ref_template="#/components/schemas/{model}")
    return openapi
