"""Emulator: AXIS People Counter cameras publishing their live-sum.json document over MQTT.

Each camera holds running in/out totals (device-protocols.md §4.3) that restart at the camera's local
midnight and at a reboot, and publishes `{"serial", "name", "timestamp", "in", "out"}` every poll
interval, `timestamp` being camera-local `YYYYMMDDhhmmss` without a zone (the gateway's poller would
GET it; here the document goes straight to the broker). Knobs: cameras, interval, local UTC offset,
midnight resets, reboots, duplicates (the same document again), stale re-deliveries (an older one
later), garbage. Ground truth (counter_truth.py): every crossing and what a gateway can count.

Run: python firmware-stubs/axis_counter.py --port 1883 --cameras 2 --rate 5 --count 0
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from counter_truth import CumulativeTruth
from mqtt_out import add_broker_args, counting_summary, run_street


@dataclass
class Street:
    cameras: list[str]
    topic_template: str = "axis/{camera}/live-sum"
    interval_s: int = 60
    start_s: int = 1_710_000_000
    utc_offset_h: float = 8.0
    midnight_reset: bool = True
    reboot_ratio: float = 0.0
    duplicate_ratio: float = 0.0
    stale_ratio: float = 0.0
    garbage_ratio: float = 0.0
    max_per_interval: int = 20
    seed: int = 1
    totals: CumulativeTruth = field(default_factory=CumulativeTruth)
    reports: int = 0
    sent: int = 0

    @property
    def truth(self):
        return self.totals.truth

    @property
    def countable(self):
        return self.totals.countable

    def line(self, camera: str) -> str:
        return f"Entrance {camera}"

    def topic(self, camera: str) -> str:
        return self.topic_template.format(camera=camera)

    def document(self, camera: str, t_s: int) -> bytes:
        local = datetime.fromtimestamp(t_s + int(self.utc_offset_h * 3600), UTC)
        key = (camera, self.line(camera))
        return orjson.dumps(
            {
                "serial": f"00408C{self.cameras.index(camera):06X}",
                "name": self.line(camera),
                "timestamp": local.strftime("%Y%m%d%H%M%S"),
                "in": self.totals.value((*key, "in")),
                "out": self.totals.value((*key, "out")),
            }
        )

    def messages(self, count: int) -> Iterator[tuple[str, bytes]]:
        rng = random.Random(self.seed)
        published: list[tuple[str, bytes]] = []
        for n in range(count):
            camera = self.cameras[n % len(self.cameras)]
            t0 = self.start_s + (n // len(self.cameras)) * self.interval_s
            keys = [(camera, self.line(camera), d) for d in ("in", "out")]
            timeline = [(rng.random(), k) for k in keys for _ in range(rng.randint(0, self.max_per_interval))]
            local0 = t0 + int(self.utc_offset_h * 3600)
            midnight = local0 - local0 % 86400 + 86400
            if self.midnight_reset and midnight <= local0 + self.interval_s:
                timeline.append(((midnight - local0) / self.interval_s, None))
            if self.reboot_ratio and rng.random() < self.reboot_ratio:
                timeline.append((rng.random(), None))
            for _, key in sorted(timeline, key=lambda x: x[0]):
                if key is None:
                    for k in keys:
                        self.totals.reset(k)
                else:
                    self.totals.cross(key, 1)
            msg = (self.topic(camera), self.document(camera, t0 + self.interval_s))
            for k in keys:
                self.totals.delivered(k)
            self.reports += 1
            published.append(msg)
            self.sent += 1
            yield msg
            if self.duplicate_ratio and rng.random() < self.duplicate_ratio:
                self.sent += 1
                yield msg
            if self.stale_ratio and len(published) > 3 and rng.random() < self.stale_ratio:
                self.sent += 1
                yield published[rng.randrange(len(published) - 1)]
            if self.garbage_ratio and rng.random() < self.garbage_ratio:
                self.sent += 1
                yield self.topic(camera), b'{"serial": "00408C", "in": '


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_broker_args(ap, interval_s=60)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--topic-template", default="axis/{camera}/live-sum")
    ap.add_argument("--reboots", type=float, default=0.0)
    ap.add_argument("--duplicates", type=float, default=0.0)
    ap.add_argument("--stale", type=float, default=0.0)
    ap.add_argument("--garbage", type=float, default=0.0)
    args = ap.parse_args()
    street = Street(
        cameras=[f"cam-{i + 1:02d}" for i in range(args.cameras)],
        topic_template=args.topic_template,
        interval_s=args.interval_s,
        reboot_ratio=args.reboots,
        duplicate_ratio=args.duplicates,
        stale_ratio=args.stale,
        garbage_ratio=args.garbage,
    )
    print(orjson.dumps(counting_summary(street, run_street(args, street))).decode())


if __name__ == "__main__":
    main()
