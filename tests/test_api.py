"""The HTTP API against a real uvicorn on loopback and the real InfluxDB: auth, problems, routes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.api.app import build_context, create_app
from gateway.api.deps import MerchantScope
from gateway.api.routes.gateways import rfc3339
from gateway.api.server import ApiServerError, serve
from gateway.keys import KeyStore
from gateway.localservers import free_port
from tests.api_support import ROOT, ServerThread, cli, wait_for, write_config

PROBLEM = "application/problem+json"


def _app(cfg, *, mode="api", local_health=None, registry=None):
    ctx = build_context(cfg, mode=mode, local_health=local_health, registry=registry)
    return ctx, create_app(ctx)


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"] and body["detail"]
    assert body["instance"] == r.request.url.path
    return body


def _write_lines(influxdb, lines: list[str]) -> None:
    r = httpx.post(f"{influxdb.url}/write", params={"db": influxdb.db, "precision": "ns"}, content="\n".join(lines))
    assert r.status_code == 204, r.text


@pytest.fixture
def api(tmp_path, influxdb):
    """An api-mode app over the test's database on a real server; yields (server, ctx, cfg)."""
    _, cfg = write_config(tmp_path, influx_url=influxdb.url, database=influxdb.db)
    ctx, app = _app(cfg)
    with ServerThread(app) as server:
        yield server, ctx, cfg


def test_api_no_key_is_401_problem_with_challenge(api):
    """Without a Bearer key an operator route answers 401 problem+json with WWW-Authenticate."""
    server, _, _ = api
    r = httpx.get(f"{server.url}/v1/gateways")
    body = _assert_problem(r, 401)
    assert r.headers["www-authenticate"] == 'Bearer realm="sdgw"'
    assert body["reason"] == "missing" and body["type"] == "urn:sdgw:problem:unauthorized"
    r = httpx.get(f"{server.url}/v1/gateways", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert _assert_problem(r, 401)["reason"] == "missing"


def test_api_unknown_or_malformed_key_is_401_without_echo(api):
    """An unknown or malformed key is refused as invalid_token; the problem never echoes it."""
    server, _, _ = api
    for key, reason in [("sdgw_0123abcd_" + "x" * 32, "unknown"), ("letmein", "malformed")]:
        r = httpx.get(f"{server.url}/v1/gateways", headers=_bearer(key))
        assert _assert_problem(r, 401)["reason"] == reason
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
        assert key not in r.text


def test_api_revoked_key_is_401(api):
    """A key revoked by another writer of the key file is refused within the reload interval."""
    server, ctx, _ = api
    record, secret = ctx.keys.create("operator")
    assert httpx.get(f"{server.url}/v1/gateways", headers=_bearer(secret)).status_code == 200
    KeyStore(ctx.keys.path).revoke(record.id)
    r = wait_for(
        lambda: (r := httpx.get(f"{server.url}/v1/gateways", headers=_bearer(secret))).status_code == 401 and r,
        timeout_s=5,
        what="revocation seen by the server",
    )
    assert _assert_problem(r, 401)["reason"] == "revoked"


def test_api_merchant_key_on_operator_route_is_403(api):
    server, ctx, _ = api
    _, secret = ctx.keys.create("merchant", ["shop-1"])
    r = httpx.get(f"{server.url}/v1/gateways", headers=_bearer(secret))
    body = _assert_problem(r, 403)
    assert body["reason"] == "operator-only" and body["type"] == "urn:sdgw:problem:forbidden"


def test_api_gateways_listed_from_influxdb(api, influxdb):
    """Each gateway of the district from its last heartbeat: recent → online, old → offline;
    another district's gateways are not listed."""
    server, ctx, _ = api
    now = time.time_ns()
    recent, older, old = now - 10 * 10**9, now - 70 * 10**9, now - 3600 * 10**9
    fields = "uptime_s={}i,log_bytes={}i,clock_synchronised={},dead_letters={}i"
    g1 = "gateway_health,district=d1,street=s1,gateway=g1"
    _write_lines(
        influxdb,
        [
            f"{g1} {fields.format(5, 1, 'false', 0)} {older}",
            f"{g1} {fields.format(65, 2, 'true', 0)},pending_central=7i {recent}",
            f"gateway_health,district=d1,street=s2,gateway=g2 {fields.format(9, 3, 'false', 4)} {old}",
            f"gateway_health,district=d2,street=s1,gateway=g9 {fields.format(1, 1, 'true', 0)} {recent}",
        ],
    )
    _, secret = ctx.keys.create("operator")
    r = httpx.get(f"{server.url}/v1/gateways", headers=_bearer(secret))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "district": "d1",
        "online_within_s": 180.0,
        "gateways": [
            {
                "gateway": "g1",
                "district": "d1",
                "street": "s1",
                "state": "online",
                "last_heartbeat": rfc3339(recent),
                "uptime_s": 65,
                "clock_synchronised": True,
                "log_bytes": 2,
                "dead_letters": 0,
                "pending": {"central": 7},
            },
            {
                "gateway": "g2",
                "district": "d1",
                "street": "s2",
                "state": "offline",
                "last_heartbeat": rfc3339(old),
                "uptime_s": 9,
                "clock_synchronised": False,
                "log_bytes": 3,
                "dead_letters": 4,
                "pending": {},
            },
        ],
    }
    only = httpx.get(f"{server.url}/v1/gateways", params={"state": "offline"}, headers=_bearer(secret)).json()
    assert [g["gateway"] for g in only["gateways"]] == ["g2"]
    only = httpx.get(f"{server.url}/v1/gateways", params={"street": "s1"}, headers=_bearer(secret)).json()
    assert [g["gateway"] for g in only["gateways"]] == ["g1"]


