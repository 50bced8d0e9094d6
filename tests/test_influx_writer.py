"""The InfluxDB writer and its answers (decisions.md D16): the classification table, both dialects against
real servers (InfluxDB 1.6.7 for v1, VictoriaMetrics for v2), faults by hurting the real server, and the
answers 1.6.7 never gives (413, 422, 429/503 with Retry-After) from a small responder on loopback."""

from __future__ import annotations

import asyncio
import gzip
import http
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from urllib.parse import parse_qsl, urlsplit

import pytest

from gateway.localservers import free_port
from gateway.sinks.influx_http import (
    AnswerKind,
    Backoff,
    DeliveryReport,
    Dialect,
    InfluxTarget,
    InfluxWriter,
    WriteAnswer,
    classify,
    deliver,
)

pytestmark = pytest.mark.timeout(30)

A = AnswerKind
NOW_S = 1_764_000_000.0  # a fixed "now" for HTTP-date Retry-After


# --- helpers --------------------------------------------------------------------------------------


def run(coro: Awaitable, timeout_s: float = 20):
    async def bounded():
        async with asyncio.timeout(timeout_s):
            return await coro

    return asyncio.run(bounded())


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(0.01)


def fast_backoff() -> Backoff:
    return Backoff(0.01, 0.1, rng=random.Random(1))


class Recorder:
    """on_health events and the delays deliver asked to sleep, without sleeping."""

    def __init__(self) -> None:
        self.health: list[tuple[bool, str]] = []
        self.sleeps: list[float] = []

    def on_health(self, ok: bool, reason: str) -> None:
        self.health.append((ok, reason))

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def lines_for(n: int, *, measurement: str = "m", ts0: int = 1_732_521_600_123_456_789) -> list[bytes]:
    return [f"{measurement},site=s{i % 3} v={i}i,x={i / 4} {ts0 + i}".encode() for i in range(n)]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes  # after gzip, if it was sent gzipped

    @property
    def lines(self) -> list[bytes]:
        return self.body.split(b"\n")


Reply = tuple[int, dict[str, str], bytes]


class Responder:
    """A scripted HTTP/1.1 server on loopback that records every request (D16: InfluxDB 1.6.7 never sends
    413 on its own, 422, 429/503 or Retry-After)."""

    def __init__(self, script: Callable[[Request], Reply | Awaitable[Reply]]) -> None:
        self.script = script
        self.requests: list[Request] = []
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Responder:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                first, *rest = head.decode("latin-1").split("\r\n")
                method, target, _ = first.split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in rest if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                url = urlsplit(target)
                request = Request(method, url.path, dict(parse_qsl(url.query)), headers, body)
                self.requests.append(request)
                reply = self.script(request)
                status, reply_headers, reply_body = await reply if asyncio.iscoroutine(reply) else reply
                out = f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\n"
                for k, v in {**reply_headers, "Content-Length": str(len(reply_body))}.items():
                    out += f"{k}: {v}\r\n"
                writer.write(out.encode("latin-1") + b"\r\n" + reply_body)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            writer.close()


def v1_target(url: str, db: str = "sdgw", **kw) -> InfluxTarget:
    return InfluxTarget("test", url, Dialect.V1, database=db, **kw)


# --- classify -------------------------------------------------------------------------------------

_DATE_IN_5S = formatdate(NOW_S + 5, usegmt=True)
_DATE_PAST = formatdate(NOW_S - 60, usegmt=True)
_TYPE_CONFLICT = (
    '{"error":"partial write: field type conflict: input field \\"v\\" on measurement \\"m\\" is type float, '
    'already exists as type integer dropped=3"}'
)
_PARTIAL_MSG = (
    'partial write: field type conflict: input field "v" on measurement "m" is type float, '
    "already exists as type integer dropped=3"
)

