"""POST /v1/ingest/{device}: reports pushed by devices over HTTP (gateway/sources/http_push.py).

Served by `sdgw run` only: ingestion belongs to the gateway the device is wired to (D15); the
central `sdgw api` answers 404 with the reason."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from gateway.api.deps import Ctx
from gateway.api.problems import Problem, documented
from gateway.sources.http_push import MAX_BODY_BYTES, RETRY_AFTER_S

router = APIRouter(tags=["ingest"])
basic = HTTPBasic(auto_error=False, realm="sdgw ingest", description="user = the device id; its configured password")
REALM = 'Basic realm="sdgw ingest", charset="UTF-8"'


@router.post(
    "/v1/ingest/{device}",
    status_code=204,
    summary="A device pushes one report (e.g. VIVOTEK Report Push JSON)",
    description=(
        'For devices configured with `transport = "http"`. Answers 204 once the report is durably '
        "stored (re-sending it then changes nothing); 400 when it cannot be decoded (it is kept as a "
        "dead letter); 503 with Retry-After when the gateway cannot store it now — send it again."
    ),
    responses=documented(400, 401, 404, 413, 503),
)
async def ingest(
    request: Request,
    ctx: Ctx,
    device: Annotated[str, Path(max_length=63, description="the device's id in the gateway's config")],
    credentials: Annotated[HTTPBasicCredentials | None, Depends(basic)],
) -> Response:
    push = ctx.push
    if push is None or not push.devices:
        raise Problem(
            404,
            "this server takes no device pushes: devices push to the gateway they are configured on",
            type_="ingest-not-served",
        )
    if credentials is None:
        raise Problem(
            401, "send the device's HTTP Basic credentials", type_="unauthorized", headers={"WWW-Authenticate": REALM}
        )
    config = push.authorised(device, credentials.username, credentials.password)
    if config is None:
        raise Problem(
            401, "unknown device or wrong password", type_="unauthorized", headers={"WWW-Authenticate": REALM}
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise Problem(413, f"a report is at most {MAX_BODY_BYTES} bytes", type_="too-large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise Problem(413, f"a report is at most {MAX_BODY_BYTES} bytes", type_="too-large")
    outcome = await push.receive(config, bytes(body))
    if outcome.status == 400:
        raise Problem(
            400, outcome.detail or "the report could not be decoded", type_="undecodable", reason=outcome.reason
        )
    if outcome.status == 503:
        raise Problem(
            503, outcome.detail, type_="not-stored", headers={"Retry-After": str(RETRY_AFTER_S)}, reason=outcome.reason
        )
    return Response(status_code=204)