def test_api_404_405_422_are_problems(api):
    server, ctx, _ = api
    _, secret = ctx.keys.create("operator")
    body = _assert_problem(httpx.get(f"{server.url}/v1/nothing-here"), 404)
    assert body["type"] == "about:blank" and body["title"] == "Not Found"
    r = httpx.post(f"{server.url}/v1/gateways", headers=_bearer(secret))
    assert _assert_problem(r, 405)["title"] == "Method Not Allowed" and r.headers["allow"] == "GET"
    r = httpx.get(f"{server.url}/v1/gateways", params={"state": "sideways"}, headers=_bearer(secret))
    body = _assert_problem(r, 422)
    assert body["type"] == "urn:sdgw:problem:invalid-request"
    assert body["errors"] == [{"in": "query", "name": "state", "detail": body["errors"][0]["detail"]}]
    assert "'state'" in body["detail"] and "sideways" not in r.text
    r = httpx.get(f"{server.url}/v1/gateways", params={"street": "no such/street"}, headers=_bearer(secret))
    assert [e["name"] for e in _assert_problem(r, 422)["errors"]] == ["street"]
    # Without a key, a bad parameter is still 401: nothing is validated for an anonymous caller.
    assert httpx.get(f"{server.url}/v1/gateways", params={"state": "sideways"}).status_code == 401


