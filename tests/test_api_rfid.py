"""RFID routes against real InfluxDB rows: sightings by GTIN or EPC, items present at a reader."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.api.app import build_context, create_app
from tests.api_support import ServerThread, write_config

S = 1_000_000_000


@pytest.fixture
def rfid_api(tmp_path, influxdb):
    _, cfg = write_config(tmp_path, influx_url=influxdb.url, database=influxdb.db)
    ctx = build_context(cfg, mode="api")
    _, operator = ctx.keys.create("operator")
    _, merchant = ctx.keys.create("merchant", ["shop-1"])
    now = time.time_ns()
    base = "rfid_presence,district=d1,street=s1,gateway=g1,site=shop-1,reader=door,antenna=1"
    lines = [
        f'{base},gtin=09506000134352 event="arrive",epc="3074257BF7194E4000001A85",serial="6789",reads=1i '
        f"{now - 30 * S}",
        f'{base},gtin=09506000134352 event="summary",epc="3074257BF7194E4000001A85",serial="6789",reads=90i,'
        f"peak_rssi_dbm=-51.5,dwell_s=25.0 {now - 5 * S}",
        f'{base} event="arrive",epc="E2801160600002040000ABCD",reads=1i {now - 40 * S}',
        f'{base} event="depart",epc="E2801160600002040000ABCD",reads=12i,dwell_s=20.0 {now - 10 * S}',
        f'{base} event="arrive",card="9f2c0d6e8a7b41c3a5d6e7f8091a2b3c",reads=1i {now - 3 * S}',
        f'rfid_presence,district=d1,street=s1,gateway=g1,reader=till,antenna=2,gtin=09506000134352 event="arrive",'
        f'epc="3074257BF7194E4000001A85",serial="6789",reads=1i {now - 2 * S}',
    ]
    r = httpx.post(f"{influxdb.url}/write", params={"db": influxdb.db}, content="\n".join(lines))
    assert r.status_code == 204, r.text
    with ServerThread(create_app(ctx)) as server:
        yield server, {"Authorization": f"Bearer {operator}"}, {"Authorization": f"Bearer {merchant}"}


def test_rfid_present_lists_items_not_departed_and_never_cards(rfid_api):
    server, op, _ = rfid_api
    r = httpx.get(f"{server.url}/v1/rfid/readers/door/present", headers=op)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["epc"], i["gtin"], i["serial"], i["last_event"]) for i in items] == [
        ("3074257BF7194E4000001A85", "09506000134352", "6789", "summary")
    ]


def test_rfid_sightings_by_gtin_and_epc_in_time_order(rfid_api):
    server, op, _ = rfid_api
    by_gtin = httpx.get(f"{server.url}/v1/rfid/sightings", params={"gtin": "09506000134352"}, headers=op).json()
    assert [(s["reader"], s["event"]) for s in by_gtin["sightings"]] == [
        ("door", "arrive"),
        ("door", "summary"),
        ("till", "arrive"),
    ]
    by_epc = httpx.get(f"{server.url}/v1/rfid/sightings", params={"epc": "e2801160600002040000abcd"}, headers=op)
    assert [s["event"] for s in by_epc.json()["sightings"]] == ["arrive", "depart"]


def test_rfid_bad_parameters_and_merchants_refused(rfid_api):
    server, op, merchant = rfid_api
    for params in (
        {},
        {"gtin": "09506000134352", "epc": "AB12CD34"},
        {"gtin": "123"},
        {"epc": "AB12CD34", "from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"epc": "AB12CD34", "from": "2026-01-01T00:00:00"},
        {"epc": "AB12CD34", "from": "2025-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    ):
        r = httpx.get(f"{server.url}/v1/rfid/sightings", params=params, headers=op)
        assert r.status_code == 422, (params, r.text)
        assert r.json()["type"] == "urn:sdgw:problem:invalid-request" and r.json()["errors"], r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    r = httpx.get(f"{server.url}/v1/rfid/readers/door/present", headers=merchant)
    assert r.status_code == 403
