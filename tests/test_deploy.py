"""What deploy/ ships for a street's Raspberry Pi, checked with the real tools: systemd-analyze on
the unit, shellcheck on every script, install.sh into a throwaway root (twice: the second run
changes nothing) and as a dry run, the installed Mosquitto config started for real (the ACL keeps a
device to its own topics; TLS; no anonymous access), the InfluxDB config started by influxd with the
retention script run against it, the udev rule generator, the central compose file, and the
systemd watchdog fed by a real `sdgw run` over a notify socket the test binds."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import yaml

from gateway.localservers import InfluxDB1, Mosquitto, free_port
from gateway.watchdog import SystemdNotifier
from tests.harness import ROOT, GatewayProcess, gateway_config, wait_for
from tests.shipped_broker import ShippedBroker, add_device_user, gateway_password, install_into

DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """A Debian tool deploy/dev-setup.sh installs; missing is a failure with the reason, never a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run deploy/dev-setup.sh")
    return path


# ---- systemd unit


def verify_unit(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # systemd-analyze checks that ExecStart exists: point it at this checkout's sdgw
    unit = tmp_path / "sdgw.service"
    unit.write_text(text.replace("/opt/sdgw/venv/bin/sdgw", str(ROOT / ".venv" / "bin" / "sdgw")))
    return subprocess.run([tool("systemd-analyze"), "verify", str(unit)], capture_output=True, text=True, timeout=60)


def test_unit_passes_systemd_analyze_verify_without_a_warning(tmp_path):
    text = (DEPLOY / "systemd" / "sdgw.service").read_text()
    result = verify_unit(text, tmp_path)
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr
    settings = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    for key, value in {
        "Type": "notify",
        "Restart": "always",
        "User": "sdgw",
        "SupplementaryGroups": "dialout",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/sdgw",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "LoadCredential": "sdgw:/etc/sdgw/credentials",
    }.items():
        assert settings.get(key) == [value], f"{key}={settings.get(key)}"
    assert int(settings["WatchdogSec"][0]) > 0
    assert "ProtectClock" not in settings  # it would block adjtimex(), the clock check (D7)


def test_unit_verify_reports_a_broken_setting(tmp_path):
    """The check above can fail: a misspelt hardening value is reported."""
    text = (DEPLOY / "systemd" / "sdgw.service").read_text().replace("ProtectSystem=strict", "ProtectSystem=strickt")
    result = verify_unit(text, tmp_path)
    assert "sdgw.service:" in result.stderr and "strickt" in result.stderr


# ---- scripts


def test_every_script_passes_shellcheck():
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert {p.name for p in scripts} >= {"install.sh", "dev-setup.sh", "retention.sh", "sdgw-name-port.sh"}
    result = subprocess.run([tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# ---- install.sh


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every path under root → (mode, content hash)."""
    out = {}
    for p in sorted(root.rglob("*")):
        mode = oct(p.stat().st_mode & 0o7777)
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        out[str(p.relative_to(root))] = (mode, digest)
    return out


EXPECTED = {
    "etc/systemd/system/sdgw.service": ("0o644", DEPLOY / "systemd" / "sdgw.service"),
    "etc/sdgw/gateway.toml": ("0o640", DEPLOY / "gateway.example.toml"),
    "etc/mosquitto/conf.d/sdgw.conf": ("0o644", DEPLOY / "mosquitto" / "sdgw.conf"),
    "etc/mosquitto/conf.d/sdgw-guarantees.conf": ("0o644", DEPLOY / "mosquitto" / "sdgw-guarantees.conf"),
    "etc/mosquitto/sdgw/acl": ("0o640", DEPLOY / "mosquitto" / "acl"),
    "etc/influxdb/influxdb.conf": ("0o644", DEPLOY / "influxdb" / "influxdb.conf"),
    "etc/udev/rules.d/99-sdgw-serial.rules": ("0o644", DEPLOY / "udev" / "99-sdgw-serial.rules"),
    "usr/local/sbin/sdgw-name-port": ("0o755", DEPLOY / "udev" / "sdgw-name-port.sh"),
    "usr/local/sbin/sdgw-influx-retention": ("0o755", DEPLOY / "influxdb" / "retention.sh"),
    "opt/sdgw/README.md": ("0o644", ROOT / "README.md"),
}


def test_install_into_a_root_lands_every_file_and_a_second_run_changes_nothing(tmp_path):
    root = tmp_path / "root"
    first = install_into(root, "--debian-packages")
    assert first.returncode == 0, first.stderr
    for rel, (mode, source) in EXPECTED.items():
        path = root / rel
        assert path.is_file(), rel
        assert oct(path.stat().st_mode & 0o777) == mode, rel
        assert path.read_bytes() == source.read_bytes(), rel
    for rel, mode in {"etc/sdgw": "0o750", "etc/sdgw/credentials": "0o700", "var/lib/sdgw": "0o750"}.items():
        assert oct((root / rel).stat().st_mode & 0o777) == mode, rel
    # the gateway's MQTT user: a generated password as a credential, its hash in the broker's file
    password = gateway_password(root)
    assert len(password) == 48 and oct((root / "etc/sdgw/credentials/mqtt-password").stat().st_mode & 0o777) == "0o600"
    passwd = (root / "etc/mosquitto/sdgw/passwd").read_text()
    assert passwd.startswith("sdgw:$7$") and password not in passwd
    assert (root / "etc/mosquitto/certs/sdgw.key").stat().st_mode & 0o077 == 0o040  # group mosquitto reads
    # what needs the live machine is skipped and said so
    for skipped in ("apt-get install", "useradd", "usermod -aG dialout sdgw", "python3 -m venv", "systemctl enable"):
        assert "skipped (--root): " in first.stdout and skipped in first.stdout, skipped

    # the technician edits the config and adds a rule; a second run keeps both and changes nothing
    config = root / "etc/sdgw/gateway.toml"
    config.write_text(config.read_text().replace('id = "gw-01"', 'id = "gw-07"'))
    before = tree(root)
    second = install_into(root, "--debian-packages")
    assert second.returncode == 0, second.stderr
    assert tree(root) == before
    assert "installed" not in second.stdout and "created" not in second.stdout, second.stdout
    assert (
        "kept /etc/sdgw/gateway.toml" in second.stdout and "unchanged /etc/systemd/system/sdgw.service" in second.stdout
    )
    assert "skipped (--root): systemctl restart mosquitto.service" in first.stdout
    assert "unchanged: Mosquitto's files (not restarted)" in second.stdout

    # a shipped file that drifted is put back (ours), the technician's files are not
    unit = root / "etc/systemd/system/sdgw.service"
    unit.write_text("tampered")
    third = install_into(root, "--debian-packages")
    assert "installed /etc/systemd/system/sdgw.service" in third.stdout
    assert unit.read_bytes() == EXPECTED["etc/systemd/system/sdgw.service"][1].read_bytes()
    assert 'id = "gw-07"' in config.read_text()


def test_install_dry_run_prints_the_plan_and_changes_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    dry = install_into(root, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert list(root.iterdir()) == []
    for line in (
        "would install /etc/systemd/system/sdgw.service",
        "would install /etc/mosquitto/conf.d/sdgw.conf",
        "would create /var/lib/sdgw (mode 750, sdgw:sdgw)",
        "would create the MQTT user sdgw",
        "would make a self-signed TLS certificate",
        "would install /etc/apt/sources.list.d/mosquitto.list",  # Mosquitto >= 2.0.18 from its project (D4)
    ):
        assert line in dry.stdout, line
    # after a real install, a dry run has nothing left to do
    assert install_into(root, "--debian-packages").returncode == 0
    before = tree(root)
    again = install_into(root, "--dry-run", "--debian-packages")
    assert tree(root) == before and "would install" not in again.stdout and "would create" not in again.stdout


def test_install_renders_the_bridge_to_the_district_broker(tmp_path):
    root = tmp_path / "root"
    secret = tmp_path / "bridge-password"
    secret.write_text("s3cr&t/with|chars\n")
    ca = tmp_path / "district-ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    args = ["--debian-packages", "--district-broker", "mqtt.district.example:8883", "--gateway-id", "gw-01"]
    args += ["--bridge-password-file", str(secret), "--bridge-ca", str(ca)]
    result = install_into(root, *args)
    assert result.returncode == 0, result.stderr
    bridge = root / "etc/mosquitto/conf.d/sdgw-bridge.conf"
    text = bridge.read_text()
    assert oct(bridge.stat().st_mode & 0o777) == "0o640"
    assert "address mqtt.district.example:8883" in text and "remote_password s3cr&t/with|chars" in text
    assert "cleansession false" in text and "topic sdgw/# out 1" in text
    assert not re.search(r"@[A-Z]+@", text)
    bad = install_into(tmp_path / "root2", "--debian-packages", "--district-broker", "x:1")
    assert bad.returncode == 2 and "needs --gateway-id" in bad.stderr


# ---- the installed broker, for real


class Client:
    """A paho MQTT 5 client that records what it receives and its PUBACK reason codes."""

    def __init__(self, port: int, user: str | None, password: str | None, *, cafile: Path | None = None):
        self.got: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.subacks: list[list[int]] = []
        self.connack: int | None = None
        self.c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{free_port()}", protocol=mqtt.MQTTv5
        )
        if user is not None:
            self.c.username_pw_set(user, password)
        if cafile is not None:
            self.c.tls_set(ca_certs=str(cafile))
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc.value)
        self.c.on_message = lambda c, u, m: self.got.append((m.topic, m.payload))
        self.c.on_publish = lambda c, u, mid, rc, p: self.pubacks.__setitem__(mid, rc.value)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.append([r.value for r in rcs])
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        wait_for(lambda: self.connack is not None, timeout_s=10, what="CONNACK")

    def publish(self, topic: str, payload: bytes) -> int:
        info = self.c.publish(topic, payload, qos=1)
        wait_for(lambda: info.mid in self.pubacks, timeout_s=10, what=f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_installed_broker_acl_keeps_each_device_to_its_own_topics(tmp_path):
    root = tmp_path / "root"
    assert install_into(root, "--debian-packages").returncode == 0
    add_device_user(root, "cam-01", "cam-01-pw")
    add_device_user(root, "cam-02", "cam-02-pw")
    with ShippedBroker(tmp_path / "broker", root) as broker:
        gw = Client(broker.port, "sdgw", gateway_password(root))
        assert gw.connack == 0
        gw.c.subscribe([("vivotek/#", 1), ("sdgw/#", 1)])
        wait_for(lambda: gw.subacks, timeout_s=10, what="SUBACK")
        assert gw.subacks[0] == [1, 1]  # the gateway may read device topics and its own

        cam = Client(broker.port, "cam-01", "cam-01-pw")
        assert cam.publish("vivotek/cam-01/report", b"own") == 0
        denied = {
            "vivotek/cam-02/report": cam.publish("vivotek/cam-02/report", b"spoofed"),
            "sdgw/test-district/test-st/gw-test/status": cam.publish(
                "sdgw/test-district/test-st/gw-test/status", b'{"state": "offline"}'
            ),
        }
        wait_for(lambda: gw.got, timeout_s=10, what="the allowed message")
        assert cam.publish("vivotek/cam-01/report", b"own again") == 0
        wait_for(lambda: len(gw.got) >= 2, timeout_s=10, what="the second allowed message")
        time.sleep(0.3)  # a denied message, had it been routed, would have arrived before this one
        assert gw.got == [("vivotek/cam-01/report", b"own"), ("vivotek/cam-01/report", b"own again")]
        assert set(denied.values()) == {135}, denied  # PUBACK "not authorized" (MQTT 5)
        # a device reads nothing: Mosquitto grants the subscription and then delivers nothing
        cam.c.subscribe("vivotek/#", 1)
        wait_for(lambda: cam.subacks, timeout_s=10, what="device SUBACK")
        other = Client(broker.port, "cam-02", "cam-02-pw")
        assert other.publish("vivotek/cam-02/report", b"cam-02's") == 0
        wait_for(lambda: ("vivotek/cam-02/report", b"cam-02's") in gw.got, timeout_s=10, what="cam-02 at the gateway")
        time.sleep(0.3)
        assert cam.got == []
        other.close()
        cam.close()

        # no anonymous access, no wrong password (2.0.11 answers both with 135 "not authorized")
        assert Client(broker.port, None, None).connack == 135
        assert Client(broker.port, "cam-02", "wrong").connack in (134, 135)

        # the TLS listener with the installed self-signed certificate, verified against it
        tls = Client(broker.tls_port, "cam-02", "cam-02-pw", cafile=broker.cafile)
        assert tls.connack == 0 and tls.publish("vivotek/cam-02/report", b"over tls") == 0
        wait_for(lambda: ("vivotek/cam-02/report", b"over tls") in gw.got, timeout_s=10, what="TLS message")
        tls.close()
        gw.close()


# ---- InfluxDB config and retention


def test_shipped_influxdb_config_starts_and_retention_script_is_idempotent(tmp_path):
    conf = (DEPLOY / "influxdb" / "influxdb.conf").read_text()
    server = InfluxDB1(tmp_path / "influxd")
    for old, new in (
        ("127.0.0.1:8088", f"127.0.0.1:{server.rpc_port}"),
        ("127.0.0.1:8086", f"127.0.0.1:{server.port}"),
        ("/var/lib/influxdb", str(tmp_path / "influxd")),
    ):
        assert old in conf
        conf = conf.replace(old, new)
    server.conf_path.write_text(conf)
    script = DEPLOY / "influxdb" / "retention.sh"
    with server:

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["bash", str(script), "--url", server.url, *args], capture_output=True, text=True, timeout=60
            )

        def policies() -> dict[str, tuple[str, bool]]:
            rows = server.rows('SHOW RETENTION POLICIES ON "sdgw"', "sdgw")
            return {r["name"]: (r["duration"], r["default"]) for r in rows}

        first = run("--database", "sdgw", "--days", "30")
        assert first.returncode == 0, first.stderr
        assert "created" in first.stdout and policies()["sdgw_30d"] == ("720h0m0s", True)
        second = run("--database", "sdgw", "--days", "30")
        assert second.returncode == 0 and "kept" in second.stdout and policies()["sdgw_30d"] == ("720h0m0s", True)
        # a write without a policy lands in the default one
        point = f"m v=1i {time.time_ns()}".encode()
        assert httpx.post(f"{server.url}/write", params={"db": "sdgw"}, content=point).status_code == 204
        assert server.rows('SELECT * FROM "sdgw"."sdgw_30d"."m"', "sdgw")
        shorter = run("--database", "sdgw", "--days", "7")
        assert shorter.returncode == 0 and policies()["sdgw_7d"] == ("168h0m0s", True)
        assert policies()["sdgw_30d"][1] is False
        assert run("--database", 'x"; DROP', "--days", "7").returncode == 2
    down = run("--database", "sdgw", "--wait-s", "1")
    assert down.returncode == 1 and "did not answer /ping" in down.stderr


# ---- udev


def test_udev_rule_generator_names_a_reader_by_serial(tmp_path):
    script = DEPLOY / "udev" / "sdgw-name-port.sh"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)

    ok = run("--name", "door-cards", "--serial", "A10K5XJ2")
    assert ok.returncode == 0
    assert ok.stdout == (
        'SUBSYSTEM=="tty", ENV{ID_BUS}=="usb", ENV{ID_SERIAL_SHORT}=="A10K5XJ2", '
        'SYMLINK+="sdgw/door-cards", GROUP="dialout", MODE="0660"\n'
    )
    assert run("--name", "../etc", "--serial", "X").returncode == 2
    assert run("--name", "ok", "--serial", 'X", RUN+="/bin/sh').returncode == 2
    missing = run("--name", "ok", "--device", str(tmp_path / "ttyUSB9"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    # every example line of the shipped rules file has the generator's shape
    rules = (DEPLOY / "udev" / "99-sdgw-serial.rules").read_text()
    examples = [line.lstrip("# ") for line in rules.splitlines() if "SYMLINK+=" in line]
    assert examples and all(
        re.fullmatch(r'SUBSYSTEM=="tty", .*SYMLINK\+="sdgw/[\w.-]+", GROUP="dialout", MODE="0660"', e) for e in examples
    )


# ---- the district's central stack


def test_central_compose_file_references_what_exists(tmp_path):
    central = DEPLOY / "central"
    doc = yaml.safe_load((central / "compose.yaml").read_text())
    services = doc["services"]
    assert set(services) >= {"influxdb", "grafana", "mosquitto"}
    for name, svc in services.items():
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), f"{name}: pin the image"
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                if "secrets" in source:
                    continue  # made by the district on its host, never committed
                assert (central / source).exists(), f"{name}: {source} does not exist"
    grafana = services["grafana"]
    assert any(v.startswith("../../dashboards/provisioning:/etc/grafana/provisioning") for v in grafana["volumes"])

    # the central broker's config starts, and a gateway's bridge user may write only its own status
    conf = (central / "mosquitto" / "mosquitto.conf").read_text()
    work = tmp_path / "central-broker"
    broker = Mosquitto(work)
    (work / "passwd").write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(work / "passwd"), "gw-01", "pw1"], check=True)
    subprocess.run(["mosquitto_passwd", "-b", str(work / "passwd"), "operator", "pw2"], check=True)
    conf = re.sub(r"^listener 8883.*$", f"listener {broker.port} 127.0.0.1", conf, flags=re.M)
    conf = re.sub(r"^(certfile|keyfile|cafile) .*$", "", conf, flags=re.M)
    conf = conf.replace("/mosquitto/config/passwd", str(work / "passwd"))
    conf = conf.replace("/mosquitto/config/acl", str(central / "mosquitto" / "acl"))
    conf = conf.replace("/mosquitto/data/", f"{work}/data/")
    broker.conf_path.write_text(f"user {os.environ.get('USER', 'root')}\nlog_dest stderr\n" + conf)
    with broker:
        ops = Client(broker.port, "operator", "pw2")
        ops.c.subscribe("sdgw/#", 1)
        wait_for(lambda: ops.subacks, timeout_s=10, what="SUBACK")
        gw = Client(broker.port, "gw-01", "pw1")
        assert gw.publish("sdgw/gulou/zhongshan-rd/gw-01/status", b"on") == 0
        assert gw.publish("sdgw/gulou/zhongshan-rd/gw-02/status", b"spoof") == 135
        wait_for(lambda: ops.got, timeout_s=10, what="the bridged status")
        assert ops.got == [("sdgw/gulou/zhongshan-rd/gw-01/status", b"on")]
        gw.close()
        ops.close()


# ---- watchdog


def test_watchdog_notifier_keeps_quiet_while_the_event_loop_is_stuck(tmp_path):
    """WATCHDOG=1 comes from an asyncio task: a blocked loop sends nothing, so systemd restarts it."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.05)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"})

    def drain() -> list[str]:
        out = []
        while True:
            try:
                out.append(sock.recv(4096).decode())
            except TimeoutError:
                return out

    async def main() -> None:
        feeder = asyncio.create_task(notifier.feed())
        await asyncio.sleep(0.5)
        assert drain().count("WATCHDOG=1") >= 3  # every 0.1 s
        time.sleep(0.5)  # the loop is stuck: no task runs
        stuck = drain()
        assert stuck.count("WATCHDOG=1") <= 1, stuck  # at most the one sent just before
        await asyncio.sleep(0.5)
        assert drain().count("WATCHDOG=1") >= 2  # turning again
        feeder.cancel()

    try:
        asyncio.run(main())
    finally:
        notifier.close()
        sock.close()
    assert SystemdNotifier({}).enabled is False
    assert SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}).watchdog_s is None


