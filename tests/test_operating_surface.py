"""The operating surface of a running gateway, against real Mosquitto and InfluxDB: the status topic
(birth, last will on SIGKILL), the gateway_health heartbeat, the API beside ingestion, /metrics
counting real traffic, and no secret in any log line of the run (issue 9)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

import httpx
import orjson
import paho.mqtt.client as mqtt
import pytest
from vivotek_counter import Street

from gateway.localservers import Mosquitto, free_port
from tests.harness import ROOT, GatewayProcess, gateway_config, wait_for

pytestmark = pytest.mark.integration

MQTT_USER = "gw-test"
MQTT_PASSWORD = "mqtt-Pa55word-9f1c"
DEVICE_USER = "counters"
DEVICE_PASSWORD = "dev-Pa55word-22aa"
SINK_PASSWORD = "influx-Pa55word-77de"


@pytest.fixture
def secured_broker(tmp_path):
    """Mosquitto with per-client passwords and an ACL: the gateway may read its devices' topics and
    write its status; the counters may only publish reports."""
    root = tmp_path / "mq"
    root.mkdir()
    passwd = root / "passwd"
    passwd.touch()
    for user, pw in ((MQTT_USER, MQTT_PASSWORD), (DEVICE_USER, DEVICE_PASSWORD), ("watcher", "w")):
        subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, pw], check=True, capture_output=True)
    acl = root / "acl"
    acl.write_text(
        f"user {MQTT_USER}\ntopic read vivotek/#\ntopic readwrite sdgw/#\n"
        f"user {DEVICE_USER}\ntopic write vivotek/#\n"
        "user watcher\ntopic read sdgw/#\n"
    )
    broker = Mosquitto(root, extra_conf=f"password_file {passwd}\nacl_file {acl}\n")
    broker.conf_path.write_text(broker.conf_path.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    with broker:
        yield broker


class StatusWatcher:
    """A real subscriber on the gateway's status topic."""

    def __init__(self, port: int, topic: str) -> None:
        self.states: list[dict] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.username_pw_set("watcher", "w")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c, _u, msg) -> None:
        with self.lock:
            self.states.append({**orjson.loads(msg.payload), "retained": bool(msg.retain)})

    def last_state(self) -> str | None:
        with self.lock:
            return self.states[-1]["state"] if self.states else None

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_gateway_status_heartbeat_metrics_api_and_no_secret_in_logs(tmp_path, secured_broker, influxdb):
    api_port = free_port()
    pw_file = tmp_path / "mqtt-password"
    pw_file.write_text(MQTT_PASSWORD + "\n")
    st = Street(cameras=["cam-01", "cam-02"], rules=("Counting1", "Counting2"))
    sink = {
        "name": "edge",
        "url": influxdb.url,
        "dialect": "v1",
        "database": influxdb.db,
        "username": "sdgw",
        "flush_interval_s": 0.1,
    }
    cfg = gateway_config(
        tmp_path, broker_port=secured_broker.port, sinks=[sink], cameras=st.cameras, heartbeat_s=0.5, api_port=api_port
    )
    cfg = cfg.replace("[mqtt]\n", f'[mqtt]\nusername = "{MQTT_USER}"\npassword_file = "{pw_file}"\n')
    gw = GatewayProcess(tmp_path, cfg, env={"SDGW_SINK_EDGE_PASSWORD": SINK_PASSWORD})

    op = gw.cli("keys", "create", "--role", "operator", "--label", "ops")
    assert op.returncode == 0, op.stderr
    operator_key = op.stdout.strip()
    me = gw.cli("keys", "create", "--role", "merchant", "--site", "shop-1", "--label", "tea")
    assert me.returncode == 0, me.stderr
    merchant_key = me.stdout.strip()
    cli_outputs = [op.stderr, me.stderr, gw.cli("keys", "list").stdout]

    topic = "sdgw/test-district/test-st/gw-test/status"
    watcher = StatusWatcher(secured_broker.port, topic)
    api = f"http://127.0.0.1:{api_port}"
    try:
        gw.start()
        wait_for(lambda: watcher.last_state() == "online", timeout_s=20, what="birth message")
        birth = watcher.states[-1]
        assert set(birth) >= {"state", "since", "version"} and birth["since"].endswith("Z")

        # devices publish with their own credentials
        import paho.mqtt.publish as publish

        msgs = [{"topic": t, "payload": p, "qos": 1} for t, p in st.messages(50)]
        publish.multiple(
            msgs,
            hostname="127.0.0.1",
            port=secured_broker.port,
            auth={"username": DEVICE_USER, "password": DEVICE_PASSWORD},
        )
        wait_for(
            lambda: influxdb.rows('SELECT count("entries") FROM footfall', influxdb.db) == [{"time": 0, "count": 100}],
            timeout_s=20,
            what="100 footfall points",
        )

        # heartbeat in InfluxDB
        hb = wait_for(
            lambda: influxdb.rows('SELECT * FROM "gateway_health"', influxdb.db),
            timeout_s=10,
            what="gateway_health points",
        )
        assert hb[-1]["gateway"] == "gw-test" and hb[-1]["clock_synchronised"] is True
        assert "pending_edge" in hb[-1] and "uptime_s" in hb[-1]

        # the API beside ingestion
        auth = {"Authorization": f"Bearer {operator_key}"}
        # health follows asynchronous state (a sink's last answer, the MQTT session): poll, don't sample
        health = wait_for(
            lambda: (r := httpx.get(f"{api}/v1/health", timeout=5)).status_code == 200 and r,
            timeout_s=15,
            what="healthy",
        )
        assert health.json()["details"]["sources"]["mqtt"]["connected"] is True
        gws = httpx.get(f"{api}/v1/gateways", headers=auth, timeout=5)
        assert gws.status_code == 200, gws.text
        mine = [g for g in gws.json()["gateways"] if g["gateway"] == "gw-test"]
        assert mine and mine[0]["state"] == "online"
        forbidden = httpx.get(f"{api}/v1/gateways", headers={"Authorization": f"Bearer {merchant_key}"}, timeout=5)
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"].startswith("application/problem+json")

        # /metrics counts the real traffic
        metrics = httpx.get(f"{api}/metrics", headers=auth, timeout=5).text
        assert 'sdgw_source_messages_total{device="cam-01"} 25.0' in metrics
        assert 'sdgw_source_records_total{device="cam-02"} 50.0' in metrics
        sent = [ln for ln in metrics.splitlines() if ln.startswith('sdgw_sink_records_sent_total{sink="edge"}')]
        assert sent and float(sent[0].split()[-1]) >= 100
        assert "sdgw_log_commit_seconds_bucket" in metrics and "sdgw_mqtt_connected 1.0" in metrics

        # SIGKILL: the broker publishes the last will
        gw.kill()
        wait_for(lambda: watcher.last_state() == "offline", timeout_s=30, what="last will 'offline'")
    finally:
        watcher.close()
        if gw.running:
            gw.stop()

    texts = [gw.log_text(), *cli_outputs]
    for secret in (MQTT_PASSWORD, DEVICE_PASSWORD, SINK_PASSWORD, operator_key, merchant_key):
        for text in texts:
            assert secret not in text
    keyfile = (tmp_path / "api-keys.json").read_bytes()
    assert operator_key.encode() not in keyfile and merchant_key.encode() not in keyfile


