"""Writing line protocol to InfluxDB over HTTP, and what the server's answer means (decisions.md D16).

Two wire dialects carry the same lines (architecture.md, "InfluxDB: one schema, every version"):

    v1  POST {url}/write?db=&rp=&precision=ns          InfluxDB 1.x; the compatibility API of 2.x and 3.x
    v2  POST {url}/api/v2/write?org=&bucket=&precision=ns   InfluxDB 1.8+, 2.x, 3.x; VictoriaMetrics

`classify` is the one place an answer gets its meaning; `deliver` acts on it until every line has a
definite outcome: written, or rejected with the server's message (a dead letter). Nothing is rejected
for the server's fault: an unreachable, unauthorised or failing server is "unhealthy" and the batch
waits, however long, until it is back or the caller cancels.

Design notes:
- Rejections are isolated by halving: InfluxDB names at most the first bad line of a batch (1.6.7:
  "partial write: field type conflict: ... dropped=2"), so the batch is split until each bad line
  stands alone. Re-sending lines the server already wrote is harmless: the same series, field and
  timestamp overwrite (1.x, 2.x, 3.x) or deduplicate (VictoriaMetrics with -dedup.minScrapeInterval).
- Credentials travel in the Authorization header, never in the URL, so they appear in no exception,
  log line or repr (InfluxTarget's repr masks them).
- gzip level 3: 5,000 typical lines (840 kB) compress to 78 kB in 1.8 ms; level 1 saves 0.1 ms for 7 %
  more bytes, level 6 takes 2.4 times as long for 15 % fewer.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx
import orjson

_GZIP_LEVEL = 3
_MAX_MESSAGE_CHARS = 2000  # 1.x echoes the whole offending line; a dead letter needs its start
_USER_AGENT = "sdgw-influx-writer"


class Dialect(enum.Enum):
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class InfluxTarget:
    """Where and how a sink writes. Raises ValueError (naming the field, never a secret) when incomplete."""

    name: str
    url: str
    dialect: Dialect
    database: str | None = None  # v1
    retention_policy: str | None = None  # v1
    org: str | None = None  # v2
    bucket: str | None = None  # v2
    username: str | None = None
    password: str | None = None
    token: str | None = None
    gzip: bool = True
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError(f"sink {self.name!r}: url has an invalid port") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"sink {self.name!r}: url must be http(s)://host[:port][/path]")
        if parts.username is not None or parts.password is not None:
            raise ValueError(f"sink {self.name!r}: put credentials in username/password or token, not in url")
        if parts.query or parts.fragment:
            raise ValueError(f"sink {self.name!r}: url must not have a query or fragment")
        if self.dialect is Dialect.V1 and not self.database:
            raise ValueError(f"sink {self.name!r}: dialect v1 needs database")
        if self.dialect is Dialect.V2 and not self.bucket:
            raise ValueError(f"sink {self.name!r}: dialect v2 needs bucket")
        if self.dialect is Dialect.V2 and (self.username or self.password):
            raise ValueError(f"sink {self.name!r}: dialect v2 authenticates with a token only")
        if (self.password is not None) != (self.username is not None):
            raise ValueError(f"sink {self.name!r}: username and password go together")
        if self.token is not None and self.username is not None:
            raise ValueError(f"sink {self.name!r}: give either username/password or token, not both")
        if not self.timeout_s > 0:
            raise ValueError(f"sink {self.name!r}: timeout_s must be > 0, got {self.timeout_s!r}")

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("password", "token") and value is not None:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return f"InfluxTarget({', '.join(shown)})"


class AnswerKind(enum.Enum):
    ACCEPTED = "accepted"  # written: advance the cursor
    REJECTED = "rejected"  # the data is bad: isolate the bad lines, dead-letter them
    TOO_LARGE = "too_large"  # halve the batch
    RETRY_LATER = "retry_later"  # the server asks us to slow down: wait (Retry-After), resend
    UNHEALTHY = "unhealthy"  # the server, not the data: alarm, back off, resend


@dataclass(frozen=True)
class WriteAnswer:
    kind: AnswerKind
    status: int | None  # None: no HTTP answer (refused, timed out, unreadable)
    message: str
    retry_after_s: float | None = None


# Status, a marker the body must contain (None: any body), meaning. First match wins; no match is
# UNHEALTHY. 400 is a data error only when the server says so: "database is required" or a bad
# precision is ours to fix, not the data's. 1.6.7 answers a type conflict inside one batch with a bare
# "field type conflict", writing nothing, and a conflict with stored data with "partial write: ...".
_ANSWERS: tuple[tuple[int, str | None, AnswerKind], ...] = (
    (413, None, AnswerKind.TOO_LARGE),
    (429, None, AnswerKind.RETRY_LATER),
    (503, None, AnswerKind.RETRY_LATER),
    (422, None, AnswerKind.REJECTED),
    (400, "partial write", AnswerKind.REJECTED),
    (400, "field type conflict", AnswerKind.REJECTED),
    (400, "unable to parse", AnswerKind.REJECTED),
)


def classify(status: int, headers: Mapping[str, str], body: str, *, now_s: float | None = None) -> WriteAnswer:
    """The meaning of one HTTP answer to a write. `now_s` (Unix time) turns an HTTP-date Retry-After
    into seconds; it defaults to the clock."""
    if 200 <= status < 300:
        return WriteAnswer(AnswerKind.ACCEPTED, status, "")
    message = _message(headers, body)
    kind = AnswerKind.UNHEALTHY
    for rule_status, marker, rule_kind in _ANSWERS:
        if status == rule_status and (marker is None or marker in message):
            kind = rule_kind
            break
    retry_after_s = None
    if kind is AnswerKind.RETRY_LATER:
        retry_after_s = _retry_after_s(_header(headers, "retry-after"), now_s)
    return WriteAnswer(kind, status, message, retry_after_s)


class Backoff:
    """Capped exponential backoff with full jitter: attempt n waits uniform(0, min(cap, initial * 2**n))
    (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015: spreads reconnecting gateways)."""

    def __init__(self, initial_s: float = 0.2, cap_s: float = 30.0, *, rng: random.Random | None = None):
        if not 0 < initial_s <= cap_s:
            raise ValueError("need 0 < initial_s <= cap_s")
        self.initial_s = initial_s
        self.cap_s = cap_s
        self._rng = rng or random.Random()
        self._attempt = 0

    def next_delay_s(self) -> float:
        ceiling = min(self.cap_s, self.initial_s * 2 ** min(self._attempt, 60))
        self._attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class InfluxWriter:
    """Sends one batch per `write`, in the target's dialect. Never raises for what the server or the
    network does: that is a WriteAnswer. `is_healthy` is the state `deliver` last reported."""

    def __init__(self, target: InfluxTarget, *, client: httpx.AsyncClient | None = None) -> None:
        self.target = target
        self.is_healthy = True
        self._owns_client = client is None
        # trust_env=False: the target is configured explicitly; a proxy from the environment is not ours.
        self._client = client or httpx.AsyncClient(trust_env=False)
        self._timeout = httpx.Timeout(target.timeout_s)
        base = target.url.rstrip("/")
        self._headers = {"Content-Type": "text/plain; charset=utf-8", "User-Agent": _USER_AGENT}
        if target.gzip:
            self._headers["Content-Encoding"] = "gzip"
        if target.token is not None:
            self._headers["Authorization"] = f"Token {target.token}"
        elif target.username is not None:
            pair = f"{target.username}:{target.password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
        params: dict[str, str]
        if target.dialect is Dialect.V1:
            self._url = f"{base}/write"
            params = {"db": target.database or ""}
            if target.retention_policy:
                params["rp"] = target.retention_policy
        else:
            self._url = f"{base}/api/v2/write"
            params = {"bucket": target.bucket or ""}
            if target.org:
                params["org"] = target.org
        params["precision"] = "ns"
        self._params = params

    def __repr__(self) -> str:
        return f"InfluxWriter({self.target.name!r}, {self._url!r})"

    async def write(self, lines: Sequence[bytes]) -> WriteAnswer:
        if not lines:
            return WriteAnswer(AnswerKind.ACCEPTED, None, "")
        body = b"\n".join(lines)
        if self.target.gzip:
            body = zlib.compress(body, _GZIP_LEVEL, wbits=31)  # wbits 31: gzip framing
        try:
            response = await self._client.post(
                self._url, params=self._params, content=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            reason = f"no answer within {self.target.timeout_s} s ({type(exc).__name__})"
            return WriteAnswer(AnswerKind.UNHEALTHY, None, reason)
        except httpx.TransportError as exc:
            # Includes an answer h11 cannot parse (RemoteProtocolError), e.g. 1.x echoing a NUL in a header.
            return WriteAnswer(AnswerKind.UNHEALTHY, None, f"{type(exc).__name__}: {exc}"[:_MAX_MESSAGE_CHARS])
        return classify(response.status_code, response.headers, response.text, now_s=time.time())

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> InfluxWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


@dataclass
class DeliveryReport:
    accepted: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (index into lines, server message)


async def deliver(
    writer: InfluxWriter,
    lines: Sequence[bytes],
    *,
    backoff: Backoff | None = None,
    on_health: Callable[[bool, str], None] | None = None,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    max_wait_s: float = 300.0,
) -> DeliveryReport:
    """Send `lines` until each is written or rejected; may wait forever while the server is unhealthy
    (cancel to stop). `on_health(False, reason)` / `on_health(True, "")` mark each change of the writer's
    health; any answer but an unhealthy one means healthy again. A Retry-After longer than `max_wait_s`
    is cut to it. `sleep` is the seam tests use to see the waits without waiting."""
    backoff = backoff if backoff is not None else Backoff()
    report = DeliveryReport()
    pending = [(0, len(lines))] if lines else []  # a stack of [lo, hi) slices, leftmost on top
    while pending:
        lo, hi = pending.pop()
        answer = await writer.write(lines[lo:hi])
        kind = answer.kind
        if kind is AnswerKind.UNHEALTHY:
            if writer.is_healthy:
                writer.is_healthy = False
                if on_health is not None:
                    on_health(False, _health_reason(answer))
            pending.append((lo, hi))
            await sleep(backoff.next_delay_s())
            continue
        if not writer.is_healthy:
            writer.is_healthy = True
            if on_health is not None:
                on_health(True, "")
        if kind is AnswerKind.ACCEPTED:
            report.accepted += hi - lo
            backoff.reset()
        elif kind is AnswerKind.RETRY_LATER:
            pending.append((lo, hi))
            delay = answer.retry_after_s if answer.retry_after_s is not None else backoff.next_delay_s()
            await sleep(min(delay, max_wait_s))
        elif hi - lo > 1:  # REJECTED or TOO_LARGE: halve
            mid = (lo + hi) // 2
            pending.append((mid, hi))
            pending.append((lo, mid))
        elif kind is AnswerKind.TOO_LARGE:
            # One line the server will never take: its size, not the server's state, is the fault.
            report.rejected.append((lo, f"line too large for the server (HTTP 413): {answer.message}"))
        else:
            report.rejected.append((lo, answer.message))
    report.rejected.sort()
    return report


def _health_reason(answer: WriteAnswer) -> str:
    if answer.status is None:
        return answer.message
    return f"HTTP {answer.status}: {answer.message}" if answer.message else f"HTTP {answer.status}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None and not isinstance(headers, httpx.Headers):
        for key, candidate in headers.items():
            if key.lower() == name:
                return candidate
    return value


def _message(headers: Mapping[str, str], body: str) -> str:
    """The server's own words: 1.x {"error"}, 2.x {"code", "message"}, 3.x {"error", "data": [...]};
    else the body as text, else 1.x's X-Influxdb-Error header."""
    text = body.strip()
    if text.startswith("{"):
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            found = doc.get("message") or doc.get("error")
            if isinstance(found, str):
                text = found
                details = doc.get("data")
                if isinstance(details, list):
                    text += "".join(
                        f"; line {d.get('line_number')}: {d.get('error_message')}"
                        for d in details
                        if isinstance(d, dict) and "error_message" in d
                    )
    if not text:
        text = _header(headers, "x-influxdb-error") or ""
    return text[:_MAX_MESSAGE_CHARS]


def _retry_after_s(value: str | None, now_s: float | None) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date; unparseable means absent."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; email.utils leaves "-0000" naive
        return None
    return max(0.0, when.timestamp() - (time.time() if now_s is None else now_s))
