"""`make demo`: a small simulated street on this machine.

Starts Mosquitto and InfluxDB (Debian's binaries, our configs, loopback ports, state in .demo/),
VIVOTEK counter emulators publishing over MQTT, and the gateway; prints where to look. Ctrl-C stops
everything it started, by PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gateway.config import load_config
from gateway.keys import KeyStore
from gateway.localservers import InfluxDB1, Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
CAMERAS = ["cam-01", "cam-02", "cam-03"]


def demo_config(broker_port: int, influx_url: str, api_port: int) -> str:
    devices = "\n".join(
        f'[[devices]]\nid = "{cam}"\nmodel = "vivotek-sc8131"\nsite = "shop-{i + 1}"\ntopic = "vivotek/{cam}/report"\n'
        for i, cam in enumerate(CAMERAS)
    )
    sites = "\n".join(f'[[sites]]\nid = "shop-{i + 1}"\nmerchant = "m-{i + 1}"\n' for i in range(len(CAMERAS)))
    return f"""# written by `make demo`
[gateway]
district = "demo-district"
street = "demo-street"
id = "gw-demo"
data_dir = "{DEMO / "gateway"}"

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

{sites}
{devices}"""


def _wait_http(url: str, timeout_s: float = 30) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    print(f"demo: {url} did not answer within {timeout_s}s; see {DEMO}/gateway.log", flush=True)


def main() -> None:
    DEMO.mkdir(exist_ok=True)
    procs: list[subprocess.Popen] = []
    broker = Mosquitto(DEMO / "mosquitto")
    influx = InfluxDB1(DEMO / "influxdb")
    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        broker.start()
        influx.start()
        influx.create_database("sdgw")
        cfg_path = DEMO / "gateway.toml"
        api_port = free_port()
        cfg_path.write_text(demo_config(broker.port, influx.url, api_port))
        cfg = load_config(cfg_path)
        keys = KeyStore(cfg.api_key_file, sites=[s.id for s in cfg.sites])
        _, operator_key = keys.create("operator", label="demo operator")
        _, merchant_key = keys.create("merchant", ["shop-1"], label="demo merchant (shop-1)")
        api = f"http://127.0.0.1:{api_port}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        gw_log = open(DEMO / "gateway.log", "ab")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "run", "-c", str(cfg_path)],
                stdout=gw_log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        )
        emu_log = open(DEMO / "emulators.log", "ab")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "firmware-stubs" / "vivotek_counter.py"),
                    "--port",
                    str(broker.port),
                    "--cameras",
                    str(len(CAMERAS)),
                    "--rate",
                    "3",
                    "--interval-s",
                    "60",
                    "--live",
                ],
                stdout=emu_log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        )
        query = "SELECT sum(entries) AS entries, sum(exits) AS exits FROM footfall GROUP BY device"
        _wait_http(f"{api}/v1/health")
        print(
            f"""
Smart District Gateway demo — a simulated street is running.

  API              {api}   (OpenAPI: {api}/docs, {api}/openapi.json)
  operator key     {operator_key}
  merchant key     {merchant_key}   (site shop-1 only)
  MQTT broker      127.0.0.1:{broker.port}   (mosquitto_sub -p {broker.port} -t 'vivotek/#' -v)
  InfluxDB         {influx.url}   database "sdgw"
  gateway config   {cfg_path}
  gateway log      {DEMO / "gateway.log"}

Try the API (gateways of the district, from InfluxDB; health; metrics):
  curl -s -H "Authorization: Bearer {operator_key}" {api}/v1/gateways
  curl -s {api}/v1/health
  curl -s -H "Authorization: Bearer {operator_key}" {api}/metrics | grep sdgw_source
See the points arrive:
  curl -sG {influx.url}/query --data-urlencode db=sdgw --data-urlencode "q={query}"
Log depth, dead letters, records waiting for a clock:
  .venv/bin/sdgw buffer stats -c {cfg_path}

Ctrl-C stops everything the demo started.
""",
            flush=True,
        )
        while not stopping:
            for p in procs:
                if p.poll() is not None:
                    print(
                        f"demo: {p.args[2] if len(p.args) > 2 else p.args} exited with {p.returncode}; "
                        f"see {DEMO}/*.log",
                        flush=True,
                    )
                    stopping = True
            time.sleep(0.5)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        influx.stop()
        broker.stop()
        print("demo stopped", flush=True)


if __name__ == "__main__":
    main()
