"""`sdgw doctor` against real parts: the broker as install.sh installs it (password file, ACL),
influxd, an M100 reader emulator on a pty, a pty that talks garbage, a port that is not there.
Every failure names its fix; the exit code says whether anything failed."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from m100_reader import M100Reader

from gateway.doctor import Status, run_doctor
from gateway.doctor.mosquitto_acl import covers, readable
from gateway.localservers import free_port
from tests.harness import ROOT
from tests.shipped_broker import ShippedBroker, install_into

pytestmark = pytest.mark.integration

EPCS = ["3074257BF7194E4000001A85"]


def write_config(
    tmp_path: Path,
    *,
    broker_port: int,
    password_file: Path,
    influx_url: str,
    database: str,
    serial_port: Path | None = None,
    topic: str = "vivotek/cam-01/report",
    extra: str = "",
    sync_check: str = "assume-synced",
) -> Path:
    text = f"""
[gateway]
district = "d1"
street = "s1"
id = "gw-01"
data_dir = "{tmp_path / "data"}"
[clock]
sync_check = "{sync_check}"
flag_file = "{tmp_path / "synced-flag"}"
[mqtt]
host = "127.0.0.1"
port = {broker_port}
username = "sdgw"
password_file = "{password_file}"
[[sinks]]
name = "edge"
url = "{influx_url}"
database = "{database}"
[[sites]]
id = "shop-1"
[[devices]]
id = "cam-01"
model = "vivotek-sc8131"
site = "shop-1"
topic = "{topic}"
"""
    if serial_port is not None:
        text += f"""
