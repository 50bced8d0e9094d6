"""Locker routes against real InfluxDB rows: banks with their latest occupancy and the alarms open
now, a bank's compartments (latest state each), operator-only access, and the remote open refused by
the central API (it owns no bus, decisions.md D15)."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.api.app import build_context, create_app
from tests.api_support import ServerThread, write_config

S = 1_000_000_000
TAGS = "district=d1,street=s1,gateway=g1,device=lockers-a"


@pytest.fixture
def locker_api(tmp_path, influxdb):
    _, cfg = write_config(tmp_path, influx_url=influxdb.url, database=influxdb.db)
    ctx = build_context(cfg, mode="api")
    _, operator = ctx.keys.create("operator")
    _, merchant = ctx.keys.create("merchant", ["shop-1"])
    now = time.time_ns()

    def occupancy(bank: str, loaded: int, t: int) -> str:
        return (
            f"locker_occupancy,{TAGS},bank={bank} compartments=4i,loaded={loaded}i,empty={4 - loaded}i,unknown=0i,"
            f"out_of_service=0i,doors_open=0i {t}"
        )

    def state(n: int, door: str, load: str, command: str, alarms: str, t: int) -> str:
        return (
            f'locker_compartment,{TAGS},bank=A,compartment={n} door="{door}",item="unknown",load="{load}",'
            f'in_service=true,command="{command}",alarms="{alarms}" {t}'
        )

    def alarm(n: int, name: str, active: bool, t: int) -> str:
        return f'locker_alarm,{TAGS},bank=A,compartment={n},alarm={name} is_active={active},detail="x" {t}'

    lines = [
        occupancy("A", 1, now - 60 * S),
        occupancy("A", 2, now - 10 * S),  # the latest
        occupancy("B", 0, now - 30 * S),
        state(1, "closed", "empty", "none", "none", now - 50 * S),
        state(1, "open", "loaded", "unconfirmed", "door_left_open,forced_open", now - 5 * S),
        state(2, "closed", "loaded", "none", "none", now - 20 * S),
        alarm(1, "door_left_open", True, now - 5 * S),
        alarm(1, "forced_open", True, now - 6 * S),
        alarm(2, "lock_jammed", True, now - 40 * S),
        alarm(2, "lock_jammed", False, now - 30 * S),  # cleared
        f"locker_controller,{TAGS},bank=B,board=3 is_online=false,missed_polls=3i,outage_s=0i {now - 8 * S}",
        f"locker_controller,{TAGS},bank=A,board=1 is_online=false,missed_polls=3i,outage_s=0i {now - 90 * S}",
        f"locker_controller,{TAGS},bank=A,board=1 is_online=true,missed_polls=0i,outage_s=60i {now - 30 * S}",
    ]
    r = httpx.post(f"{influxdb.url}/write", params={"db": influxdb.db}, content="\n".join(lines))
    assert r.status_code == 204, r.text
    with ServerThread(create_app(ctx)) as server:
        yield server, {"Authorization": f"Bearer {operator}"}, {"Authorization": f"Bearer {merchant}"}


def test_banks_with_latest_occupancy_and_open_alarms(locker_api):
    server, op, _ = locker_api
    r = httpx.get(f"{server.url}/v1/lockers", headers=op)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [(b["bank"], b["occupancy"]["loaded"]) for b in doc["banks"]] == [("A", 2), ("B", 0)]
    assert doc["banks"][0]["gateway"] == "g1" and doc["banks"][0]["as_of"].endswith("Z")
    assert [(a["bank"], a["compartment"], a["board"], a["alarm"]) for a in doc["alarms"]] == [
        ("A", 1, None, "door_left_open"),
        ("A", 1, None, "forced_open"),
        ("B", None, 3, "controller_offline"),
    ]


def test_bank_detail_shows_each_compartments_latest_state(locker_api):
    server, op, _ = locker_api
    r = httpx.get(f"{server.url}/v1/lockers/A", headers=op)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["bank"]["occupancy"]["loaded"] == 2
    c1, c2 = doc["compartments"]
    assert (c1["compartment"], c1["door"], c1["load"], c1["command"]) == (1, "open", "loaded", "unconfirmed")
    assert c1["alarms"] == ["door_left_open", "forced_open"]
    assert (c2["compartment"], c2["door"], c2["alarms"]) == (2, "closed", [])
    assert {a["alarm"] for a in doc["alarms"]} == {"door_left_open", "forced_open"}
    missing = httpx.get(f"{server.url}/v1/lockers/Z", headers=op)
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")


def test_locker_routes_are_for_operators(locker_api):
    server, _, merchant = locker_api
    assert httpx.get(f"{server.url}/v1/lockers").status_code == 401
    assert httpx.get(f"{server.url}/v1/lockers", headers=merchant).status_code == 403
    body = {"reason": "x"}
    assert httpx.post(f"{server.url}/v1/lockers/A/compartments/1/open", json=body, headers=merchant).status_code == 403


def test_central_api_refuses_remote_open_with_a_clear_problem(locker_api):
    server, op, _ = locker_api
    r = httpx.post(f"{server.url}/v1/lockers/A/compartments/1/open", json={"reason": "test"}, headers=op)
    assert r.status_code == 421
    problem = r.json()
    assert problem["type"] == "urn:sdgw:problem:not-bus-owner"
    assert "gateway that owns the bank" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({}, {}),  # no reason
        ({"reason": ""}, {}),
        ({"reason": "x", "force": "maybe"}, {}),
        ({"reason": "x", "extra": 1}, {}),
        ({"reason": "x"}, {"Idempotency-Key": "has space"}),
        ({"reason": "x"}, {"Idempotency-Key": "k" * 201}),
    ],
)
def test_open_request_is_validated(locker_api, body, headers):
    server, op, _ = locker_api
    r = httpx.post(f"{server.url}/v1/lockers/A/compartments/1/open", json=body, headers={**op, **headers})
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:sdgw:problem:invalid-request"
    bad = httpx.post(f"{server.url}/v1/lockers/A/compartments/0/open", json={"reason": "x"}, headers=op)
    assert bad.status_code == 422
