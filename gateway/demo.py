"""`make demo`: a small simulated street on this machine.

Starts Mosquitto and InfluxDB (Debian's binaries, our configs, loopback ports, state in .demo/), the
device emulators of one shopping street — people counters in four styles (VIVOTEK over MQTT and over
HTTP push, a Milesight LoRaWAN counter through its LNS, two Modbus RTU counters on one RS-485 line),
a UHF shelf reader and a loyalty-card reader on pseudo-terminals, two parcel-locker banks (8A/80 lock
boards on RS-485, an Open-Locker MQTT bank) — and the gateway with its API and status page; prints
where to look, keys, and curl lines that work as printed. Ctrl-C stops everything it started, by PID.

    python -m gateway.demo [--dir .demo] [--exit-after SECONDS]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.config import load_config
from gateway.keys import KeyStore
from gateway.localservers import InfluxDB1, Mosquitto, free_port
from gateway.privacy import make_key_file

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "firmware-stubs"
ZONE = "Asia/Shanghai"
HTTP_CAMERA_PASSWORD = "demo-camera-password"  # a throwaway secret for the emulated camera


def demo_config(d: Path, broker_port: int, influx_url: str, api_port: int) -> str:
    dev = d / "dev"
    return f"""# written by `make demo`: one simulated shopping street
[gateway]
district = "demo-district"
street = "demo-street"
id = "gw-demo"
timezone = "{ZONE}"
data_dir = "{d / "gateway"}"

[clock]
sync_check = "assume-synced"   # the demo machine's clock is taken as good

[mqtt]
host = "127.0.0.1"
port = {broker_port}

[[sinks]]
name = "edge"
url = "{influx_url}"
database = "sdgw"
flush_interval_s = 0.25

[status]
heartbeat_s = 10

[api]
host = "127.0.0.1"
port = {api_port}

[privacy]
key_file = "{d / "pseudonym-keys.json"}"

[lockers]
door_left_open_s = 60
open_confirm_timeout_s = 5   # generous: the demo shares a small machine with all its emulators

[[sites]]
id = "shop-1"
name = "Tea house"
merchant = "m-1"
hours = "09:00-22:00"
[[sites]]
id = "shop-2"
name = "Noodle bar"
merchant = "m-2"
hours = "07:00-21:00"
[[sites]]
id = "shop-3"
name = "Bakery"
merchant = "m-3"
hours = "07:00-20:00"
[[sites]]
id = "shop-4"
name = "Bookshop"
merchant = "m-4"
hours = "10:00-22:00"
[[sites]]
id = "shop-5"
name = "Pharmacy"
merchant = "m-5"
[[sites]]
id = "north-gate"
name = "North entrance"
kind = "entrance"

