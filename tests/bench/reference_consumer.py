"""The reference consumer: the obvious script a user would write instead of the gateway.

Stock paho-mqtt 2.x (MQTT 3.1.1, `clean_session=False` with a fixed client id, so a backlog queued
while it was away is delivered when it comes back), QoS 1 with paho's automatic acknowledgements
(the PUBACK leaves when `on_message` returns: no durability), the stdlib `json` module, line
protocol built with an f-string, and a thread that POSTs batches (5,000 lines, or whatever waited
1 s) to InfluxDB 1.x `/write` with httpx, retrying a failed batch. It writes exactly the points the
gateway writes (decisions.md D12): measurement `footfall`, tags device, district, gateway, line,
site, street; integer fields entries, exits, interval_s; time = StartTime.

For the benchmark it prints one JSON line on stdout when connected and one after each batch
InfluxDB accepted (`written`, `received`, wall time `t`): a print per 5,000 points.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from datetime import datetime

import httpx
import paho.mqtt.client as mqtt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--topic", required=True, help="topic filter, e.g. vivotek/+/report (camera = the + level)")
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--influx-url", required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--flush-s", type=float, default=1.0)
    ap.add_argument("--district", default="test-district")
    ap.add_argument("--street", default="test-st")
    ap.add_argument("--gateway", default="gw-test")
    ap.add_argument("--site", default="shop-1")
    args = ap.parse_args()

    device_level = args.topic.split("/").index("+")
    tags = f"district={args.district},gateway={args.gateway}"
    tail = f"site={args.site},street={args.street}"
    buffer: list[str] = []
    lock = threading.Lock()
    received = 0

    def report(**kw) -> None:
        print(json.dumps({"t": time.time(), **kw}), flush=True)

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        client.subscribe(args.topic, qos=1)
        report(event="connected", session_present=bool(flags.session_present))

    def on_message(client, userdata, msg) -> None:
        nonlocal received
        received += 1
        device = msg.topic.split("/")[device_level]
        doc = json.loads(msg.payload)
        lines = []
        for rule in doc["Data"]:
            if rule.get("RuleType") != "Counting":
                continue
            for info in rule["CountingInfo"]:
                start = datetime.fromisoformat(info["StartTime"])
                end = datetime.fromisoformat(info["EndTime"])
                lines.append(
                    f"footfall,device={device},{tags},line={info['RuleName']},{tail} "
                    f"entries={info['In']}i,exits={info['Out']}i,interval_s={int((end - start).total_seconds())}i "
                    f"{int(start.timestamp()) * 1_000_000_000}"
                )
        with lock:
            buffer.extend(lines)

    stop = threading.Event()

    def writer() -> None:
        http = httpx.Client(timeout=30)
        url = f"{args.influx_url}/write"
        written = 0
        last = time.monotonic()
        while True:
            with lock:
                due = len(buffer) >= args.batch or (buffer and time.monotonic() - last >= args.flush_s)
                if due:
                    batch = buffer[: args.batch]
                    del buffer[: args.batch]
            if not due:
                if stop.is_set():
                    return
                time.sleep(0.01)
                continue
            body = "\n".join(batch).encode()
            while True:
                try:
                    r = http.post(url, params={"db": args.db}, content=body)
                    if r.status_code == 204:
                        break
                    print(f"write failed: {r.status_code} {r.text[:200]}", file=sys.stderr, flush=True)
                except httpx.HTTPError as exc:
                    print(f"write failed: {exc}", file=sys.stderr, flush=True)
                time.sleep(1)
            written += len(batch)
            last = time.monotonic()
            report(written=written, received=received)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, clean_session=False, protocol=mqtt.MQTTv311
    )
    client.on_connect = on_connect
    client.on_message = on_message
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_forever()
    stop.set()
    thread.join(30)


if __name__ == "__main__":
    main()