def test_two_sdgw_api_replicas_answer_alike_with_no_ingestion(tmp_path, mosquitto, influxdb):
    """A gateway writes its heartbeats and stops; two `sdgw api` processes over the same InfluxDB,
    with no ingestion at all, give the same answer for the district's gateways (D15)."""
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db, "flush_interval_s": 0.1}
    cfg = gateway_config(tmp_path / "gw", broker_port=mosquitto.port, sinks=[sink], cameras=["cam-01"], heartbeat_s=0.3)
    with GatewayProcess(tmp_path / "gw", cfg):
        wait_for(
            lambda: len(influxdb.rows('SELECT * FROM "gateway_health"', influxdb.db)) >= 2,
            timeout_s=15,
            what="heartbeats",
        )

    replicas = []
    for name in ("a", "b"):
        port = free_port()
        central = tmp_path / f"central-{name}"
        text = gateway_config(central, broker_port=1, sinks=[sink], cameras=[], heartbeat_s=0.3, api_port=port)
        # the central config: no MQTT, no devices — the API alone over the district's InfluxDB
        lines = text.splitlines()
        start = lines.index("[mqtt]")
        end = lines.index("[status]")
        central_text = "\n".join(lines[:start] + lines[end:]) + "\n"
        replicas.append((GatewayProcess(central, central_text), port))
    procs = []
    try:
        for gp, _port in replicas:
            log = open(gp.log_path, "ab")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", "api", "-c", str(gp.config_path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                )
            )
            log.close()
        keys = []
        for gp, _port in replicas:
            r = gp.cli("keys", "create", "--role", "operator")
            assert r.returncode == 0, r.stderr
            keys.append(r.stdout.strip())

        def answer(i: int):
            _, port = replicas[i]
            try:
                r = httpx.get(
                    f"http://127.0.0.1:{port}/v1/gateways", headers={"Authorization": f"Bearer {keys[i]}"}, timeout=2
                )
            except httpx.TransportError:
                return None
            return r.json()["gateways"] if r.status_code == 200 else None

        a = wait_for(lambda: answer(0), timeout_s=20, what="replica a")
        b = wait_for(lambda: answer(1), timeout_s=20, what="replica b")
        assert a == b
        assert [g["gateway"] for g in a] == ["gw-test"]
        # the gateway stopped: after 3 missed heartbeats it is offline, on both replicas alike
        wait_for(lambda: (x := answer(0)) and x[0]["state"] == "offline", timeout_s=10, what="offline")
        assert answer(1)[0]["state"] == "offline"
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(10)
