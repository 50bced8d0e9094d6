"""An async InfluxQL client over `/query`: the one query language InfluxDB 1.x, 2.x (through a DBRP
mapping) and 3.x all answer (architecture.md, "InfluxDB: one schema, every version").

    GET|POST {url}/query?db=&rp=&epoch=ns   q=<statements>
    auth: v1 username/password as HTTP Basic; 2.x/3.x a token as `Authorization: Token …`

Read statements (SELECT, SHOW) go as GET, anything else — and very long queries — as POST, which
1.x requires for writes. Credentials travel in headers only, so they never appear in a URL, an
exception or a log line.

Every failure becomes one of four exceptions, each mapped to one HTTP status in problems.py:
    InfluxUnreachable      503  no connection (refused, DNS, TLS)
    InfluxDatabaseMissing  503  the server answers but the database/bucket is not there
    InfluxTimeout          504  no answer within the configured timeout
    InfluxBadAnswer        502  an error status, a statement error, or a body that is not InfluxQL JSON
Their messages name the sink, never its URL or credentials: they reach API clients as problem details.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from gateway.config import SinkConfig, read_secret, sink_env_name
from gateway.errors import (  # defined there, raised and re-exported here
    InfluxBadAnswer,
    InfluxDatabaseMissing,
    InfluxTimeout,
    InfluxUnreachable,
)
from gateway.errors import InfluxQueryError as InfluxQueryError  # re-exported: problems.py, routes/health.py

log = logging.getLogger("sdgw.api.influxql")

_READ_ONLY = re.compile(r"^\s*(SELECT|SHOW)\b", re.IGNORECASE)
_GET_MAX_QUERY_CHARS = 4000  # keep URLs well under common 8 KiB request-line limits
_USER_AGENT = "sdgw-api"


def quote_ident(name: str) -> str:
    """An identifier in double quotes (InfluxQL keywords such as `in` or `time` stay usable)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(value: str) -> str:
    """A string literal in single quotes, for tag comparisons."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Series:
    name: str
    tags: dict[str, str]
    columns: list[str]
    values: list[list[Any]]

    def rows(self) -> list[dict[str, Any]]:
        """Each row as a dict of its columns, with the series' tags merged in."""
        return [{**self.tags, **dict(zip(self.columns, v, strict=True))} for v in self.values]


