"""VIVOTEK Report Push over HTTP (decisions.md D12): camera emulator → POST /v1/ingest/<device> on
`sdgw run` → log → InfluxDB. The 204 is the durability boundary: a pusher that retries on anything
else loses nothing through a SIGKILL of the gateway, and its retries and duplicates land once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import httpx
import orjson
import pytest
from http_out import push_all
from vivotek_counter import Street

from gateway.config import ConfigError, parse_config
from gateway.localservers import free_port
from gateway.sources.http_push import HttpPushIngest
from tests.harness import GatewayProcess, gateway_config, wait_for
from tests.influx_support import footfall_sums

PASSWORD = "cam-pass-7f3a91"


def config(tmp_path, mosquitto, influxdb, cameras: list[str], api_port: int) -> str:
    (tmp_path / "cam.secret").write_text(PASSWORD + "\n")
    devices = "".join(
        f'[[devices]]\nid = "{c}"\nmodel = "vivotek-sc8131"\nsite = "shop-1"\ntransport = "http"\n'
        f'http_password_file = "{tmp_path / "cam.secret"}"\n'
        for c in cameras
    )
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    return gateway_config(
        tmp_path, broker_port=mosquitto.port, sinks=[sink], cameras=[], api_port=api_port, extra=devices
    )


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_http_push_through_sigkill_lands_exactly_once(tmp_path, mosquitto, influxdb):
    street = Street(cameras=["cam-01", "cam-02", "cam-03"], rules=("Counting1", "Counting2"), duplicate_ratio=0.2)
    port = free_port()
    gw = GatewayProcess(tmp_path, config(tmp_path, mosquitto, influxdb, street.cameras, port))
    base = f"http://127.0.0.1:{port}"
    gw.start()
    try:
        wait_for(lambda: _up(base), timeout_s=30, what="gateway API up")
        by_topic = {street.topic(c): c for c in street.cameras}
        reports = [(by_topic[t], doc) for t, doc in street.messages(600)]
        result: list[Counter] = []
        pusher = threading.Thread(
            target=lambda: result.append(push_all(base, reports, lambda _c: PASSWORD, rate=300)), daemon=True
        )
        pusher.start()
        time.sleep(1.0)
        gw.kill()  # the camera sees connection errors and keeps its reports
        time.sleep(0.5)
        gw.start()
        pusher.join(120)
        assert result and result[0]["accepted"] == len(reports), result
        assert result[0]["attempts"] > len(reports)  # some pushes were retried across the kill
        wait_for(lambda: footfall_sums(influxdb) == +street.truth, timeout_s=30, what="InfluxDB totals = truth")
        points = influxdb.rows('SELECT count("entries") FROM footfall', influxdb.db)[0]["count"]
        assert points == street.reports * 2  # one point per (report, rule): duplicates and retries overwrote
        health = httpx.get(f"{base}/v1/health").json()
        assert health["details"]["sources"]["http:cam-01"]["accepted"] > 0
    finally:
        gw.stop()


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/v1/health", timeout=1).status_code in (200, 503)
    except httpx.HTTPError:
        return False


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_http_push_auth_garbage_and_limits(tmp_path, mosquitto, influxdb):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with GatewayProcess(tmp_path, config(tmp_path, mosquitto, influxdb, ["cam-01"], port)) as gw:
        wait_for(lambda: _up(base), timeout_s=30, what="gateway API up")
        url = f"{base}/v1/ingest/cam-01"
        doc = next(Street(cameras=["cam-01"]).messages(1))[1]

        no_auth = httpx.post(url, content=doc)
        wrong = httpx.post(url, content=doc, auth=("cam-01", "nope"))
        unknown = httpx.post(f"{base}/v1/ingest/cam-99", content=doc, auth=("cam-99", PASSWORD))
        other_user = httpx.post(url, content=doc, auth=("cam-02", PASSWORD))
        for r in (no_auth, wrong, unknown, other_user):
            assert r.status_code == 401
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["www-authenticate"].startswith('Basic realm="sdgw ingest"')
        assert wrong.json()["detail"] == unknown.json()["detail"]  # nothing tells which devices exist

        garbage = httpx.post(
            url, content=b'{"Data": [{"RuleType": "Counting", "CountingInfo": [{"In": ', auth=("cam-01", PASSWORD)
        )
        assert garbage.status_code == 400
        body = garbage.json()
        assert body["type"].endswith("undecodable") and body["reason"]

        too_big = httpx.post(url, content=b" " * ((1 << 20) + 1), auth=("cam-01", PASSWORD))
        assert too_big.status_code == 413

        ok = httpx.post(url, content=doc, auth=("cam-01", PASSWORD))
        assert ok.status_code == 204
        wait_for(lambda: footfall_sums(influxdb), timeout_s=20, what="the report in InfluxDB")

        stats = orjson.loads(gw.cli("buffer", "stats", "--json").stdout)
        assert any(k.startswith("device:cam-01 ") for k in stats["dead_letters"])  # the garbage, kept
        log = gw.log_text()
        assert PASSWORD not in log and "nope" not in log


def test_http_device_needs_a_password_and_the_api(tmp_path, monkeypatch):
    base = """
[gateway]
district = "d"
street = "s"
id = "g"
[[devices]]
id = "cam-1"
model = "vivotek-sc8131"
transport = "http"
"""
    cfg = parse_config(base)
    monkeypatch.delenv("SDGW_DEVICE_CAM_1_PASSWORD", raising=False)
    with pytest.raises(ConfigError) as err:
        HttpPushIngest.for_devices(cfg.devices, None, None, None)  # type: ignore[arg-type]
    assert "devices[cam-1].http_password_file" in str(err.value) and "SDGW_DEVICE_CAM_1_PASSWORD" in str(err.value)
    monkeypatch.setenv("SDGW_DEVICE_CAM_1_PASSWORD", "from-env")
    assert HttpPushIngest.for_devices(cfg.devices, None, None, None).secrets == {"cam-1": b"from-env"}  # type: ignore[arg-type]

    with pytest.raises(ConfigError) as err:
        parse_config(base + "[api]\nenabled = false\n")
    assert "push over HTTP" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config(base.replace('transport = "http"', 'topic = "t"\nhttp_password_file = "/x"') + "[mqtt]\n")
    assert "http_password_file" in str(err.value)
    with pytest.raises(ConfigError):  # a model that cannot push over HTTP
        parse_config(base.replace("vivotek-sc8131", "axis-people-counter"))


def test_central_api_takes_no_pushes(tmp_path):
    from fastapi.testclient import TestClient

    from gateway.api.app import build_context, create_app

    cfg = parse_config(f'[gateway]\ndistrict = "d"\nstreet = "s"\nid = "g"\ndata_dir = "{tmp_path}"\n')
    with TestClient(create_app(build_context(cfg, mode="api"))) as client:
        r = client.post("/v1/ingest/cam-01", content=b"{}", auth=("cam-01", "x"))
    assert r.status_code == 404
    assert r.json()["type"].endswith("ingest-not-served")
