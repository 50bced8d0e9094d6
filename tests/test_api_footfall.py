"""The merchant footfall API (/v1/sites, /v1/footfall, /v1/occupancy) on a real uvicorn over the
real InfluxDB 1.6.7: bucket sums, local days in Asia/Shanghai and across Europe/Berlin's DST changes,
zeros, CSV, scope isolation, ETag/304, rate limit and the problems for bad input."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from vivotek_counter import Street, publish_all

from gateway.keys import KeyStore
from gateway.localservers import free_port
from tests.footfall_support import assert_problem, footfall_line, running_api, write_lines
from tests.harness import GatewayProcess, gateway_config, wait_for

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def api(tmp_path, influxdb):
    with running_api(tmp_path, influxdb) as api:
        yield api


def local(zone: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=zone)


def test_footfall_shanghai_days_split_at_local_midnight(api, influxdb):
    """A point at 23:59:59 local counts on its day, one at 00:00:00 on the next: 1d buckets are
    Shanghai calendar days (UTC 16:00 to 16:00), days without data are zeros."""
    write_lines(
        influxdb,
        [
            footfall_line("sh-1", local(SHANGHAI, 2026, 1, 10, 0, 0, 0), 5, 1),
            footfall_line("sh-1", local(SHANGHAI, 2026, 1, 10, 23, 59, 59), 7, 2),
            footfall_line("sh-1", local(SHANGHAI, 2026, 1, 11, 0, 0, 0), 11, 3, line="L2"),
            footfall_line("sh-1", local(SHANGHAI, 2026, 1, 12, 23, 59, 59), 13, 4, device="cam-2"),
            footfall_line("other-1", local(SHANGHAI, 2026, 1, 10, 12, 0, 0), 1000, 1000),
        ],
    )
    r = api.get(
        "/v1/footfall",
        api.merchant_a,
        params={"site": "sh-1", "interval": "1d", "from": "2026-01-09", "to": "2026-01-13"},
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["timezone"] == "Asia/Shanghai" and doc["interval"] == "1d"
    assert doc["from"] == "2026-01-09T00:00:00+08:00" and doc["to"] == "2026-01-14T00:00:00+08:00"
    assert [(b["start"][:10], b["in"], b["out"]) for b in doc["buckets"]] == [
        ("2026-01-09", 0, 0),
        ("2026-01-10", 12, 3),
        ("2026-01-11", 11, 3),
        ("2026-01-12", 13, 4),
        ("2026-01-13", 0, 0),
    ]
    assert doc["totals"] == {"in": 36, "out": 10}
    r = api.get(
        "/v1/footfall",
        api.merchant_a,
        params={
            "site": "sh-1",
            "interval": "1h",
            "from": "2026-01-10T23:00:00+08:00",
            "to": "2026-01-11T01:00:00+08:00",
        },
    )
    assert [(b["start"], b["in"]) for b in r.json()["buckets"]] == [
        ("2026-01-10T23:00:00+08:00", 7),
        ("2026-01-11T00:00:00+08:00", 11),
    ]


def _every_quarter(zone: ZoneInfo, day_start: datetime, day_end: datetime) -> list[tuple[datetime, int, int]]:
    """One point per UTC quarter hour over [day_start, day_end) with distinct values."""
    out, t, n = [], day_start, 0
    while t < day_end:
        out.append((t, n % 7 + 1, n % 3))
        t += timedelta(minutes=15)
        n += 1
    return out


@pytest.mark.parametrize(
    ("day", "hours", "repeated_local_hour"),
    [("2026-03-29", 23, None), ("2026-10-25", 25, "02:00")],
)
def test_footfall_berlin_dst_days_are_23_and_25_hours(api, influxdb, day, hours, repeated_local_hour):
    """Across Berlin's spring and autumn changes: the 1d bucket is the local day (23 h / 25 h) and
    holds every point of it; 15m buckets are the day's 92 / 100 quarter hours, each holding exactly
    its point; 1h buckets are the local clock hours (the repeated 02:00 twice, one per offset), and
    the points of the neighbouring days do not leak in."""
    y, m, d = (int(x) for x in day.split("-"))
    start = local(BERLIN, y, m, d).astimezone(UTC)
    end = (local(BERLIN, y, m, d) + timedelta(days=1)).replace(tzinfo=BERLIN).astimezone(UTC)
    assert end - start == timedelta(hours=hours)
    points = _every_quarter(BERLIN, start - timedelta(hours=3), end + timedelta(hours=3))
    write_lines(influxdb, [footfall_line("be-1", t, i, o) for t, i, o in points])
    inside = [(t, i, o) for t, i, o in points if start <= t < end]

    r = api.get("/v1/footfall", api.merchant_a, params={"site": "be-1", "interval": "1d", "from": day, "to": day})
    doc = r.json()
    assert len(doc["buckets"]) == 1
    bucket = doc["buckets"][0]
    assert datetime.fromisoformat(bucket["end"]) - datetime.fromisoformat(bucket["start"]) == timedelta(hours=hours)
    assert (bucket["in"], bucket["out"]) == (sum(i for _, i, _ in inside), sum(o for _, _, o in inside))

    r = api.get("/v1/footfall", api.merchant_a, params={"site": "be-1", "interval": "15m", "from": day, "to": day})
    buckets = r.json()["buckets"]
    assert len(buckets) == hours * 4
    assert [(datetime.fromisoformat(b["start"]), b["in"], b["out"]) for b in buckets] == inside

    r = api.get("/v1/footfall", api.merchant_a, params={"site": "be-1", "interval": "1h", "from": day, "to": day})
    buckets = r.json()["buckets"]
    assert len(buckets) == hours
    starts = [b["start"][11:16] for b in buckets]
    if repeated_local_hour:
        assert starts.count(repeated_local_hour) == 2
    else:
        assert "02:00" not in starts
    for b in buckets:
        s, e = datetime.fromisoformat(b["start"]), datetime.fromisoformat(b["end"])
        assert e - s == timedelta(hours=1)
        assert b["in"] == sum(i for t, i, _ in inside if s <= t < e)
    assert sum(b["in"] for b in buckets) == sum(i for _, i, _ in inside)


def test_footfall_15m_across_the_spring_change_instant(api, influxdb):
    """15m buckets over the hour the clocks skip: local 01:45+01:00 is followed by 03:00+02:00,
    and a point at each side lands in its own bucket."""
    before = datetime(2026, 3, 29, 0, 45, tzinfo=UTC)  # 01:45 CET
    after = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    write_lines(influxdb, [footfall_line("be-1", before, 3, 0), footfall_line("be-1", after, 4, 1)])
    r = api.get(
        "/v1/footfall",
        api.merchant_a,
        params={
            "site": "be-1",
            "interval": "15m",
            "from": "2026-03-29T01:30:00+01:00",
            "to": "2026-03-29T03:30:00+02:00",
        },
    )
    assert [(b["start"], b["in"], b["out"]) for b in r.json()["buckets"]] == [
        ("2026-03-29T01:30:00+01:00", 0, 0),
        ("2026-03-29T01:45:00+01:00", 3, 0),
        ("2026-03-29T03:00:00+02:00", 4, 1),
        ("2026-03-29T03:15:00+02:00", 0, 0),
    ]


def test_footfall_a_month_of_days_sums_what_was_written(api, influxdb):
    """Thirty Shanghai days (one InfluxQL grain per day) of irregularly timed points from three
    devices: each day's bucket equals the sum of that day's points."""
    lines, expected = [], {}
    start = local(SHANGHAI, 2026, 2, 1)
    for n in range(30 * 24):
        t = start + timedelta(minutes=60 * n + (n * 37) % 60)
        i, o = n % 11, n % 5
        lines.append(footfall_line("sh-1", t, i, o, device=f"cam-{n % 3}"))
        key = t.astimezone(SHANGHAI).date().isoformat()
        a, b = expected.get(key, (0, 0))
        expected[key] = (a + i, b + o)
    write_lines(influxdb, lines)
    r = api.get(
        "/v1/footfall",
        api.merchant_a,
        params={"site": "sh-1", "interval": "1d", "from": "2026-02-01", "to": "2026-03-02"},
    )
    got = {b["start"][:10]: (b["in"], b["out"]) for b in r.json()["buckets"]}
    assert got == expected


def test_footfall_partial_range_is_widened_to_whole_buckets(api, influxdb):
    write_lines(influxdb, [footfall_line("sh-1", local(SHANGHAI, 2026, 1, 10, 10, 5), 2, 1)])
    r = api.get(
        "/v1/footfall",
        api.merchant_a,
        params={"site": "sh-1", "interval": "1h", "from": "2026-01-10T10:20:00+08:00", "to": "2026-01-10T02:40:00Z"},
    )
    doc = r.json()
    assert (doc["from"], doc["to"]) == ("2026-01-10T10:00:00+08:00", "2026-01-10T11:00:00+08:00")
    assert doc["buckets"] == [
        {"start": "2026-01-10T10:00:00+08:00", "end": "2026-01-10T11:00:00+08:00", "in": 2, "out": 1}
    ]


def test_footfall_csv_has_the_json_buckets(api, influxdb):
    write_lines(influxdb, [footfall_line("sh-1", local(SHANGHAI, 2026, 1, 10, 1), 4, 3)])
    params = {"site": "sh-1", "interval": "1d", "from": "2026-01-10", "to": "2026-01-11"}
    as_json = api.get("/v1/footfall", api.merchant_a, params=params).json()
    r = api.get("/v1/footfall", api.merchant_a, params={**params, "format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.text.startswith("start,end,in,out\r\n")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [{k: (int(v) if k in ("in", "out") else v) for k, v in row.items()} for row in rows] == as_json["buckets"]


def test_footfall_etag_and_304(api, influxdb):
    """Same data, same bytes, same strong ETag; If-None-Match → 304 without a body; new data → new ETag."""
    write_lines(influxdb, [footfall_line("sh-1", local(SHANGHAI, 2026, 1, 10, 1), 4, 3)])
    params = {"site": "sh-1", "interval": "1h", "from": "2026-01-10", "to": "2026-01-10"}
    r = api.get("/v1/footfall", api.merchant_a, params=params)
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert r.headers["cache-control"] == "private, max-age=300" and r.headers["vary"] == "Authorization"
    assert api.get("/v1/footfall", api.merchant_a, params=params).headers["etag"] == etag
    r = api.get("/v1/footfall", api.merchant_a, params=params, headers={"If-None-Match": f'"x", W/{etag}'})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    r = api.get("/v1/footfall", api.merchant_a, params={**params, "interval": "15m"}, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["cache-control"] == "private, max-age=60"
    write_lines(influxdb, [footfall_line("sh-1", local(SHANGHAI, 2026, 1, 10, 2), 1, 0)])
    r = api.get("/v1/footfall", api.merchant_a, params=params, headers={"If-None-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] != etag
    for path, query in (("/v1/sites", {}), ("/v1/occupancy", {"site": "sh-1"})):
        first = api.get(path, api.merchant_a, params=query)
        again = api.get(path, api.merchant_a, params=query, headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304, path


@pytest.mark.parametrize(
    ("params", "name", "words"),
    [
        ({"interval": "5m"}, "interval", "15m"),
        ({"interval": "1H"}, "interval", "15m"),
        ({"format": "xml"}, "format", "json"),
        ({"from": "2026-01-12", "to": "2026-01-10"}, "from", "before"),
        ({"from": "2026-01-10T10:00:00Z", "to": "2026-01-10T10:00:00Z"}, "from", "before"),
        ({"interval": "15m", "from": "2026-01-01", "to": "2026-02-01"}, "to", "31 days"),
        ({"interval": "1h", "from": "2026-01-01", "to": "2026-04-05"}, "to", "92 days"),
        ({"interval": "1d", "from": "2024-01-01", "to": "2025-06-01"}, "to", "366 days"),
        ({"from": "2026-01-10T10:00:00"}, "from", "pattern"),
        ({"from": "10/01/2026"}, "from", "pattern"),
        ({"from": "2026-02-30"}, "from", "calendar"),
        ({"to": "2026-01-10T25:00:00Z"}, "to", "date and time"),
        ({"from": "1999-12-31", "to": "2000-01-02"}, "from", "2000"),
    ],
)
def test_footfall_bad_input_is_a_422_problem_naming_the_parameter(api, params, name, words):
    r = api.get("/v1/footfall", api.merchant_a, params={"site": "sh-1", **params})
    body = assert_problem(r, 422)
    assert body["type"] == "urn:sdgw:problem:invalid-request"
    assert [e["name"] for e in body["errors"]] == [name], body
    assert words in body["detail"], body["detail"]


def test_footfall_repeated_and_unknown_parameters_are_refused(api):
    for query in (
        "site=sh-1&site=sh-1",
        "site=sh-1&interval=1h&interval=1d",
        "site=sh-1&Interval=1d",
        "site=sh-1&foo=1",
    ):
        body = assert_problem(api.get(f"/v1/footfall?{query}", api.merchant_a), 422)
        assert body["errors"][0]["name"] in ("site", "interval", "Interval", "foo")
    assert_problem(api.get("/v1/footfall", api.merchant_a), 422)  # site is required


def _every_request_form(site: str) -> list[str]:
    """Every route taking a site, with the site in every place and spelling a client could try."""
    forms = []
    for path in ("/v1/footfall", "/v1/occupancy"):
        forms += [
            f"{path}?site={site}",
            f"{path}?site={site.upper()}",
            f"{path}?Site={site}",
            f"{path}?SITE={site}",
            f"{path}?site={site}&site=sh-1",
            f"{path}?site=sh-1&site={site}",
            f"{path}?site=sh-1&Site={site}",
            f"{path}?site={site}%00",
            f"{path}?site=%20{site}",
            f"{path}?site={site.replace('-', '%2D')}",
            f"{path}?site=sh-1,{site}",
            f"{path}?site[]={site}",
            f"{path}/{site}",
        ]
    forms += [
        f"/v1/footfall?site={site}&interval={iv}&format={fmt}" for iv in ("15m", "1h", "1d") for fmt in ("json", "csv")
    ]
    forms += [f"/v1/footfall?site={site}&from=2026-01-01&to=2026-01-02", f"/v1/sites?site={site}", f"/v1/sites/{site}"]
    return forms


@pytest.fixture
def unlimited_api(tmp_path, influxdb):
    extra = "rate_limit_per_s = 0\nmetrics_open_to_loopback = false"
    with running_api(tmp_path, influxdb, api_extra=extra) as api:
        yield api


def test_footfall_merchant_never_reads_another_merchants_site(unlimited_api, influxdb):
    """By every route and parameter form, another merchant's site answers exactly as a site that
    does not exist (same status, same bytes), its figures never appear, and the operator sees it."""
    api = unlimited_api
    write_lines(influxdb, [footfall_line("other-1", datetime.now(UTC) - timedelta(minutes=5), 777, 1)])
    doc = api.get("/openapi.json", None).json()
    routes = set(doc["paths"])
    assert {"/v1/sites", "/v1/footfall", "/v1/occupancy"} <= routes
    for other, missing in zip(_every_request_form("other-1"), _every_request_form("nope-9"), strict=True):
        got = api.get(other, api.merchant_a)
        alike = api.get(missing, api.merchant_a)
        assert got.status_code in (404, 422), (other, got.status_code, got.text)
        assert (got.status_code, got.content) == (alike.status_code, alike.content.replace(b"nope-9", b"other-1")), (
            other
        )
        assert b"777" not in got.content and b"other-1" not in got.content.replace(other.encode(), b""), other
    body = assert_problem(api.get("/v1/footfall?site=other-1", api.merchant_a), 404)
    assert body["detail"] == "no such site" and body["type"] == "about:blank"
    # every other route of the app refuses a merchant or knows nothing of sites
    for path, methods in doc["paths"].items():
        if "get" not in methods or path in (
            "/v1/footfall",
            "/v1/occupancy",
            "/v1/sites",
            "/v1/health",
            "/openapi.json",
        ):
            continue
        r = api.get(path.replace("{", "").replace("}", "") + "?site=other-1", api.merchant_a)
        assert r.status_code in (403, 404, 422) or path.startswith("/status") or path == "/metrics", (
            path,
            r.status_code,
        )
        assert b"777" not in r.content
    sites = api.get("/v1/sites", api.merchant_a).json()["sites"]
    assert sorted(s["id"] for s in sites) == ["be-1", "sh-1"]
    r = api.get("/v1/occupancy", api.operator, params={"site": "other-1"})
    assert r.status_code == 200 and r.json()["entries"] == 777
    assert sorted(s["id"] for s in api.get("/v1/sites", api.operator).json()["sites"]) == [
        "be-1",
        "gate-n",
        "other-1",
        "sh-1",
    ]


def test_sites_lists_kind_street_zone_hours(api):
    sites = {s["id"]: s for s in api.get("/v1/sites", api.operator).json()["sites"]}
    assert sites["sh-1"] == {
        "id": "sh-1",
        "name": "Tea House",
        "kind": "shop",
        "street": "s1",
        "merchant": "m-a",
        "timezone": "Asia/Shanghai",
        "hours": dict.fromkeys(("mon", "tue", "wed", "thu", "fri", "sat", "sun"), "10:00-22:00"),
        "closed_dates": [],
    }
    assert sites["be-1"]["timezone"] == "Europe/Berlin" and sites["be-1"]["street"] == "berlin-st"
    assert sites["gate-n"]["kind"] == "entrance" and sites["gate-n"]["hours"]["sun"] == "00:00-24:00"


def test_merchant_routes_need_a_key(api):
    for path in ("/v1/sites", "/v1/footfall?site=sh-1", "/v1/occupancy?site=sh-1"):
        assert assert_problem(api.get(path, None), 401)["reason"] == "missing"


def _hours_around(now_local: datetime) -> str:
    """Business hours that opened two hours ago and close in two (across midnight if need be)."""
    opens, closes = now_local - timedelta(hours=2), now_local + timedelta(hours=2)
    return f"{opens:%H:%M}-{closes:%H:%M}"


def test_occupancy_counts_since_the_business_day_opened_and_clamps(tmp_path, influxdb):
    """in − out from the opening to now: points before the opening do not count; more exits than
    entries show 0, never a negative crowd; `as_of` is the end of the latest counted report."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now_local = now.astimezone(BERLIN)
    sites = f"""
[[sites]]
id = "be-open"
merchant = "m-a"
timezone = "Europe/Berlin"
hours = "{_hours_around(now_local)}"

[[sites]]
id = "sh-1"
merchant = "m-a"

[[sites]]
id = "be-1"
merchant = "m-a"
timezone = "Europe/Berlin"
hours = "{_hours_around(now_local)}"

[[sites]]
id = "other-1"
merchant = "m-b"
"""
    opened = now - timedelta(hours=2)
    write_lines(
        influxdb,
        [
            footfall_line("be-open", opened - timedelta(minutes=15), 100, 0),  # before the opening
            footfall_line("be-open", opened, 10, 2),
            footfall_line("be-open", opened + timedelta(minutes=30), 5, 4, line="L2"),
            footfall_line("be-open", now - timedelta(minutes=20), 3, 1),
            footfall_line("be-1", opened + timedelta(minutes=5), 2, 9),
        ],
    )
    with running_api(tmp_path, influxdb, sites=sites) as api:
        api.ctx.keys.create("merchant", ["be-open"])
        r = api.get("/v1/occupancy", api.operator, params={"site": "be-open"})
        doc = r.json()
        assert (doc["entries"], doc["exits"], doc["occupancy"]) == (18, 7, 11)
        assert doc["open"] is True and doc["timezone"] == "Europe/Berlin"
        assert datetime.fromisoformat(doc["business_day"]["opens"]) == opened
        assert datetime.fromisoformat(doc["as_of"]) == now - timedelta(minutes=5)  # 20 min ago + 900 s
        assert r.headers["cache-control"] == "private, max-age=15"
        doc = api.get("/v1/occupancy", api.operator, params={"site": "be-1"}).json()
        assert (doc["entries"], doc["exits"], doc["occupancy"]) == (2, 9, 0)