@pytest.mark.integration
def test_sdgw_run_sends_ready_and_feeds_the_watchdog(tmp_path, mosquitto, influxdb):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    got: list[tuple[float, str]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            try:
                got.append((time.monotonic(), sock.recv(4096).decode()))
            except TimeoutError:
                continue

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    sink = {"name": "edge", "url": influxdb.url, "dialect": "v1", "database": influxdb.db}
    config = gateway_config(tmp_path, broker_port=mosquitto.port, sinks=[sink], cameras=["cam-1"])
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}  # WatchdogSec=1: a ping every 0.5 s
    try:
        with GatewayProcess(tmp_path / "gw", config, env=env) as gw:
            wait_for(lambda: any(m.startswith("READY=1") for _, m in got), timeout_s=30, what="READY=1")
            ready_at = next(t for t, m in got if m.startswith("READY=1"))
            wait_for(
                lambda: sum(1 for t, m in got if m == "WATCHDOG=1" and t > ready_at) >= 4, timeout_s=10, what="pings"
            )
            pings = [t for t, m in got if m == "WATCHDOG=1"]
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert max(gaps) < 1.0, gaps  # every ping inside the 1 s watchdog: systemd would not kill it
            assert "STATUS=gateway gw-test running" in next(m for _, m in got if m.startswith("READY=1"))
            assert gw.stop() == 0
            wait_for(lambda: any(m == "STOPPING=1" for _, m in got), timeout_s=5, what="STOPPING=1")
    finally:
        stop.set()
        listener.join(5)
        sock.close()
