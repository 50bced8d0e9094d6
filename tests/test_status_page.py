"""The technician's status page, rendered by a real headless Chromium (Debian's `chromium`) from a
real `sdgw run` fed by a VIVOTEK emulator over MQTT and an M100 reader emulator on a pty: the
device rows and statuses are in the DOM after the page's own script has polled `/status.json`, and
a phone-sized screenshot is taken (into the test's tmp dir)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from m100_reader import M100Reader
from mqtt_out import publish_all
from vivotek_counter import Street

from gateway.localservers import free_port
from tests.harness import GatewayProcess, gateway_config, wait_for

pytestmark = pytest.mark.integration

EPCS = ["3074257BF7194E4000001A85", "3074257BF7194E4000001A86"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium() -> str:
    """Debian's chromium; deploy/dev-setup.sh installs it. Missing is a failure, never a skip."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run deploy/dev-setup.sh (it installs Debian's `chromium`)")
    return path


def run_chromium(tmp_path: Path, name: str, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{name}"
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


def status_config(tmp_path: Path, mosquitto, influxdb, api_port: int) -> str:
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    text = gateway_config(
        tmp_path, broker_port=mosquitto.port, sinks=[sink], cameras=["cam-1", "cam-2"], api_port=api_port
    )
    return (
        text
        + f"""
[[devices]]
id = "shelf-1"
model = "m100"
site = "shop-1"
transport = "serial"
port = "{tmp_path / "by-id" / "m100"}"
"""
    )


def rows(dom: str, kind: str) -> dict[str, str]:
    """The `<tr>` elements of one kind (device, serial, sink) by their key attribute."""
    attr = {"device": "data-device", "serial": "data-port", "sink": "data-sink"}[kind]
    found = {}
    for m in re.finditer(rf'<tr class="{kind} [^"]*" {attr}="([^"]+)"[^>]*>(.*?)</tr>', dom, re.S):
        found[html.unescape(m.group(1))] = m.group(0)
    return found


def test_status_page_renders_live_state_in_headless_chromium(tmp_path, mosquitto, influxdb):
    (tmp_path / "by-id").mkdir()
    api_port = free_port()
    base = f"http://127.0.0.1:{api_port}"
    shelf = M100Reader(tmp_path / "by-id" / "m100", EPCS, rate_hz=10, arrive_p=1.0, depart_p=0.0)
    street = Street(cameras=["cam-1"], interval_s=60, start_s=1_700_000_000 - 1_700_000_000 % 60)
    stop = threading.Event()
    with shelf, GatewayProcess(tmp_path / "gw", status_config(tmp_path, mosquitto, influxdb, api_port)) as gw:

        def status() -> dict | None:
            try:
                r = httpx.get(f"{base}/status.json", timeout=3)
            except httpx.TransportError:
                return None
            return r.json() if r.status_code == 200 else None

        wait_for(lambda: (s := status()) and s["broker"] and s["broker"]["connected"], timeout_s=30, what="broker up")
        # cam-1 reports (and one broken payload: a decode error); cam-2 stays silent
        messages = [*street.messages(5), (street.topic("cam-1"), b'{"Data": [')]
        assert publish_all("127.0.0.1", mosquitto.port, iter(messages), client_id="test-cam-1", stop=stop) == 6

        def fed() -> dict | None:
            s = status()
            if not s:
                return None
            d = {x["id"]: x for x in s["devices"]}
            return s if d["cam-1"]["messages"] == 6 and d["shelf-1"]["messages"] > 0 else None

        doc = wait_for(fed, timeout_s=30, what="status.json showing the emulators' traffic")
        devices = {d["id"]: d for d in doc["devices"]}
        assert devices["cam-1"]["decode_errors"] == 1 and devices["cam-1"]["state"] == "ok"
        assert devices["cam-2"]["state"] == "never" and devices["cam-2"]["last_seen_s_ago"] is None
        assert doc["serial"][0]["open"] and doc["serial"][0]["frames"] > 0
        assert gw.running

        # the page itself: load it in Chromium, let its script poll at least once, read the DOM
        dom = run_chromium(tmp_path, "dom", "--virtual-time-budget=10000", "--dump-dom", f"{base}/status").stdout
        polls = re.search(r'<body data-polls="(\d+)"', dom)
        assert polls and int(polls.group(1)) >= 1, "the page's script did not poll /status.json"
        stale_banner = re.search(r'<p id="stale"[^>]*>', dom)
        dom = dom[dom.index('<main id="status">') : dom.index("</main>")]  # what is shown, not the script
        dev = rows(dom, "device")
        assert set(dev) == {"cam-1", "cam-2", "shelf-1"}
        assert 'data-state="ok"' in dev["cam-1"] and 'data-state="never"' in dev["cam-2"]
        assert "never" in dev["cam-2"] and "s ago" in dev["cam-1"]
        assert re.search(r'class="errors">1<br><small>[a-z_]+ 1</small>', dev["cam-1"]), dev["cam-1"]
        assert re.search(r'data-label="messages">6<', dev["cam-1"])
        ser = rows(dom, "serial")
        assert set(ser) == {"shelf-1"} and ">open<" in ser["shelf-1"]
        sinks = rows(dom, "sink")
        assert set(sinks) == {"edge"} and ">healthy<" in sinks["edge"]
        assert 'data-broker="connected"' in dom
        assert re.search(r'data-log-percent="[0-9.]+"', dom)
        assert stale_banner and "hidden" in stale_banner.group(0)  # the last poll succeeded

        # a phone-sized screenshot, for a person to look at (never committed)
        shot = tmp_path / "status-phone.png"
        run_chromium(
            tmp_path,
            "shot",
            "--virtual-time-budget=5000",
            "--window-size=390,1400",
            f"--screenshot={shot}",
            f"{base}/status",
        )
        assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

        # the broker goes away: the page (server-rendered, no script needed) says so
        mosquitto.stop()
        wait_for(lambda: (s := status()) and not s["broker"]["connected"], timeout_s=30, what="broker down")
        page = httpx.get(f"{base}/status", timeout=5).text
        assert 'data-broker="disconnected"' in page and "needs attention" in page
        assert "MQTT broker not connected" in page


def test_status_page_is_absent_from_sdgw_api(tmp_path, influxdb):
    """`sdgw api` has no live state: /status is a 404 problem, not an empty page."""
    from gateway.api.app import build_context, create_app
    from tests.api_support import ServerThread, write_config

    _, cfg = write_config(tmp_path, influx_url=influxdb.url, database=influxdb.db)
    with ServerThread(create_app(build_context(cfg, mode="api"))) as server:
        r = httpx.get(f"{server.url}/status", timeout=5)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
        assert "sdgw run" in r.json()["detail"]
