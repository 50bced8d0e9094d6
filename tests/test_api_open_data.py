"""Open data (/v1/open/footfall) on a real uvicorn over the real InfluxDB: D14's thresholds, no
per-site figure in any form, no key needed, switched off → 404, per-address rate limit."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.footfall_support import assert_problem, footfall_line, running_api, write_lines

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 1, 10, tzinfo=SHANGHAI)

SITES = "".join(
    f'[[sites]]\nid = "{site}"\nmerchant = "m-{site}"\nstreet = "{street}"\nkind = "{kind}"\n'
    for site, street, kind in [
        ("s1-a", "s1", "shop"),
        ("s1-b", "s1", "shop"),
        ("s1-c", "s1", "shop"),
        ("s1-gate", "s1", "entrance"),
        ("s2-a", "s2", "shop"),
    ]
)
# distinctive per-site figures, so a leak of any of them would be visible in a body
FIGURES = {"s1-a": 4111, "s1-b": 3222, "s1-c": 2333, "s1-gate": 9444, "s2-a": 1555}


@pytest.fixture
def open_api(tmp_path, influxdb):
    with running_api(tmp_path, influxdb, sites=SITES, extra="[open_data]\nrate_limit_per_s = 0") as api:
        yield api


def _day(api, street: str, date: str = "2026-01-10"):
    return api.get("/v1/open/footfall", None, params={"street": street, "date": date})


def _no_site_figure(body: bytes) -> None:
    for site, figure in FIGURES.items():
        assert site.encode() not in body and str(figure).encode() not in body, (site, body)


def test_open_data_three_shops_publish_the_street_total(open_api, influxdb):
    """Three shops reported (≥ 3) with a total ≥ 10 → published: the shops' entries summed over the
    local day (entrances and the neighbouring days left out), and no per-site figure anywhere."""
    lines = [
        footfall_line(site, DAY + timedelta(hours=h), figure, 1) for h, (site, figure) in enumerate(FIGURES.items())
    ]
    lines += [
        footfall_line("s1-a", DAY - timedelta(seconds=1), 50000, 0),  # the day before, local time
        footfall_line("s1-a", DAY + timedelta(days=1), 60000, 0),  # the day after
    ]
    write_lines(influxdb, lines)
    r = _day(open_api, "s1")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "street": "s1",
        "date": "2026-01-10",
        "timezone": "Asia/Shanghai",
        "complete": True,
        "published": True,
        "entries": 4111 + 3222 + 2333,
        "reason": None,
        "rule": {"min_sites": 3, "min_total": 10},
    }
    _no_site_figure(r.content)
    assert r.headers["cache-control"] == "public, max-age=3600" and "vary" not in r.headers


def test_open_data_two_shops_are_withheld_with_a_reason(open_api, influxdb):
    write_lines(
        influxdb, [footfall_line(s, DAY + timedelta(hours=2), FIGURES[s], 0) for s in ("s1-a", "s1-b", "s1-gate")]
    )
    doc = _day(open_api, "s1").json()
    assert doc["published"] is False and doc["entries"] is None
    assert doc["reason"] == "fewer than 3 shops on this street reported that day"
    _no_site_figure(_day(open_api, "s1").content)


def test_open_data_small_total_is_withheld(open_api, influxdb):
    """Three shops reporting 9 people between them: below min_total; a shop reporting zeros counts
    as having reported."""
    write_lines(
        influxdb, [footfall_line(s, DAY + timedelta(hours=3), n, 0) for s, n in (("s1-a", 5), ("s1-b", 4), ("s1-c", 0))]
    )
    doc = _day(open_api, "s1").json()
    assert (doc["published"], doc["entries"], doc["reason"]) == (False, None, "the street's total is below 10")
    write_lines(influxdb, [footfall_line("s1-c", DAY + timedelta(hours=4), 1, 0)])
    doc = _day(open_api, "s1").json()
    assert (doc["published"], doc["entries"]) == (True, 10)


def test_open_data_thresholds_come_from_config(tmp_path, influxdb):
    write_lines(influxdb, [footfall_line("s2-a", DAY + timedelta(hours=1), 2, 0)])
    extra = "[open_data]\nmin_sites = 1\nmin_total = 2"
    with running_api(tmp_path, influxdb, sites=SITES, extra=extra) as api:
        doc = _day(api, "s2").json()
        assert (doc["published"], doc["entries"], doc["rule"]) == (True, 2, {"min_sites": 1, "min_total": 2})


def test_open_data_bad_input(open_api):
    assert assert_problem(_day(open_api, "nowhere"), 404)["detail"] == "no such street"
    future = (datetime.now(SHANGHAI) + timedelta(days=2)).date().isoformat()
    assert "future" in assert_problem(_day(open_api, "s1", future), 422)["detail"]
    assert assert_problem(_day(open_api, "s1", "2026-13-01"), 422)["errors"][0]["name"] == "date"
    assert assert_problem(_day(open_api, "s1", "10.01.2026"), 422)["errors"][0]["name"] == "date"
    r = open_api.get("/v1/open/footfall?street=s1&date=2026-01-10&site=s1-a", None)
    assert assert_problem(r, 422)["errors"][0]["name"] == "site"
    r = open_api.get("/v1/open/footfall?street=s1&street=s2&date=2026-01-10", None)
    assert assert_problem(r, 422)["errors"][0]["name"] == "street"


def test_open_data_today_is_not_complete(open_api):
    today = datetime.now(SHANGHAI).date().isoformat()
    r = _day(open_api, "s1", today)
    assert r.status_code == 200 and r.json()["complete"] is False
    assert r.headers["cache-control"] == "public, max-age=300"
    again = open_api.get(
        "/v1/open/footfall", None, params={"street": "s1", "date": today}, headers={"If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304


def test_open_data_switched_off_is_404(tmp_path, influxdb):
    with running_api(tmp_path, influxdb, sites=SITES, extra="[open_data]\nenabled = false") as api:
        assert_problem(_day(api, "s1"), 404)
        assert "/v1/open/footfall" not in api.get("/openapi.json", None).json()["paths"]


def test_open_data_rate_limit_per_client_address(tmp_path, influxdb):
    extra = "[open_data]\nrate_limit_per_s = 1\nrate_limit_burst = 2"
    with running_api(tmp_path, influxdb, sites=SITES, extra=extra) as api:
        assert [_day(api, "s1").status_code for _ in range(2)] == [200, 200]
        r = _day(api, "s1")
        assert assert_problem(r, 429)["type"] == "urn:sdgw:problem:rate-limited"
        time.sleep(int(r.headers["retry-after"]))
        assert _day(api, "s1").status_code == 200
