"""One load-generating publisher process for the benchmark: VIVOTEK reports with paho-mqtt, QoS 1.

It builds its messages first (firmware-stubs/vivotek_counter.py `Street`), connects, prints `ready`,
and waits for a line on stdin, so that several publishers start together. Then it publishes — paced
at `--rate` msg/s, or as fast as the broker acknowledges with 0 — until all are sent or a second
stdin line (`stop`) arrives, waits for every PUBACK, and prints one JSON line: how many were
published and acknowledged, first/last publish wall time, and the ground truth of what it
published (the emulator's own totals when it published everything; otherwise the totals of the
published prefix, summed from the payloads it built). `--lazy` builds each message just before
publishing it instead (long paced runs). With `--times FILE` it writes the wall time (float64
seconds) at which each report was handed to `publish()`, in order, for the latency figure.

The loop is `vivotek_counter.publish_all`'s (same client settings: MQTT 3.1.1, 1,000 in flight),
with the timestamps and the stop signal added, and at most 50,000 publishes awaiting their PUBACK:
past 65,535 outstanding, paho's message ids collide and it refuses to queue (ERR_QUEUE_SIZE), which
`publish_all` also meets for one process publishing more than that as fast as it can.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from array import array
from collections import Counter
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware-stubs"))

from vivotek_counter import Street  # noqa: E402

WINDOW = 50_000  # at most this many publishes awaiting their PUBACK


def prefix_truth(messages: list[tuple[str, bytes]], n: int, camera_level: int) -> Counter:
    truth: Counter = Counter()
    for topic, payload in messages[:n]:
        camera = topic.split("/")[camera_level]
        for rule in orjson.loads(payload)["Data"]:
            for info in rule["CountingInfo"]:
                truth[(camera, info["RuleName"], "in")] += info["In"]
                truth[(camera, info["RuleName"], "out")] += info["Out"]
    return truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cameras", required=True, help="comma-separated camera ids")
    ap.add_argument("--topic-template", required=True, help="with {camera} as one whole level")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0, help="msg/s, 0 = as fast as acknowledged")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--interval-s", type=int, default=60)
    ap.add_argument("--rules", default="Counting1")
    ap.add_argument("--client-id", default="")
    ap.add_argument("--times", type=Path)
    ap.add_argument("--lazy", action="store_true", help="build each message just before publishing it")
    args = ap.parse_args()

    street = Street(
        cameras=args.cameras.split(","),
        topic_template=args.topic_template,
        rules=tuple(args.rules.split(",")),
        interval_s=args.interval_s,
        seed=args.seed,
    )
    # Built up front (fast runs), or one by one (--lazy: long paced runs stopped from stdin, where
    # every message built is published, so the emulator's own truth stays exact).
    messages = street.messages(args.count) if args.lazy else list(street.messages(args.count))
    stamps = array("d")
    stop = threading.Event()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", args.port, keepalive=30)
    client.loop_start()
    print("ready", flush=True)
    sys.stdin.readline()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()

    t0 = time.time()
    infos = []
    now = time.time
    publish = client.publish
    rate = args.rate
    source = iter(messages)
    n = 0
    while not stop.is_set():
        item = next(source, None)
        if item is None:
            break
        topic, payload = item
        n += 1
        if n > WINDOW and n % 1000 == 0:  # paho's message ids would wrap past 65,535 outstanding
            infos[n - WINDOW].wait_for_publish(timeout=120)
        stamps.append(now())
        infos.append(publish(topic, payload, qos=1))
        if rate > 0:
            delay = t0 + n / rate - now()
            if delay > 0:
                time.sleep(delay)
    t_published = time.time()
    for info in infos:
        info.wait_for_publish(timeout=120)
    acked = sum(1 for i in infos if i.is_published())
    t_acked = time.time()
    client.loop_stop()
    client.disconnect()

    if args.times is not None:
        args.times.write_bytes(stamps.tobytes())
    published = len(infos)
    if args.lazy or published == len(messages):
        truth = street.truth
    else:
        camera_level = args.topic_template.split("/").index("{camera}")
        truth = prefix_truth(messages, published, camera_level)
    out = {
        "published": published,
        "acked": acked,
        "t_start": t0,
        "t_first": stamps[0] if stamps else t0,
        "t_last": stamps[-1] if stamps else t0,
        "t_published": t_published,
        "t_acked": t_acked,
        "truth": [[*k, v] for k, v in truth.items()],
    }
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