CLASSIFY = [
    # status, headers, body, kind, message, retry_after_s
    (204, {}, "", A.ACCEPTED, "", None),
    (200, {}, "{}", A.ACCEPTED, "", None),
    (400, {}, _TYPE_CONFLICT, A.REJECTED, _PARTIAL_MSG, None),
    (400, {}, '{"error":"field type conflict"}', A.REJECTED, "field type conflict", None),
    (
        400,
        {},
        '{"error":"unable to parse \'m\': missing fields"}',
        A.REJECTED,
        "unable to parse 'm': missing fields",
        None,
    ),
    (
        400,
        {},
        '{"error":"partial write: points beyond retention policy dropped=1"}',
        A.REJECTED,
        "partial write: points beyond retention policy dropped=1",
        None,
    ),
    (
        400,
        {},
        '{"code":"invalid","message":"unable to parse \'x\': invalid field format"}',
        A.REJECTED,
        "unable to parse 'x': invalid field format",
        None,
    ),
    (
        400,
        {},
        '{"error":"partial write of line protocol occurred","data":[{"original_line":"x","line_number":2,'
        '"error_message":"No fields were provided"}]}',
        A.REJECTED,
        "partial write of line protocol occurred; line 2: No fields were provided",
        None,
    ),
    (400, {}, '{"error":"database is required"}', A.UNHEALTHY, "database is required", None),
    (401, {}, '{"error":"authorization failed"}', A.UNHEALTHY, "authorization failed", None),
    (403, {}, "", A.UNHEALTHY, "", None),
    (404, {}, '{"error":"database not found: \\"x\\""}', A.UNHEALTHY, 'database not found: "x"', None),
    (
        404,
        {},
        '{"code":"not found","message":"bucket \\"b\\" not found"}',
        A.UNHEALTHY,
        'bucket "b" not found',
        None,
    ),
    (405, {}, "", A.UNHEALTHY, "", None),
    (301, {"Location": "https://x/"}, "", A.UNHEALTHY, "", None),
    (413, {}, '{"error":"Request Entity Too Large"}', A.TOO_LARGE, "Request Entity Too Large", None),
    (
        422,
        {},
        '{"code":"unprocessable entity","message":"failure writing points"}',
        A.REJECTED,
        "failure writing points",
        None,
    ),
    (429, {"Retry-After": "7"}, "", A.RETRY_LATER, "", 7.0),
    (429, {"retry-after": " 1.5 "}, "", A.RETRY_LATER, "", 1.5),
    (429, {}, "slow down", A.RETRY_LATER, "slow down", None),
    (503, {"Retry-After": _DATE_IN_5S}, "", A.RETRY_LATER, "", 5.0),
    (503, {"Retry-After": _DATE_PAST}, "", A.RETRY_LATER, "", 0.0),
    (503, {"Retry-After": "soon"}, "", A.RETRY_LATER, "", None),
    (503, {"Retry-After": "-3"}, "", A.RETRY_LATER, "", 0.0),
    (500, {}, '{"error":"timeout"}', A.UNHEALTHY, "timeout", None),
    (
        500,
        {},
        '{"error":"engine: cache maximum memory size exceeded"}',
        A.UNHEALTHY,
        "engine: cache maximum memory size exceeded",
        None,
    ),
    (
        500,
        {},
        '{"error":"retention policy not found: rp"}',
        A.UNHEALTHY,
        "retention policy not found: rp",
        None,
    ),
    (500, {"Retry-After": "3"}, "", A.UNHEALTHY, "", None),
    (502, {}, "<html>bad gateway</html>", A.UNHEALTHY, "<html>bad gateway</html>", None),
    (504, {}, "", A.UNHEALTHY, "", None),
    (400, {"X-Influxdb-Error": "unable to parse 'x'"}, "", A.REJECTED, "unable to parse 'x'", None),
    (400, {}, "{not json: unable to parse", A.REJECTED, "{not json: unable to parse", None),
    (
        400,
        {},
        '{"error":"unable to parse \'' + "x" * 5000 + "'\"}",
        A.REJECTED,
        "unable to parse '" + "x" * 1983,
        None,
    ),
]


@pytest.mark.parametrize(("status", "headers", "body", "kind", "message", "retry_after_s"), CLASSIFY)
def test_classify_answers(status, headers, body, kind, message, retry_after_s):
    """Every class of answer gets its meaning here and only here; no answer is a data error by default."""
    assert classify(status, headers, body, now_s=NOW_S) == WriteAnswer(kind, status, message, retry_after_s)


# --- target, backoff ------------------------------------------------------------------------------