[[devices]]
id = "cam-01"
model = "vivotek-sc8131"
site = "shop-1"
topic = "vivotek/cam-01/report"
[[devices]]
id = "cam-02"
model = "vivotek-sc8131"
site = "shop-2"
topic = "vivotek/cam-02/report"
lines = {{ "Counting2" = "north-gate" }}
[[devices]]
id = "http-cam-01"
model = "vivotek-sc8131"
site = "shop-3"
transport = "http"
http_password_file = "{d / "camera-password"}"
[[devices]]
id = "ms-01"
model = "milesight-vs133"
site = "north-gate"
topic = "application/street/device/24e1240000000000/event/up"
[[devices]]
id = "door-a"
model = "modbus-rtu-counter"
site = "shop-4"
transport = "serial"
port = "{dev / "rs485-counters"}"
address = 1
poll_interval_s = 2
registers = {{ width_bits = 16, lines = [{{ line = "line_1", in = 0, out = 1 }}] }}
[[devices]]
id = "door-b"
model = "modbus-rtu-counter"
site = "shop-5"
transport = "serial"
port = "{dev / "rs485-counters"}"
address = 2
poll_interval_s = 2
registers = {{ width_bits = 16, lines = [{{ line = "line_1", in = 0, out = 1 }}] }}
[[devices]]
id = "shelf-1"
model = "m100"
site = "shop-1"
transport = "serial"
port = "{dev / "uhf-shelf-1"}"
[[devices]]
id = "loyalty-1"
model = "rdm6300"
site = "shop-2"
transport = "serial"
port = "{dev / "card-reader-1"}"
[[devices]]
id = "lockers-1"
model = "lock8a-rs485"
transport = "serial"
port = "{dev / "by-id" / "usb-SDGW_Lock8A_lockers-1-if00-port0"}"
locker = {{ bank = "bank-1", boards = [1] }}
[[devices]]
id = "lockers-2"
model = "open-locker-mqtt"
topic = "locker/bank-2/#"
locker = {{ bank = "bank-2", compartments = 12 }}
"""


def emulators(d: Path, broker_port: int, api: str) -> list[tuple[str, list[str]]]:
    dev, mqtt = d / "dev", ("--port", str(broker_port))

    def stub(script: str, *args: str) -> list[str]:
        return [sys.executable, str(STUBS / script), *args]

    live = ("--live", "--interval-s", "60")
    return [
        (
            "vivotek-mqtt",
            stub(
                "vivotek_counter.py",
                *mqtt,
                "--cameras",
                "2",
                *live,
                "--rate",
                str(2 / 60),
                "--backfill-h",
                "24",
                "--max-per-interval",
                "4",
            ),
        ),
        (
            "vivotek-http",
            stub(
                "vivotek_counter.py",
                "--http",
                api,
                "--password",
                HTTP_CAMERA_PASSWORD,
                "--camera-prefix",
                "http-cam-",
                "--cameras",
                "1",
                *live,
                "--rate",
                str(1 / 60),
                "--backfill-h",
                "24",
                "--max-per-interval",
                "4",
            ),
        ),
        (
            "milesight",
            stub(
                "milesight_counter.py",
                *mqtt,
                "--model",
                "vs133",
                "--devices",
                "1",
                "--lines",
                "1",
                *live,
                "--rate",
                str(1 / 60),
            ),
        ),
        ("modbus", stub("modbus_counter.py", "--link", str(dev / "rs485-counters"), "--units", "2", "--rate", "0.3")),
        (
            "uhf-shelf",
            stub(
                "m100_reader.py",
                "--link",
                str(dev / "uhf-shelf-1"),
                "--tags",
                "30",
                "--rate",
                "10",
                "--arrive-p",
                "0.01",
                "--depart-p",
                "0.002",
            ),
        ),
        (
            "card-reader",
            stub(
                "rdm6300_reader.py",
                "--link",
                str(dev / "card-reader-1"),
                "--tags",
                "20",
                "--arrive-p",
                "0.003",
                "--depart-p",
                "0.05",
            ),
        ),
        (
            "lockers-rs485",
            stub(
                "lock8a_bank.py",
                "--links",
                str(dev),
                "--name",
                "lockers-1",
                "--scenario",
                "demo",
                "--duration",
                "86400",
            ),
        ),
        (
            "lockers-mqtt",
            stub(
                "locker_mqtt_bank.py",
                *mqtt,
                "--uuid",
                "bank-2",
                "--compartments",
                "12",
                "--interval",
                "20",
                "--duration",
                "86400",
            ),
        ),
    ]


def _wait_http(url: str, log: Path, timeout_s: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    print(f"demo: {url} did not answer within {timeout_s}s; see {log}", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=ROOT / ".demo", help="state and logs (default .demo/)")
    ap.add_argument("--exit-after", type=float, default=0.0, help="stop after this many seconds (0: at Ctrl-C)")
    args = ap.parse_args(argv)
    d = args.dir.resolve()
    (d / "dev").mkdir(parents=True, exist_ok=True)
    procs: list[tuple[str, subprocess.Popen]] = []
    broker = Mosquitto(d / "mosquitto")
    influx = InfluxDB1(d / "influxdb")
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def spawn(name: str, cmd: list[str]) -> None:
        log = open(d / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)))
        log.close()

    try:
        broker.start()
        influx.start()
        influx.create_database("sdgw")
        today = datetime.now(ZoneInfo(ZONE)).replace(hour=0, minute=0, second=0, microsecond=0)
        (d / "pseudonym-keys.json").write_bytes(make_key_file(os.urandom(32), today, 2))
        (d / "camera-password").write_text(HTTP_CAMERA_PASSWORD + "\n")
        cfg_path = d / "gateway.toml"
        api_port = free_port()
        cfg_path.write_text(demo_config(d, broker.port, influx.url, api_port))
        cfg = load_config(cfg_path)
        keys = KeyStore(cfg.api_key_file, sites=[s.id for s in cfg.sites])
        _, operator_key = keys.create("operator", label="demo operator")
        _, merchant_key = keys.create("merchant", ["shop-1"], label="demo merchant (shop-1)")
        api = f"http://127.0.0.1:{api_port}"
        # serial emulators first: their pseudo-terminals exist when the gateway opens them
        for name, cmd in emulators(d, broker.port, api):
            if name in ("modbus", "uhf-shelf", "card-reader", "lockers-rs485"):
                spawn(name, cmd)
        spawn("gateway", [sys.executable, "-m", "gateway.cli", "run", "-c", str(cfg_path)])
        _wait_http(f"{api}/v1/health", d / "gateway.log")
        for name, cmd in emulators(d, broker.port, api):
            if name not in ("modbus", "uhf-shelf", "card-reader", "lockers-rs485"):
                spawn(name, cmd)
        day = today.date().isoformat()
        open_url = f"{api}/v1/lockers/bank-1/compartments/5/open"
        op = f'-H "Authorization: Bearer {operator_key}"'
        me = f'-H "Authorization: Bearer {merchant_key}"'
        print(
            f"""
