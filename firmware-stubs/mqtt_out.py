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
