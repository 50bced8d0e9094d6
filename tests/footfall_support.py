"""Shared by the footfall API tests: a config with sites in two zones and two merchants, keys for
each role, a real uvicorn over the test's InfluxDB database, and footfall points written as line
protocol to the real server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx

from gateway.api.app import build_context, create_app
from gateway.api.context import ApiContext
from gateway.config import parse_config
from gateway.localservers import free_port
from tests.api_support import ServerThread

PROBLEM = "application/problem+json"

SITES = """
[[sites]]
id = "sh-1"
name = "Tea House"
merchant = "m-a"
hours = "10:00-22:00"

[[sites]]
id = "be-1"
name = "Berlin shop"
merchant = "m-a"
street = "berlin-st"
timezone = "Europe/Berlin"

[[sites]]
id = "other-1"
name = "Someone else's shop"
merchant = "m-b"

[[sites]]
id = "gate-n"
name = "North entrance"
kind = "entrance"
"""


def config_text(tmp_path: Path, influx_url: str, database: str, *, sites: str = SITES, extra: str = "") -> str:
    return f"""
[gateway]
district = "d1"
street = "s1"
id = "g1"
data_dir = "{tmp_path / "data"}"

[[sinks]]
name = "central"
url = "{influx_url}"
database = "{database}"

{sites}

[api]
host = "127.0.0.1"
port = {free_port()}
query_timeout_s = 10
{extra}
"""


@dataclass
class Api:
    url: str
    ctx: ApiContext
    operator: str  # secrets
    merchant_a: str  # sh-1, be-1
    merchant_b: str  # other-1

    def get(self, path: str, key: str | None, **kw) -> httpx.Response:
        headers = kw.pop("headers", {})
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.get(self.url + path, headers=headers, timeout=30, **kw)


@contextlib.contextmanager
def running_api(tmp_path: Path, influxdb, *, sites: str = SITES, api_extra: str = "", extra: str = "") -> Iterator[Api]:
    """An api-mode app on a real server; `api_extra` lands in [api], `extra` after it."""
    text = config_text(tmp_path, influxdb.url, influxdb.db, sites=sites, extra=api_extra + "\n" + extra)
    cfg = parse_config(text, tmp_path / "sdgw.toml")
    ctx = build_context(cfg, mode="api")
    _, operator = ctx.keys.create("operator")
    configured = {s.id for s in cfg.sites}

    def merchant(*sites: str) -> str:
        mine = [s for s in sites if s in configured]
        return ctx.keys.create("merchant", mine)[1] if mine else ""

    merchant_a, merchant_b = merchant("sh-1", "be-1"), merchant("other-1")
    with ServerThread(create_app(ctx)) as server:
        yield Api(server.url, ctx, operator, merchant_a, merchant_b)


def footfall_line(
    site: str, at: datetime | int, entries: int, exits: int, *, device: str = "cam-1", line: str = "L1"
) -> str:
    ts_s = at if isinstance(at, int) else int(at.timestamp())
    tags = f"district=d1,street=s1,gateway=g1,site={site},device={device},line={line}"
    return f"footfall,{tags} entries={entries}i,exits={exits}i,interval_s=900i {ts_s}"


def write_lines(influxdb, lines: list[str]) -> None:
    for i in range(0, len(lines), 5000):
        r = httpx.post(
            f"{influxdb.url}/write",
            params={"db": influxdb.db, "precision": "s"},
            content="\n".join(lines[i : i + 5000]),
            timeout=30,
        )
        assert r.status_code == 204, r.text


def assert_problem(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["status"] == status and body["title"] and body["type"] and body["detail"]
    return body
