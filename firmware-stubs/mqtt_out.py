"""What every MQTT emulator publishes with: paho-mqtt 2.x (what real devices use), QoS 1, paced.

Keeps at most `window` messages unacknowledged: paho refuses to queue past 65,535 in flight
(`ERR_QUEUE_SIZE`), and a bounded window keeps the emulator's own memory flat on long runs."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator


def publish_all(
    host: str,
    port: int,
    messages: Iterator[tuple[str, bytes]],
    *,
    rate: float = 0.0,
    qos: int = 1,
    client_id: str = "",
    stop: threading.Event | None = None,
    window: int = 50_000,
) -> int:
    """Publish every (topic, payload), paced at `rate` msg/s (0 = as fast as the broker takes
    them). Returns how many the broker acknowledged."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    pending: deque = deque()
    acked = sent = 0
    t0 = time.monotonic()
    try:
        for topic, payload in messages:
            if stop is not None and stop.is_set():
                break
            while len(pending) >= window:
                info = pending.popleft()
                info.wait_for_publish(timeout=60)
                acked += info.is_published()
            pending.append(client.publish(topic, payload, qos=qos))
            sent += 1
            if rate > 0 and (delay := t0 + sent / rate - time.monotonic()) > 0:
                time.sleep(delay)
        for info in pending:
            info.wait_for_publish(timeout=60)
            acked += info.is_published()
        return acked
    finally:
        client.loop_stop()
        client.disconnect()


def add_broker_args(ap, *, interval_s: int, rate: float = 2.0) -> None:
    """The options every MQTT counter emulator takes: broker, pace, count, interval, live start."""
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--rate", type=float, default=rate, help="reports per second (0 = as fast as possible)")
    ap.add_argument("--count", type=int, default=0, help="reports to send (0 = until stopped)")
    ap.add_argument("--interval-s", type=int, default=interval_s)
    ap.add_argument("--live", action="store_true", help="start at the current interval instead of a fixed date")


def run_street(args, street) -> int:
    """Publish `street.messages` as the options say (a --live street starts at the current interval);
    the count the broker acknowledged, or -1 when interrupted."""
    if args.live:
        now = int(time.time())
        street.start_s = now - now % args.interval_s
    try:
        return publish_all(args.host, args.port, street.messages(args.count or 10**12), rate=args.rate)
    except KeyboardInterrupt:
        return -1


def counting_summary(street, acked: int) -> dict:
    """What a cumulative-counter emulator prints at the end: ground truth beside what is countable."""
    return {
        "reports": street.reports,
        "acked": acked,
        "truth": {"/".join(k): v for k, v in street.truth.items()},
        "countable": {"/".join(k): v for k, v in street.countable.items()},
        "ambiguous": street.totals.ambiguous,
    }