def test_occupancy_of_a_closed_site_is_that_of_its_last_business_day(tmp_path, influxdb):
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    now_local = now.astimezone(SHANGHAI)
    opens, closes = now_local - timedelta(hours=3), now_local - timedelta(hours=1)
    sites = f"""
[[sites]]
id = "sh-1"
hours = "{opens:%H:%M}-{closes:%H:%M}"
"""
    write_lines(influxdb, [footfall_line("sh-1", opens + timedelta(minutes=10), 4, 1)])
    with running_api(tmp_path, influxdb, sites=sites) as api:
        doc = api.get("/v1/occupancy", api.operator, params={"site": "sh-1"}).json()
        assert doc["open"] is False and (doc["entries"], doc["occupancy"]) == (4, 3)
        assert datetime.fromisoformat(doc["business_day"]["closes"]) == closes


def test_rate_limit_429_with_retry_after_then_recovers(tmp_path, influxdb):
    """Per key: a burst of 3, then 429 problem with Retry-After; another key is not affected; after
    Retry-After seconds the key is served again."""
    with running_api(tmp_path, influxdb, api_extra="rate_limit_per_s = 1\nrate_limit_burst = 3") as api:
        codes = [api.get("/v1/sites", api.merchant_a).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = api.get("/v1/footfall", api.merchant_a, params={"site": "sh-1"})
        body = assert_problem(r, 429)
        assert body["type"] == "urn:sdgw:problem:rate-limited"
        retry_after = int(r.headers["retry-after"])
        assert retry_after == body["retry_after_s"] and 1 <= retry_after <= 2
        assert api.get("/v1/sites", api.merchant_b).status_code == 200
        time.sleep(retry_after)
        assert api.get("/v1/sites", api.merchant_a).status_code == 200


def test_footfall_no_query_database_is_503(tmp_path, influxdb):
    class Gone:
        url, db = "http://127.0.0.1:9", "none"

    with running_api(tmp_path, Gone) as api:
        body = assert_problem(api.get("/v1/footfall", api.merchant_a, params={"site": "sh-1"}), 503)
        assert body["type"] == "urn:sdgw:problem:query-database-unavailable"
        assert api.get("/v1/sites", api.merchant_a).status_code == 200  # config only


def test_footfall_default_range_is_today_so_far(api, influxdb):
    now = datetime.now(UTC)
    write_lines(influxdb, [footfall_line("sh-1", now - timedelta(seconds=30), 6, 2)])
    doc = api.get("/v1/footfall", api.merchant_a, params={"site": "sh-1", "interval": "15m"}).json()
    assert doc["from"] == now.astimezone(SHANGHAI).replace(hour=0, minute=0, second=0, microsecond=0).isoformat()
    assert datetime.fromisoformat(doc["to"]) >= now
    if (now - timedelta(seconds=30)).astimezone(SHANGHAI).date() == now.astimezone(SHANGHAI).date():
        assert doc["totals"] == {"in": 6, "out": 2}


def test_footfall_through_the_gateway_matches_the_emulators_truth(tmp_path, mosquitto, influxdb):
    """VIVOTEK emulator → MQTT → `sdgw run` → InfluxDB → the gateway's own API. Reports run across
    Shanghai midnight; the camera's two lines feed two sites (`lines` in config). Each local day's
    bucket per site equals the emulator's ground truth for that day and line."""
    midnight = int(local(SHANGHAI, 2026, 1, 11).timestamp())
    rules = ("Counting1", "Counting2")
    day1 = Street(cameras=["cam-01"], rules=rules, start_s=midnight - 4 * 900, seed=1)
    day2 = Street(cameras=["cam-01"], rules=rules, start_s=midnight, seed=2)
    api_port = free_port()
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    config = gateway_config(
        tmp_path,
        broker_port=mosquitto.port,
        sinks=[sink],
        cameras=day1.cameras,
        api_port=api_port,
        extra='lines = { Counting2 = "shop-2" }\n[[sites]]\nid = "shop-2"\nmerchant = "m-2"\n',
    )
    keys = KeyStore(tmp_path / "api-keys.json", sites=["shop-1", "shop-2"])
    _, merchant_1 = keys.create("merchant", ["shop-1"])
    _, operator = keys.create("operator")
    with GatewayProcess(tmp_path, config) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=30, what="gateway connected")
        messages = [*day1.messages(4), *day2.messages(4)]
        assert publish_all("127.0.0.1", mosquitto.port, iter(messages)) == 8
        count = 'SELECT count("entries") FROM footfall'
        wait_for(
            lambda: (rows := influxdb.rows(count, influxdb.db)) and rows[0]["count"] == 16,
            timeout_s=30,
            what="16 footfall points",
        )
        base = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: _up(base), timeout_s=30, what="the gateway's API")
        for site, rule, key in (("shop-1", "Counting1", merchant_1), ("shop-2", "Counting2", operator)):
            params = {"site": site, "interval": "1d", "from": "2026-01-10", "to": "2026-01-11"}
            r = httpx.get(f"{base}/v1/footfall", params=params, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            assert r.status_code == 200, r.text
            got = [(b["start"], b["in"], b["out"]) for b in r.json()["buckets"]]
            truth = [(day.truth[("cam-01", rule, "in")], day.truth[("cam-01", rule, "out")]) for day in (day1, day2)]
            assert got == [
                ("2026-01-10T00:00:00+08:00", *truth[0]),
                ("2026-01-11T00:00:00+08:00", *truth[1]),
            ]
            r = httpx.get(
                f"{base}/v1/footfall",
                params={
                    **params,
                    "interval": "15m",
                    "from": "2026-01-10T23:00:00+08:00",
                    "to": "2026-01-11T01:00:00+08:00",
                },
                headers={"Authorization": f"Bearer {key}"},
                timeout=30,
            )
            buckets = r.json()["buckets"]
            assert len(buckets) == 8
            assert sum(b["in"] for b in buckets[:4]) == truth[0][0] and sum(b["in"] for b in buckets[4:]) == truth[1][0]
        r = httpx.get(f"{base}/v1/footfall?site=shop-2", headers={"Authorization": f"Bearer {merchant_1}"}, timeout=30)
        assert r.status_code == 404


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=5).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def test_footfall_berlin_autumn_change_through_the_gateway(tmp_path, mosquitto, influxdb):
    """Hourly VIVOTEK reports through `sdgw run` across Berlin's autumn change (2026-10-25, a 25-hour
    day): the 1d buckets of a Europe/Berlin site are the local days and hold exactly what the emulator
    counted in each; the 1h buckets of that day are 25, the repeated 02:00 hour twice."""
    import orjson

    start = int(local(BERLIN, 2026, 10, 24, 22).timestamp())
    street = Street(cameras=["cam-be"], rules=("Counting1",), interval_s=3600, start_s=start, seed=9)
    messages = list(street.messages(30))  # 22:00 on the 24th to 03:00 on the 26th, local
    expected: dict[str, list[int]] = {}
    for _topic, payload in messages:
        info = orjson.loads(payload)["Data"][0]["CountingInfo"][0]
        t = datetime.fromisoformat(info["StartTime"].replace("Z", "+00:00")).astimezone(BERLIN)
        day = expected.setdefault(t.date().isoformat(), [0, 0])
        day[0] += info["In"]
        day[1] += info["Out"]
    api_port = free_port()
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    config = gateway_config(
        tmp_path,
        broker_port=mosquitto.port,
        sinks=[sink],
        cameras=[],
        api_port=api_port,
        extra=(
            '[[sites]]\nid = "be-1"\nmerchant = "m-be"\ntimezone = "Europe/Berlin"\n'
            '[[devices]]\nid = "cam-be"\nmodel = "vivotek-sc8131"\nsite = "be-1"\ntopic = "vivotek/cam-be/report"\n'
        ),
    )
    _, merchant = KeyStore(tmp_path / "api-keys.json", sites=["shop-1", "be-1"]).create("merchant", ["be-1"])
    headers = {"Authorization": f"Bearer {merchant}"}
    with GatewayProcess(tmp_path, config) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=30, what="gateway connected")
        assert publish_all("127.0.0.1", mosquitto.port, iter(messages)) == 30
        count = 'SELECT count("entries") FROM footfall'
        wait_for(
            lambda: (rows := influxdb.rows(count, influxdb.db)) and rows[0]["count"] == 30,
            timeout_s=30,
            what="30 footfall points",
        )
        base = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: _up(base), timeout_s=30, what="the gateway's API")
        params = {"site": "be-1", "interval": "1d", "from": "2026-10-24", "to": "2026-10-26"}
        r = httpx.get(f"{base}/v1/footfall", params=params, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        got = {b["start"][:10]: [b["in"], b["out"]] for b in r.json()["buckets"]}
        assert got == expected
        starts = [b["start"] for b in r.json()["buckets"]]
        assert starts == ["2026-10-24T00:00:00+02:00", "2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00"]
        hourly = httpx.get(
            f"{base}/v1/footfall",
            params={**params, "interval": "1h", "from": "2026-10-25", "to": "2026-10-25"},
            headers=headers,
            timeout=30,
        ).json()["buckets"]
        assert len(hourly) == 25
        assert [b["start"] for b in hourly[2:4]] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
        assert [sum(b["in"] for b in hourly), sum(b["out"] for b in hourly)] == expected["2026-10-25"]
