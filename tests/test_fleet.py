"""The fleet (issue 6 point 5): three street gateways — three `sdgw run` processes with their own
ids, streets and emulators — write into ONE InfluxDB database; the dashboards' queries see all three
streets and gateways, and the central API (`sdgw api`'s app over that database) lists the three
gateways and answers footfall for each street's shop from the gateway that counted it."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gateway.api.app import build_context, create_app
from gateway.config import load_config
from gateway.dashboards.boards import build_all
from gateway.dashboards.querycheck import check, resolve_variables
from gateway.localservers import free_port
from tests.api_support import ServerThread
from tests.dashboard_data import (
    DISTRICT,
    StreetGateway,
    drive_locker_bank,
    publish_street,
    street_config,
    street_data_landed,
)
from tests.harness import GatewayProcess, pseudonym_key_file, wait_for

pytestmark = pytest.mark.integration

FLEET = [
    StreetGateway("gw-north", "north-st"),
    StreetGateway("gw-market", "market-st"),
    StreetGateway("gw-river", "river-rd"),
]
BOARDS = build_all()


def central_config(root, influxdb) -> str:
    """The district's central API: no ingestion, every street's shop, the fleet's database."""
    sites = "".join(
        f'[[sites]]\nid = "{gw.shop}"\nmerchant = "m-{gw.gateway_id}"\nstreet = "{gw.street}"\n' for gw in FLEET
    )
    return f"""
[gateway]
district = "{DISTRICT}"
street = "central"
id = "central-api"
data_dir = "{root}"
[[sinks]]
name = "central"
url = "{influxdb.url}"
database = "{influxdb.db}"
[status]
heartbeat_s = 5
[api]
host = "127.0.0.1"
port = {free_port()}
{sites}"""


def _rows(influx, board: dict, title: str, **kw) -> list[dict]:
    (outcome,) = [
        o
        for o in check(
            board, lambda q: influx.rows(q, influx.db), time.time_ns() // 1_000_000, styles=("server",), **kw
        )
        if o.query.panel == title
    ]
    assert outcome.error is None, outcome.error
    return influx.rows(outcome.query.text, influx.db)


def test_three_gateways_one_database_dashboards_and_api_see_them_all(tmp_path, mosquitto, influxdb):
    key_file = pseudonym_key_file(tmp_path / "keys")
    with contextlib.ExitStack() as stack:
        procs, api_ports = [], []
        for gw in FLEET:
            root = tmp_path / gw.gateway_id
            api_ports.append(free_port())
            cfg = street_config(
                root,
                gw,
                broker_port=mosquitto.port,
                influx_url=influxdb.url,
                database=influxdb.db,
                key_file=key_file,
                api_port=api_ports[-1],
            )
            procs.append(stack.enter_context(GatewayProcess(root, cfg)))
        keys = [p.cli("keys", "create", "--role", "operator").stdout.strip() for p in procs]
        for proc in procs:
            wait_for(lambda p=proc: "connected" in p.log_text().lower(), timeout_s=45, what="gateway connected")
        published = {}
        for seed, (gw, port, key) in enumerate(zip(FLEET, api_ports, keys, strict=True), start=1):
            published[gw.gateway_id] = publish_street(mosquitto.port, gw, seed=seed)
            drive_locker_bank(mosquitto.port, gw, port, key)
        for gw in FLEET:
            wait_for(
                lambda g=gw: street_data_landed(influxdb, g, published[g.gateway_id]),
                timeout_s=90,
                interval_s=0.5,
                what=f"{gw.gateway_id}'s data",
            )

        # the central API, over the one database, while the gateways heartbeat
        central = tmp_path / "central"
        central.mkdir()
        (central / "central.toml").write_text(central_config(central, influxdb))
        ctx = build_context(load_config(central / "central.toml"), mode="api")
        _, operator = ctx.keys.create("operator")
        auth = {"Authorization": f"Bearer {operator}"}
        with ServerThread(create_app(ctx)) as api:
            r = httpx.get(f"{api.url}/v1/gateways", headers=auth, timeout=10)
            assert r.status_code == 200, r.text
            listed = {(g["gateway"], g["street"], g["state"]) for g in r.json()["gateways"]}
            assert listed == {(gw.gateway_id, gw.street, "online") for gw in FLEET}

            now = datetime.now(UTC)
            start = (now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
            for gw in FLEET:
                params = {"site": gw.shop, "interval": "1h", "from": start.strftime("%Y-%m-%dT%H:%M:%SZ")}
                r = httpx.get(f"{api.url}/v1/footfall", params=params, headers=auth, timeout=10)
                assert r.status_code == 200, r.text
                assert r.json()["totals"]["in"] == published[gw.gateway_id].entries_today, gw

    # the dashboards: every query over the fleet, and the fleet's streets and gateways in them
    for uid, board in BOARDS.items():
        outcomes = check(board, lambda q: influxdb.rows(q, influxdb.db), time.time_ns() // 1_000_000)
        bad = [
            f"{o.query.panel}/{o.query.ref_id} ({o.query.style}): {o.error or 'no rows'}"
            for o in outcomes
            if o.error or o.rows == 0
        ]
        assert not bad, f"{uid}: " + "; ".join(bad)
    streets = sorted(gw.street for gw in FLEET)
    _, options = resolve_variables(BOARDS["sdgw-district-overview"], lambda q: influxdb.rows(q, influxdb.db))
    assert options["street"] == streets

    overview = BOARDS["sdgw-district-overview"]
    assert sorted({r["street"] for r in _rows(influxdb, overview, "Footfall by street (entries)")}) == streets
    by_street = {r["street"]: r["sum"] for r in _rows(influxdb, overview, "Entries today by street")}
    assert by_street == {gw.street: published[gw.gateway_id].entries_today for gw in FLEET}
    week_ago = {r["street"]: r["sum"] for r in _rows(influxdb, overview, "Entries by street, same weekday last week")}
    assert week_ago == {gw.street: published[gw.gateway_id].entries_last_week for gw in FLEET}
    assert _rows(influxdb, overview, "Gateways online")[0]["online"] == len(FLEET)
    occupancy = _rows(influxdb, overview, "Locker occupancy by street")
    assert sorted(r["street"] for r in occupancy) == streets and all(r["compartments"] == 4 for r in occupancy)

    health = BOARDS["sdgw-gateway-health"]
    last_seen = _rows(influxdb, health, "Gateways: last seen")
    assert sorted((r["street"], r["gateway"]) for r in last_seen) == sorted((g.street, g.gateway_id) for g in FLEET)
    assert {r["gateway"] for r in _rows(influxdb, health, "Log depth: records pending per sink")} == {
        gw.gateway_id for gw in FLEET
    }
    banks = _rows(influxdb, BOARDS["sdgw-lockers"], "Banks (latest occupancy)")
    assert sorted(r["bank"] for r in banks) == sorted(gw.bank for gw in FLEET)

    # one street picked: only its data
    for gw in FLEET:
        picked = _rows(influxdb, overview, "Entries today by street", selection={"street": [gw.street]})
        assert [(r["street"], r["sum"]) for r in picked] == [(gw.street, published[gw.gateway_id].entries_today)]
        street_board = BOARDS["sdgw-street"]
        sites = {
            r["site"]
            for r in _rows(
                influxdb, street_board, "Totals in range by site and entrance", selection={"street": [gw.street]}
            )
        }
        assert sites == {gw.shop}