def test_influx_target_repr_hides_secrets():
    target = v1_target("http://127.0.0.1:1", username="u", password="s3cret-pw")
    token_target = InfluxTarget("t", "http://127.0.0.1:1", Dialect.V2, bucket="b", token="s3cret-tok")
    assert "s3cret" not in repr(target) and "password='***'" in repr(target)
    assert "s3cret" not in repr(token_target) and "token='***'" in repr(token_target)
    assert "s3cret" not in repr(InfluxWriter(token_target))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "http://u:s3cret@127.0.0.1:1", "dialect": Dialect.V1, "database": "d"},
        {"url": "ftp://127.0.0.1", "dialect": Dialect.V1, "database": "d"},
        {"url": "http://127.0.0.1:99999", "dialect": Dialect.V1, "database": "d"},
        {"url": "http://127.0.0.1:1?db=x", "dialect": Dialect.V1, "database": "d"},
        {"url": "http://127.0.0.1:1", "dialect": Dialect.V1},
        {"url": "http://127.0.0.1:1", "dialect": Dialect.V2, "org": "o"},
        {
            "url": "http://127.0.0.1:1",
            "dialect": Dialect.V2,
            "bucket": "b",
            "username": "u",
            "password": "s3cret",
        },
        {"url": "http://127.0.0.1:1", "dialect": Dialect.V1, "database": "d", "password": "s3cret"},
        {
            "url": "http://127.0.0.1:1",
            "dialect": Dialect.V1,
            "database": "d",
            "username": "u",
            "password": "s3cret",
            "token": "s3cret",
        },
        {"url": "http://127.0.0.1:1", "dialect": Dialect.V1, "database": "d", "timeout_s": 0},
    ],
)
def test_influx_target_incomplete_raises_without_secret(kwargs):
    with pytest.raises(ValueError) as info:
        InfluxTarget("t", **kwargs)
    assert "s3cret" not in str(info.value) and "'t'" in str(info.value)