class InfluxQL:
    def __init__(
        self,
        url: str,
        database: str,
        *,
        name: str = "influxdb",
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.name = name
        self.retention_policy = retention_policy
        self.timeout_s = timeout_s
        self._headers = {"User-Agent": _USER_AGENT, "Accept": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Token {token}"
        elif username is not None:
            pair = f"{username}:{password or ''}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        self._client: httpx.AsyncClient | None = None
        self._down_since: float | None = None

    @classmethod
    def from_sink(cls, sink: SinkConfig, *, timeout_s: float) -> InfluxQL:
        """The client for a configured sink; a v2 sink is queried through the DBRP mapping of its
        bucket (2.x maps each bucket to a database of the same name; 3.x databases are buckets).
        Raises ConfigError when a secret file cannot be read."""
        return cls(
            sink.url,
            sink.database if sink.dialect == "v1" else sink.bucket,  # type: ignore[arg-type]
            name=sink.name,
            retention_policy=sink.retention_policy if sink.dialect == "v1" else None,
            username=sink.username,
            password=read_secret(
                file=sink.password_file, env=sink_env_name(sink.name, "PASSWORD"), what="password_file"
            ),
            token=read_secret(file=sink.token_file, env=sink_env_name(sink.name, "TOKEN"), what="token_file"),
            timeout_s=timeout_s,
        )

    def __repr__(self) -> str:
        return f"InfluxQL(name={self.name!r}, database={self.database!r})"

    def _http(self) -> httpx.AsyncClient:
        # Created on first use, in the loop that serves requests; create_app's lifespan closes it.
        if self._client is None or self._client.is_closed:
            self._client = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=self.timeout_s)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _went_down(self, why: str) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("query database %s unavailable: %s", self.name, why)  # no URL: it may hold userinfo

    def _came_back(self) -> None:
        if self._down_since is not None:
            outage = time.monotonic() - self._down_since
            self._down_since = None
            log.warning("query database %s answers again after %.1f s", self.name, outage)

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._http().request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            self._went_down("timeout")
            raise InfluxTimeout(f"InfluxDB {self.name!r} did not answer within {self.timeout_s:g} s") from exc
        except httpx.TransportError as exc:
            self._went_down(type(exc).__name__)
            raise InfluxUnreachable(f"InfluxDB {self.name!r} is unreachable") from exc

    async def ping(self) -> None:
        """Raises unless the server answers /ping with a 2xx (1.x and 2.x: 204, 3.x: 200)."""
        r = await self._send("GET", "/ping")
        if not r.is_success:
            self._went_down(f"/ping answered {r.status_code}")
            raise InfluxBadAnswer(f"InfluxDB {self.name!r} answered /ping with HTTP {r.status_code}")
        self._came_back()

    async def query(
        self, q: str, *, in_database: bool = True, epoch: str = "ns", params: Mapping[str, Any] | None = None
    ) -> list[Series]:
        """Run one or more statements; every series of every statement. `in_database=False` sends
        no `db` (for SHOW DATABASES); `params` binds `$name` placeholders (1.x)."""
        args: dict[str, str] = {"epoch": epoch}
        db = self.database if in_database else None
        if db:
            args["db"] = db
            if self.retention_policy:
                args["rp"] = self.retention_policy
        if params:
            args["params"] = orjson.dumps(dict(params)).decode()
        if _READ_ONLY.match(q) and len(q) <= _GET_MAX_QUERY_CHARS:
            r = await self._send("GET", "/query", params={**args, "q": q})
        else:
            r = await self._send("POST", "/query", params=args, data={"q": q})
        return self._decode(r, db)

    def _decode(self, r: httpx.Response, db: str | None) -> list[Series]:
        try:
            doc = orjson.loads(r.content)
        except orjson.JSONDecodeError:
            doc = None
        if not r.is_success:
            # 1.x says {"error": …}; 2.x and 3.x {"code": …, "message": …}
            message = (doc.get("error") or doc.get("message")) if isinstance(doc, dict) else None
            if r.status_code >= 500 or r.status_code in (
                401,
                403,
                404,
            ):  # the server's fault, not the query's
                self._went_down(f"HTTP {r.status_code}")
            if r.status_code == 404 and message and "not found" in message:
                raise InfluxDatabaseMissing(f"database {db!r} does not exist on InfluxDB {self.name!r}")
            suffix = f": {message}" if message else ""
            raise InfluxBadAnswer(f"InfluxDB {self.name!r} answered HTTP {r.status_code}{suffix}")
        if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
            self._went_down("not InfluxQL JSON")
            raise InfluxBadAnswer(f"InfluxDB {self.name!r} answered something that is not InfluxQL JSON")
        self._came_back()
        out: list[Series] = []
        for result in doc["results"]:
            error = result.get("error")
            if error:
                if error.startswith("database not found"):
                    raise InfluxDatabaseMissing(f"database {db!r} does not exist on InfluxDB {self.name!r}")
                raise InfluxBadAnswer(f"InfluxDB {self.name!r} refused the query: {error}")
            for s in result.get("series", []):
                out.append(Series(s.get("name", ""), s.get("tags") or {}, s["columns"], s.get("values") or []))
        return out

    async def rows(self, q: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every row of every series, tags merged in."""
        return [row for s in await self.query(q, **kwargs) for row in s.rows()]

    async def databases(self) -> set[str]:
        series = await self.query("SHOW DATABASES", in_database=False)
        return {v[0] for s in series for v in s.values}