def test_api_metrics_open_to_loopback_when_configured(api):
    """Loopback scrapes without a key; a client a trusted proxy forwards from elsewhere needs one."""
    server, _, _ = api
    httpx.get(f"{server.url}/v1/gateways")
    r = httpx.get(f"{server.url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'sdgw_api_requests_total{method="GET",route="/v1/gateways",status="401"} 1.0' in r.text
    assert "process_cpu_seconds_total" in r.text  # api mode: the process collectors of its own registry
    r = httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert _assert_problem(r, 401)["reason"] == "missing"


def test_api_metrics_need_operator_key_when_closed(tmp_path, influxdb):
    _, cfg = write_config(tmp_path, influx_url=influxdb.url, database=influxdb.db, metrics_open_to_loopback=False)
    registry = CollectorRegistry()
    Counter("gateway_thing", "a gateway metric", registry=registry).inc(3)
    ctx, app = _app(cfg, mode="gateway", local_health=lambda: {"healthy": True, "reasons": []}, registry=registry)
    _, op = ctx.keys.create("operator")
    _, merchant = ctx.keys.create("merchant", ["shop-1"])
    with ServerThread(app) as server:
        _assert_problem(httpx.get(f"{server.url}/metrics"), 401)
        _assert_problem(httpx.get(f"{server.url}/metrics", headers=_bearer(merchant)), 403)
        r = httpx.get(f"{server.url}/metrics", headers=_bearer(op))
        assert r.status_code == 200 and "gateway_thing_total 3.0" in r.text  # the gateway's registry


def test_api_health_api_mode_200_then_503_when_database_missing(tmp_path, influxdb):
    """Api mode is healthy when InfluxDB answers, the database exists and the key file is readable."""
    _, cfg = write_config(tmp_path, influx_url=influxdb.url, database=influxdb.db)
    ctx, app = _app(cfg)
    with ServerThread(app) as server:
        body = _assert_problem(httpx.get(f"{server.url}/v1/health"), 503)
        assert body["type"] == "urn:sdgw:problem:unhealthy"
        assert body["reasons"] == ["key file does not exist yet (create a key with `sdgw keys create`)"]
        ctx.keys.create("operator")
        r = httpx.get(f"{server.url}/v1/health")
        assert r.status_code == 200, r.text
        assert r.json()["mode"] == "api" and r.json()["details"]["key_file"] == {"readable": True}
        influxdb.query(f'DROP DATABASE "{influxdb.db}"')
        body = _assert_problem(httpx.get(f"{server.url}/v1/health"), 503)
        assert body["reasons"] == [f"database {influxdb.db!r} does not exist on InfluxDB 'central'"]


def test_api_health_gateway_mode_passes_local_state(tmp_path):
    """Gateway mode answers from the gateway's own health callback, 200 or 503 with its reasons."""
    _, cfg = write_config(tmp_path, influx_url="http://127.0.0.1:9", database="none")
    state = {"healthy": True, "reasons": [], "sinks": {"central": "ok"}}
    _, app = _app(cfg, mode="gateway", local_health=lambda: dict(state))
    with ServerThread(app) as server:
        r = httpx.get(f"{server.url}/v1/health")
        assert r.status_code == 200 and r.json() == {
            "healthy": True,
            "mode": "gateway",
            "details": {"sinks": {"central": "ok"}},
        }
        state.update(healthy=False, reasons=["sink central: HTTP 401", "clock not synchronised"])
        body = _assert_problem(httpx.get(f"{server.url}/v1/health"), 503)
        assert body["reasons"] == ["sink central: HTTP 401", "clock not synchronised"]
        assert body["detail"] == "sink central: HTTP 401; clock not synchronised"


@contextlib.contextmanager
def _silent_listener():
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def _failing_influx() -> Starlette:
    async def broken(request):
        return PlainTextResponse("internal error", status_code=500)

    return Starlette(routes=[Route("/query", broken), Route("/ping", broken)])


def test_api_influx_failures_are_502_503_504(tmp_path, influxdb):
    """Unreachable or missing database → 503, no answer in time → 504, an error answer → 502;
    none of them shows the InfluxDB URL."""
    cases = []
    with _silent_listener() as silent, ServerThread(_failing_influx()) as failing:
        cases = [
            (f"http://127.0.0.1:{free_port()}", influxdb.db, 503, "query-database-unavailable"),
            (influxdb.url, "no_such_db", 503, "query-database-unavailable"),
            (silent, influxdb.db, 504, "query-database-timeout"),
            (failing.url, influxdb.db, 502, "query-database-error"),
        ]
        for i, (url, db, status, kind) in enumerate(cases):
            _, cfg = write_config(tmp_path / str(i), influx_url=url, database=db, query_timeout_s=0.3)
            ctx, app = _app(cfg)
            _, secret = ctx.keys.create("operator")
            with ServerThread(app) as server:
                r = httpx.get(f"{server.url}/v1/gateways", headers=_bearer(secret))
                body = _assert_problem(r, status)
                assert body["type"] == f"urn:sdgw:problem:{kind}" and url not in r.text, r.text


def test_api_merchant_scope_dependency(tmp_path):
    """MerchantScope: an operator sees every site, a merchant only its own (403 otherwise)."""
    _, cfg = write_config(tmp_path, influx_url="http://127.0.0.1:9", database="none")
    ctx, app = _app(cfg)

    @app.get("/v1/test/sites/{site}")
    async def site_probe(site: str, scope: MerchantScope) -> dict:
        scope.require(site)
        return {"condition": scope.influxql_condition()}

    _, op = ctx.keys.create("operator")
    _, merchant = ctx.keys.create("merchant", ["shop-2", "shop-1"])
    with ServerThread(app) as server:
        r = httpx.get(f"{server.url}/v1/test/sites/shop-3", headers=_bearer(op))
        assert r.json() == {"condition": None}
        r = httpx.get(f"{server.url}/v1/test/sites/shop-1", headers=_bearer(merchant))
        assert r.json() == {"condition": "(\"site\" = 'shop-1' OR \"site\" = 'shop-2')"}
        r = httpx.get(f"{server.url}/v1/test/sites/shop-3", headers=_bearer(merchant))
        assert _assert_problem(r, 403)["reason"] == "site-out-of-scope"
        _assert_problem(httpx.get(f"{server.url}/v1/test/sites/shop-1"), 401)


def test_api_unexpected_error_is_500_problem(tmp_path):
    _, cfg = write_config(tmp_path, influx_url="http://127.0.0.1:9", database="none")
    _, app = _app(cfg)

    @app.get("/v1/test/crash")
    async def crash() -> None:
        raise RuntimeError("bug")

    with ServerThread(app) as server:
        body = _assert_problem(httpx.get(f"{server.url}/v1/test/crash"), 500)
        assert body["type"] == "about:blank" and "bug" not in body["detail"]


def test_api_openapi_lists_routes_bearer_and_problems(api):
    server, _, _ = api
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/health", "/v1/gateways", "/metrics"} <= set(doc["paths"])
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "sdgw_<id>_<secret>",
        "description": "An API key from `sdgw keys create`, sent as `Authorization: Bearer <key>`.",
    }
    gateways = doc["paths"]["/v1/gateways"]["get"]
    assert gateways["security"] == [{"bearer": []}]
    assert "security" not in doc["paths"]["/v1/health"]["get"]
    for status in ("401", "403", "422", "502", "503", "504"):
        schema = gateways["responses"][status]["content"][PROBLEM]["schema"]
        assert schema == {"$ref": "#/components/schemas/ProblemDetail"}
    assert {"type", "title", "status", "detail", "instance"} <= set(
        doc["components"]["schemas"]["ProblemDetail"]["properties"]
    )
    assert "text/html" in httpx.get(f"{server.url}/docs").headers["content-type"]