class _Ceiling(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_doubles_to_cap_and_resets():
    """Full jitter draws from [0, min(cap, initial * 2**n)]; reset starts over."""
    b = Backoff(0.2, 1.0, rng=_Ceiling())
    assert [b.next_delay_s() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next_delay_s() == 0.2
    jittered = Backoff(0.2, 30.0, rng=random.Random(7))
    delays = [jittered.next_delay_s() for _ in range(100)]
    assert all(0 <= d <= 30 for d in delays) and len(set(delays)) == 100


# --- v1 against the real InfluxDB 1.6.7 -------------------------------------------------------------


def _count(server, db: str, what: str = 'SELECT count(v) FROM "m"') -> int:
    rows = server.rows(what, db)
    return rows[0]["count"] if rows else 0


@pytest.mark.integration
@pytest.mark.parametrize("use_gzip", [True, False], ids=["gzip", "plain"])
def test_write_v1_batch_read_back_ns(influxdb, use_gzip):
    """A 5,000-line batch is written in one request; every nanosecond timestamp comes back exactly."""
    lines = lines_for(5000)

    async def main():
        async with InfluxWriter(v1_target(influxdb.url, influxdb.db, gzip=use_gzip)) as writer:
            return await writer.write(lines)

    assert run(main()) == WriteAnswer(A.ACCEPTED, 204, "")
    rows = influxdb.rows('SELECT v, x FROM "m"', influxdb.db)
    assert [(r["time"], r["v"], r["x"]) for r in rows] == [
        (1_732_521_600_123_456_789 + i, i, i / 4) for i in range(5000)
    ]


@pytest.mark.integration
def test_write_v1_retention_policy(influxdb):
    """The `rp` parameter puts the points into that retention policy, not the default one."""
    influxdb.query(f'CREATE RETENTION POLICY "short" ON "{influxdb.db}" DURATION 2d REPLICATION 1')
    ts0 = time.time_ns()

    async def main():
        async with InfluxWriter(v1_target(influxdb.url, influxdb.db, retention_policy="short")) as writer:
            return await deliver(writer, lines_for(10, ts0=ts0))

    assert run(main()) == DeliveryReport(accepted=10, rejected=[])
    assert _count(influxdb, influxdb.db, f'SELECT count(v) FROM "{influxdb.db}"."short"."m"') == 10
    assert _count(influxdb, influxdb.db, f'SELECT count(v) FROM "{influxdb.db}"."autogen"."m"') == 0


@pytest.mark.integration
def test_deliver_field_type_conflict_isolates_bad_lines(influxdb):
    """100 lines, 3 with a float where the field is an integer: exactly those 3 are rejected, with the
    server's message; the other 97 are stored."""
    bad = {17, 50, 99}
    lines = [
        f"m,site=s{i % 3} v={i}{'.5' if i in bad else 'i'} {1_732_521_600_000_000_000 + i}".encode() for i in range(100)
    ]

    async def main():
        async with InfluxWriter(v1_target(influxdb.url, influxdb.db)) as writer:
            return await deliver(writer, lines, backoff=fast_backoff())

    report = run(main())
    assert report.accepted == 97
    assert [i for i, _ in report.rejected] == sorted(bad)
    assert all("field type conflict" in message for _, message in report.rejected)
    assert _count(influxdb, influxdb.db) == 97


@pytest.mark.integration
def test_deliver_database_missing_unhealthy_until_created(influxdb):
    """A missing database is the server's state, not the data's: unhealthy, then delivered once it exists."""
    db = influxdb.db + "_late"
    influxdb.query(f'DROP DATABASE "{db}"')
    rec = Recorder()

    async def main():
        async with InfluxWriter(v1_target(influxdb.url, db)) as writer:
            task = asyncio.create_task(deliver(writer, lines_for(20), backoff=fast_backoff(), on_health=rec.on_health))
            await wait_until(lambda: rec.health, what="unhealthy reported")
            await asyncio.to_thread(influxdb.create_database, db)
            return await task

    try:
        assert run(main()) == DeliveryReport(accepted=20, rejected=[])
        assert rec.health == [(False, f'HTTP 404: database not found: "{db}"'), (True, "")]
        assert _count(influxdb, db) == 20
    finally:
        influxdb.query(f'DROP DATABASE "{db}"')


@pytest.mark.integration
def test_deliver_influxd_stopped_then_restarted(own_influxdb):
    """Connection refused is unhealthy, reported once; the batch is delivered after the restart."""
    rec = Recorder()

    async def main():
        async with InfluxWriter(v1_target(own_influxdb.url, own_influxdb.db, timeout_s=2)) as writer:
            first = await deliver(writer, lines_for(10), on_health=rec.on_health)
            await asyncio.to_thread(own_influxdb.stop)
            task = asyncio.create_task(
                deliver(
                    writer,
                    lines_for(10, ts0=2_000_000_000_000_000_000),
                    backoff=fast_backoff(),
                    on_health=rec.on_health,
                )
            )
            await wait_until(lambda: rec.health, what="unhealthy reported")
            await asyncio.to_thread(own_influxdb.start)
            return first, await task

    first, second = run(main())
    assert first == second == DeliveryReport(accepted=10, rejected=[])
    assert len(rec.health) == 2 and rec.health[0][0] is False and rec.health[1] == (True, "")
    assert rec.health[0][1].split(":")[0] in {"ConnectError", "ReadError", "RemoteProtocolError"}
    assert _count(own_influxdb, own_influxdb.db) == 20


# --- v2 against VictoriaMetrics --------------------------------------------------------------------


@pytest.mark.integration
def test_write_v2_victoria_resend_collapses(victoria):
    """The v2 path writes for real; a re-sent batch leaves one sample per series and timestamp."""
    ts0 = (time.time_ns() // 1_000_000 - 60_000) * 1_000_000  # VictoriaMetrics keeps milliseconds
    lines = [f"vmt,site=s{i % 2} v={i}i {ts0 + (i // 2) * 1_000_000}".encode() for i in range(6)]
    target = InfluxTarget("vm", victoria.url, Dialect.V2, org="o", bucket="b", token="t0k")

    async def main():
        async with InfluxWriter(target) as writer:
            return [await deliver(writer, lines) for _ in range(2)]

    assert run(main()) == [DeliveryReport(accepted=6, rejected=[])] * 2

    deadline = time.monotonic() + 15
    while True:
        series = victoria.export('{__name__="vmt_v"}')
        if sum(len(s["timestamps"]) for s in series) >= 6 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    got = {s["metric"]["site"]: list(zip(s["timestamps"], s["values"], strict=True)) for s in series}
    ms0 = ts0 // 1_000_000
    assert got == {
        "s0": [(ms0, 0), (ms0 + 1, 2), (ms0 + 2, 4)],
        "s1": [(ms0, 1), (ms0 + 1, 3), (ms0 + 2, 5)],
    }


# --- request shape, and the answers 1.6.7 never gives (responder) ------------------------------------


def test_writer_v1_request_shape():
    """v1: /write with db, rp, precision=ns; basic auth in the header, never u/p in the URL; gzip body."""

    async def main():
        async with Responder(lambda r: (204, {}, b"")) as srv:
            target = v1_target(srv.url + "/", "d b", retention_policy="r", username="u", password="pw")
            async with InfluxWriter(target) as writer:
                assert await writer.write([b"m f=1i 1", b"m f=2i 2"]) == WriteAnswer(A.ACCEPTED, 204, "")
            return srv.requests

    [req] = run(main())
    assert (req.method, req.path, req.query) == (
        "POST",
        "/write",
        {"db": "d b", "rp": "r", "precision": "ns"},
    )
    assert req.headers["authorization"] == "Basic dTpwdw=="
    assert req.headers["content-encoding"] == "gzip"
    assert req.body == b"m f=1i 1\nm f=2i 2"


def test_writer_v2_request_shape():
    """v2: /api/v2/write with org, bucket, precision=ns and a token; no gzip when turned off."""

    async def main():
        async with Responder(lambda r: (204, {}, b"")) as srv:
            target = InfluxTarget("t", srv.url + "/base", Dialect.V2, org="o", bucket="b", token="tk", gzip=False)
            async with InfluxWriter(target) as writer:
                await writer.write([b"m f=1i 1"])
            return srv.requests

    [req] = run(main())
    assert (req.path, req.query) == ("/base/api/v2/write", {"org": "o", "bucket": "b", "precision": "ns"})
    assert req.headers["authorization"] == "Token tk"
    assert "content-encoding" not in req.headers
    assert req.body == b"m f=1i 1"


def test_writer_v1_token_for_2x_and_3x_compatibility():
    async def main():
        async with Responder(lambda r: (204, {}, b"")) as srv:
            async with InfluxWriter(v1_target(srv.url, "d", token="tk")) as writer:
                await writer.write([b"m f=1i 1"])
            return srv.requests

    [req] = run(main())
    assert req.headers["authorization"] == "Token tk" and req.query == {"db": "d", "precision": "ns"}


def test_deliver_too_large_halves_until_accepted():
    """413 halves the batch; every line arrives in exactly one accepted request."""
    accepted: list[bytes] = []

    def script(r: Request) -> Reply:
        if len(r.lines) > 25:
            return 413, {}, b'{"error":"Request Entity Too Large"}'
        accepted.extend(r.lines)
        return 204, {}, b""

    lines = lines_for(100)

    async def main():
        async with Responder(script) as srv, InfluxWriter(v1_target(srv.url)) as writer:
            return await deliver(writer, lines), [len(r.lines) for r in srv.requests]

    report, sizes = run(main())
    assert report == DeliveryReport(accepted=100, rejected=[])
    assert sizes == [100, 50, 25, 25, 50, 25, 25]
    assert accepted == lines


def test_deliver_single_line_too_large_rejected():
    """A line the server refuses on its own as too large can never be written: rejected, not retried."""

    def script(r: Request) -> Reply:
        if any(b"huge" in line for line in r.lines):
            return 413, {}, b'{"error":"Request Entity Too Large"}'
        return 204, {}, b""

    lines = [b"m f=1i 1", b'm s="huge" 2', b"m f=3i 3"]

    async def main():
        async with Responder(script) as srv, InfluxWriter(v1_target(srv.url)) as writer:
            return await deliver(writer, lines)

    report = run(main())
    assert report.accepted == 2
    assert report.rejected == [(1, "line too large for the server (HTTP 413): Request Entity Too Large")]


def test_deliver_422_isolates_bad_lines():
    """422 (InfluxDB 2.x: unprocessable) splits until each bad line stands alone, with its message."""
    written: list[bytes] = []

    def script(r: Request) -> Reply:
        if any(b"bad" in line for line in r.lines):
            return 422, {}, b'{"code":"unprocessable entity","message":"bad line"}'
        written.extend(r.lines)
        return 204, {}, b""

    lines = [b"m f=%di %d" % (i, i) if i not in (3, 4, 30) else b"bad" for i in range(37)]

    async def main():
        async with Responder(script) as srv, InfluxWriter(v1_target(srv.url)) as writer:
            return await deliver(writer, lines)

    report = run(main())
    assert report == DeliveryReport(accepted=34, rejected=[(3, "bad line"), (4, "bad line"), (30, "bad line")])
    assert sorted(written) == sorted(line for line in lines if line != b"bad")


@pytest.mark.parametrize(
    ("status", "retry_after", "low", "high"),
    [(429, "3", 3.0, 3.0), (503, "http-date in 5 s", 3.9, 5.0)],
    ids=["429-seconds", "503-http-date"],
)
def test_deliver_retry_after_honoured(status, retry_after, low, high):
    """429/503 wait as long as Retry-After says (seconds or HTTP-date), then resend; no health alarm."""
    rec = Recorder()

    def script(r: Request) -> Reply:
        if len(rec.sleeps) < 2:
            value = formatdate(time.time() + 5, usegmt=True) if retry_after.startswith("http") else retry_after
            return status, {"Retry-After": value}, b""
        return 204, {}, b""

    async def main():
        async with Responder(script) as srv, InfluxWriter(v1_target(srv.url)) as writer:
            report = await deliver(writer, lines_for(5), on_health=rec.on_health, sleep=rec.sleep)
            return report, len(srv.requests)

    report, requests = run(main())
    assert report == DeliveryReport(accepted=5, rejected=[]) and requests == 3
    assert len(rec.sleeps) == 2 and all(low <= s <= high for s in rec.sleeps), rec.sleeps
    assert rec.health == []


def test_deliver_retry_later_without_header_backs_off_and_caps_wait():
    """Without Retry-After the backoff decides; a huge Retry-After is cut to max_wait_s."""
    rec = Recorder()
    answers = iter([(429, {}, b""), (429, {}, b""), (503, {"Retry-After": "86400"}, b"")])

    async def main():
        async with (
            Responder(lambda r: next(answers, (204, {}, b""))) as srv,
            InfluxWriter(v1_target(srv.url)) as w,
        ):
            return await deliver(
                w, lines_for(1), backoff=Backoff(0.2, 30, rng=_Ceiling()), sleep=rec.sleep, max_wait_s=60
            )

    assert run(main()) == DeliveryReport(accepted=1, rejected=[])
    assert rec.sleeps == [0.2, 0.4, 60]


def test_deliver_unhealthy_reported_once_per_change():
    """Three 500s and a 401, then success: one (False, first reason), one (True, ""), growing waits."""
    rec = Recorder()
    answers = iter([(500, {}, b'{"error":"timeout"}')] * 3 + [(401, {}, b'{"error":"authorization failed"}')])

    async def main():
        async with (
            Responder(lambda r: next(answers, (204, {}, b""))) as srv,
            InfluxWriter(v1_target(srv.url)) as w,
        ):
            return await deliver(
                w,
                lines_for(3),
                backoff=Backoff(0.2, 30, rng=_Ceiling()),
                sleep=rec.sleep,
                on_health=rec.on_health,
            )

    assert run(main()) == DeliveryReport(accepted=3, rejected=[])
    assert rec.health == [(False, "HTTP 500: timeout"), (True, "")]
    assert rec.sleeps == [0.2, 0.4, 0.8, 1.6]


def test_writer_timeout_unhealthy():
    """No answer within timeout_s is unhealthy, with the reason; nothing raises."""

    async def slow(r: Request) -> Reply:
        await asyncio.sleep(2)
        return 204, {}, b""

    async def main():
        async with Responder(slow) as srv, InfluxWriter(v1_target(srv.url, timeout_s=0.2)) as writer:
            return await writer.write([b"m f=1i 1"])

    answer = run(main())
    assert (answer.kind, answer.status) == (A.UNHEALTHY, None)
    assert answer.message.startswith("no answer within 0.2 s")


def test_writer_connection_refused_unhealthy_without_secrets():
    target = v1_target(f"http://127.0.0.1:{free_port()}", username="u", password="s3cret", timeout_s=2)

    async def main():
        async with InfluxWriter(target) as writer:
            return await writer.write([b"m f=1i 1"])

    answer = run(main())
    assert (answer.kind, answer.status) == (A.UNHEALTHY, None)
    assert answer.message.startswith("ConnectError") and "s3cret" not in answer.message


def test_deliver_cancelled_while_unhealthy_keeps_state():
    """deliver may wait forever for a dead server; cancelling it stops it, and the next call does not
    report the same outage again."""
    rec = Recorder()

    async def main():
        async with InfluxWriter(v1_target(f"http://127.0.0.1:{free_port()}", timeout_s=1)) as writer:
            for _ in range(2):
                task = asyncio.create_task(
                    deliver(writer, lines_for(1), backoff=fast_backoff(), on_health=rec.on_health)
                )
                await wait_until(lambda: not writer.is_healthy)
                await asyncio.sleep(0.05)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

    run(main())
    assert len(rec.health) == 1 and rec.health[0][0] is False