Smart District Gateway demo — a simulated shopping street is running.

  API              {api}   (OpenAPI: {api}/docs, {api}/openapi.json)
  status page      {api}/status   (the technician's view: devices, serial ports, broker, sinks, log)
  operator key     {operator_key}
  merchant key     {merchant_key}   (site shop-1 only)
  MQTT broker      127.0.0.1:{broker.port}   (mosquitto_sub -p {broker.port} -t '#' -v)
  InfluxDB         {influx.url}   database "sdgw"
  gateway config   {cfg_path}
  logs             {d}/*.log

The merchant of shop-1 (the last 24 h were back-filled; the counters then report every minute):
  curl -s {me} {api}/v1/sites
  curl -s {me} "{api}/v1/footfall?site=shop-1&interval=1h"
  curl -s {me} "{api}/v1/footfall?site=shop-1&interval=15m&format=csv"
  curl -s {me} "{api}/v1/occupancy?site=shop-1"
  curl -s {me} "{api}/v1/footfall?site=shop-2"          # another merchant's site: 404, like an unknown one
Open data (no key):
  curl -s "{api}/v1/open/footfall?street=demo-street&date={day}"
The operator:
  curl -s {op} {api}/v1/gateways
  curl -s {op} {api}/v1/lockers
  curl -s {op} {api}/v1/lockers/bank-1
  curl -s {op} -X POST -H "Idempotency-Key: demo-1" --json '{{"reason": "demo"}}' {open_url}
  curl -s {op} {api}/v1/rfid/readers/shelf-1/present
  curl -s {api}/v1/health
  curl -s {op} {api}/metrics | grep sdgw_serial_poll
The technician:
  .venv/bin/sdgw doctor -c {cfg_path}   # ports the running gateway holds are skipped, not probed
  .venv/bin/sdgw buffer stats -c {cfg_path}

Ctrl-C stops everything the demo started.
""",
            flush=True,
        )
        deadline = time.monotonic() + args.exit_after if args.exit_after else float("inf")
        while not stopping and time.monotonic() < deadline:
            for name, p in procs:
                if p.poll() is not None and name == "gateway":
                    print(f"demo: the gateway exited with {p.returncode}; see {d}/gateway.log", flush=True)
                    stopping = True
            time.sleep(0.5)
    finally:
        for _, p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for _, p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        influx.stop()
        broker.stop()
        print("demo stopped", flush=True)


if __name__ == "__main__":
    main()