[[devices]]
id = "shelf-1"
model = "m100"
site = "shop-1"
transport = "serial"
port = "{serial_port}"
"""
    (tmp_path / "data").mkdir(exist_ok=True)
    path = tmp_path / "gateway.toml"
    path.write_text(text + extra)
    return path


@pytest.fixture
def installed(tmp_path):
    root = tmp_path / "root"
    assert install_into(root, "--debian-packages").returncode == 0
    with ShippedBroker(tmp_path / "broker", root) as broker:
        broker.install_root = root
        yield broker


def by_name(checks) -> dict[str, object]:
    return {c.name: c for c in checks}


def doctor_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "doctor", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_doctor_all_pass_against_real_broker_influxdb_and_reader(tmp_path, installed, influxdb):
    root = installed.install_root
    (tmp_path / "by-id").mkdir()
    link = tmp_path / "by-id" / "m100"
    config = write_config(
        tmp_path,
        broker_port=installed.port,
        password_file=root / "etc/sdgw/credentials/mqtt-password",
        influx_url=influxdb.url,
        database=influxdb.db,
        serial_port=link,
    )
    acl = root / "etc/mosquitto/sdgw/acl"
    with M100Reader(link, EPCS, rate_hz=10, arrive_p=1.0, depart_p=0.0):
        result = doctor_cli("-c", str(config), "--mosquitto-acl", str(acl), "--serial-wait-s", "8")
        assert result.returncode == 0, result.stdout + result.stderr
        table = result.stdout
        for name in (
            "config",
            "serial shelf-1: port",
            "serial shelf-1: data",
            "broker: connect",
            "broker: login",
            "broker: subscriptions",
            "broker: acl file",
            "sink edge: reachable",
            "sink edge: write",
            "clock: synchronised",
            "clock: skew",
            "disk: log",
        ):
            assert any(line.startswith(name) and " PASS " in line for line in table.splitlines()), (name, table)
        assert "all checks passed" in table
        assert "decoded as m100" in table
        for epc in EPCS:  # counts only, never a tag
            assert epc not in table

        as_json = doctor_cli("-c", str(config), "--mosquitto-acl", str(acl), "--json", "--serial-wait-s", "8")
        assert as_json.returncode == 0
        doc = json.loads(as_json.stdout)
        assert {d["status"] for d in doc} == {"pass"} and {"name", "status", "detail", "fix"} <= set(doc[0])
    # the empty write stored nothing
    assert influxdb.rows("SHOW MEASUREMENTS", influxdb.db) == []


def test_doctor_reports_a_wrong_broker_password_with_its_fix(tmp_path, installed, influxdb):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    config = write_config(
        tmp_path, broker_port=installed.port, password_file=wrong, influx_url=influxdb.url, database=influxdb.db
    )
    result = doctor_cli("-c", str(config), "--mosquitto-acl", "none")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    login = next(i for i, line in enumerate(lines) if line.startswith("broker: login"))
    assert " FAIL " in lines[login] and "refused user sdgw" in lines[login]
    assert "fix:" in lines[login + 1] and "mosquitto_passwd" in result.stdout
    assert "not-the-password" not in result.stdout  # never print a secret


def test_doctor_finds_a_device_topic_the_acl_does_not_let_the_gateway_read(tmp_path, installed, influxdb):
    root = installed.install_root
    config = write_config(
        tmp_path,
        broker_port=installed.port,
        password_file=root / "etc/sdgw/credentials/mqtt-password",
        influx_url=influxdb.url,
        database=influxdb.db,
        topic="counters-cam-01",  # one level: outside the shipped ACL's +/+/# for user sdgw
    )
    checks = by_name(run_doctor(config, serial_wait_s=1, acl_file=root / "etc/mosquitto/sdgw/acl"))
    # Mosquitto grants the SUBSCRIBE (its acl_file filters at delivery): only the ACL check sees it
    assert checks["broker: subscriptions"].status is Status.PASS
    acl = checks["broker: acl file"]
    assert acl.status is Status.FAIL and "counters-cam-01" in acl.detail
    assert "topic read" in acl.fix and "reload mosquitto" in acl.fix


def test_doctor_reports_a_missing_database_and_an_unreachable_broker(tmp_path, influxdb):
    password = tmp_path / "pw"
    password.write_text("x")
    config = write_config(
        tmp_path, broker_port=free_port(), password_file=password, influx_url=influxdb.url, database="no_such_db"
    )
    checks = by_name(run_doctor(config, serial_wait_s=1, acl_file=None))
    write = checks["sink edge: write"]
    assert write.status is Status.FAIL and "database not found" in write.detail
    assert "sdgw-influx-retention" in write.fix and "no_such_db" in write.fix
    assert checks["sink edge: reachable"].status is Status.PASS
    connect = checks["broker: connect"]
    assert (
        connect.status is Status.FAIL
        and "cannot reach" in connect.detail
        and "systemctl status mosquitto" in connect.fix
    )
    assert "broker: login" not in checks  # nothing to log in to


def test_doctor_serial_port_missing_and_port_talking_garbage(tmp_path, influxdb):
    password = tmp_path / "pw"
    password.write_text("x")
    missing = write_config(
        tmp_path,
        broker_port=free_port(),
        password_file=password,
        influx_url=influxdb.url,
        database=influxdb.db,
        serial_port=tmp_path / "by-id" / "gone",
    )
    port = by_name(run_doctor(missing, serial_wait_s=1, acl_file=None))["serial shelf-1: port"]
    assert port.status is Status.FAIL and "does not exist" in port.detail and "udev" in port.fix

    # a pty whose other end sends bytes that are no M100 frame (e.g. a reader at another baud rate)
    master, slave = os.openpty()
    os.set_blocking(master, False)
    stop = threading.Event()

    def babble() -> None:
        while not stop.wait(0.05):
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(master, b"\x13\x37garbage\xfe\xfe\x00")

    talker = threading.Thread(target=babble, daemon=True)
    talker.start()
    try:
        garbage = write_config(
            tmp_path,
            broker_port=free_port(),
            password_file=password,
            influx_url=influxdb.url,
            database=influxdb.db,
            serial_port=Path(os.ttyname(slave)),
        )
        checks = by_name(run_doctor(garbage, serial_wait_s=1.5, acl_file=None))
    finally:
        stop.set()
        talker.join(5)
        os.close(master)
        os.close(slave)
    assert checks["serial shelf-1: port"].status is Status.PASS
    data = checks["serial shelf-1: data"]
    assert data.status is Status.FAIL and "no frame decodes as m100" in data.detail
    assert "baudrate" in data.fix and "115200" in data.fix


def test_doctor_config_clock_and_disk_failures(tmp_path, influxdb):
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\ndistrict = "d"\nstreet = "s"\n')
    result = doctor_cli("-c", str(bad))
    assert result.returncode == 1 and "config" in result.stdout and "gateway.id: expected this key" in result.stdout
    assert "fix: edit" in result.stdout

    password = tmp_path / "pw"
    password.write_text("x")
    config = write_config(
        tmp_path,
        broker_port=free_port(),
        password_file=password,
        influx_url=influxdb.url,
        database=influxdb.db,
        sync_check="flag-file",
        extra="[log]\ncap_bytes = 1125899906842624\n",  # 1 PiB: more than this disk holds
    )
    checks = by_name(run_doctor(config, serial_wait_s=1, acl_file=None))
    clock = checks["clock: synchronised"]
    assert clock.status is Status.FAIL and "absent" in clock.detail and "timedatectl" in clock.fix
    assert checks["clock: skew"].status is Status.PASS  # against influxd's Date header
    disk = checks["disk: log"]
    assert disk.status is Status.FAIL and "cap_bytes" in disk.fix
    (tmp_path / "synced-flag").touch()
    assert by_name(run_doctor(config, serial_wait_s=1, acl_file=None))["clock: synchronised"].status is Status.PASS


def test_mosquitto_acl_rules_as_mosquitto_reads_them():
    acl = (ROOT / "deploy" / "mosquitto" / "acl").read_text()
    assert readable(acl, "sdgw", "vivotek/cam-01/report")
    assert readable(acl, "sdgw", "vivotek/+/report") and readable(acl, "sdgw", "sdgw/d/s/gw/status")
    assert not readable(acl, "sdgw", "lonely") and not readable(acl, "sdgw", "#")
    assert not readable(acl, "cam-01", "vivotek/cam-01/report")  # devices write, never read
    assert not readable(acl, None, "vivotek/cam-01/report")
    assert covers("a/+/#", "a/b/c/d") and covers("a/#", "a") and not covers("a/+", "a/#")
    assert readable("user u\ntopic read a/#\ntopic deny a/secret\n", "u", "a/b")
    assert not readable("user u\ntopic read a/#\ntopic deny a/secret\n", "u", "a/+")


def test_doctor_names_who_holds_a_busy_port(tmp_path, influxdb):
    """A port held by the running gateway is not a failure (skipped, pointing at its status page); a
    port held by anything else fails and names the holder (on a Pi: ModemManager)."""
    import signal

    from tests.harness import GatewayProcess, wait_for

    password = tmp_path / "pw"
    password.write_text("x")
    link = tmp_path / "by-id" / "usb-M100-if00-port0"
    link.parent.mkdir()
    with M100Reader(link, EPCS, rate_hz=10, arrive_p=1.0, depart_p=0.0):
        config = write_config(
            tmp_path,
            broker_port=free_port(),
            password_file=password,
            influx_url=influxdb.url,
            database=influxdb.db,
            serial_port=link,
            extra="[api]\nenabled = false\n",
        )
        with GatewayProcess(tmp_path / "gw", config.read_text()) as gw:
            wait_for(lambda: "open (after" in gw.log_text(), timeout_s=30, what="the gateway holding the port")
            check = by_name(run_doctor(config, serial_wait_s=1, acl_file=None))["serial shelf-1: port"]
            assert check.status is Status.SKIP, check
            assert f"running gateway (pid {gw.proc.pid})" in check.detail and "status page" in check.detail

        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY); "
                "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
                str(link),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
            check = by_name(run_doctor(config, serial_wait_s=1, acl_file=None))["serial shelf-1: port"]
        finally:
            holder.send_signal(signal.SIGTERM)
            holder.wait(10)
        assert check.status is Status.FAIL
        assert f"held by pid {holder.pid}" in check.detail and "ModemManager" in check.fix