def test_api_serve_keeps_the_hosts_signal_handlers_and_cancels_cleanly(tmp_path):
    """Embedded in a loop that owns SIGTERM, serve() installs no handler of its own (the gateway's
    handler gets the signal, the server keeps serving), and cancelling it closes the port."""
    _, cfg = write_config(tmp_path, influx_url="http://127.0.0.1:9", database="none")
    _, app = _app(cfg)
    port = free_port()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        got_sigterm = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, got_sigterm.set)
        try:
            before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
            ready = asyncio.Event()
            task = asyncio.create_task(serve(app, "127.0.0.1", port, ready=ready))
            await asyncio.wait_for(ready.wait(), 10)
            assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(got_sigterm.wait(), 5)
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"http://127.0.0.1:{port}/v1/health")).status_code == 503
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            with (
                pytest.raises(ConnectionRefusedError),
                socket.create_connection(("127.0.0.1", port), timeout=1),
            ):
                pass
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())


def test_api_serve_port_taken_raises_instead_of_exiting(tmp_path):
    _, cfg = write_config(tmp_path, influx_url="http://127.0.0.1:9", database="none")
    _, app = _app(cfg)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ApiServerError, match="could not start"):
            asyncio.run(asyncio.wait_for(serve(app, "127.0.0.1", taken.getsockname()[1]), 10))


def test_api_running_sdgw_api_reloads_key_file(tmp_path, influxdb):
    """`sdgw api` accepts a key created after it started, refuses it once revoked — no restart —
    stops cleanly on SIGTERM, and writes no secret to its output."""
    config, cfg = write_config(tmp_path, influx_url=influxdb.url, database=influxdb.db)
    base = f"http://127.0.0.1:{cfg.api.port}"
    out = tmp_path / "api.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli_api", "api", "-c", str(config)],
            cwd=ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    try:

        def answering() -> httpx.Response | None:
            assert proc.poll() is None, Path(out).read_text()
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"{base}/v1/gateways", timeout=1)
            return None

        assert wait_for(answering, timeout_s=20, what="sdgw api listening").status_code == 401
        created = cli("keys", "create", "-c", str(config), "--role", "operator", "--label", "ops")
        assert created.returncode == 0, created.stderr
        secret = created.stdout.strip()
        wait_for(
            lambda: httpx.get(f"{base}/v1/gateways", headers=_bearer(secret)).status_code == 200,
            timeout_s=5,
            what="new key accepted",
        )
        assert httpx.get(f"{base}/v1/health").status_code == 200
        key_id = secret.split("_")[1]
        assert cli("keys", "revoke", key_id, "-c", str(config)).returncode == 0
        wait_for(
            lambda: httpx.get(f"{base}/v1/gateways", headers=_bearer(secret)).status_code == 401,
            timeout_s=5,
            what="revoked key refused",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.read_text()
    assert "API stopped" in text and secret not in text and secret.split("_", 2)[2] not in text
