"""Emulator: Milesight VS121-P-style sensors pushing "Region People Counting" JSON over MQTT.

Each sensor watches a few regions; people come and go; every interval it publishes the periodic
report of device-protocols.md §4.2 — local wall-clock `start_time`/`end_time` with the zone apart
(`UTC+8:00`, DST flag), current total, max during the interval, per-region counts and occupancy —
optionally with a base64 `snapshot` image (as HTTP pushes carry; the gateway must drop it) and keys
in the vendor's odd case (`Max_counted`). Knobs: sensors, regions, interval, zone, snapshot, key
case, duplicates, garbage (the vendor's sample as published: comments, not JSON).

Ground truth: per sensor, the (end time UTC, people now, people max, per-region people) of every
report, so tests compare the gateway's occupancy gauges with what was in the room.

Run: python firmware-stubs/milesight_json_counter.py --port 1883 --sensors 2 --rate 2 --count 0
"""

from __future__ import annotations

import argparse
import base64
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import orjson
from mqtt_out import add_broker_args, run_street

VENDOR_SAMPLE = (
    b'{"event":"Region People Counting", "report_type": "interval",\n "current_total":10, '
    b'"Max_counted":12, //Maximum number of people during the reporting interval\n "occupancy":[1,0]\n}'
)


@dataclass
class Street:
    sensors: list[str]
    topic_template: str = "milesight/{sensor}/people"
    regions: int = 2
    interval_s: int = 900
    start_s: int = 1_710_000_000
    utc_offset_h: float = 8.0
    dst: bool = False
    snapshot: bool = False
    vendor_key_case: bool = True
    duplicate_ratio: float = 0.0
    garbage_ratio: float = 0.0
    seed: int = 1
    truth: dict = field(default_factory=dict)  # sensor → [(end_ns, people, people_max, [per region])]
    sent: int = 0

    def topic(self, sensor: str) -> str:
        return self.topic_template.format(sensor=sensor)

    def _local(self, t_s: int) -> str:
        offset = timedelta(hours=self.utc_offset_h + (1 if self.dst else 0))
        return (datetime.fromtimestamp(t_s, UTC) + offset).strftime("%Y/%m/%d %H:%M:%S")

    def _zone(self) -> str:
        minutes = round(self.utc_offset_h * 60)
        sign = "-" if minutes < 0 else "+"
        return f"UTC{sign}{abs(minutes) // 60}:{abs(minutes) % 60:02d}"

    def messages(self, count: int) -> Iterator[tuple[str, bytes]]:
        rng = random.Random(self.seed)
        present = {s: [0] * self.regions for s in self.sensors}
        for n in range(count):
            sensor = self.sensors[n % len(self.sensors)]
            t0 = self.start_s + (n // len(self.sensors)) * self.interval_s
            people = present[sensor]
            peak = sum(people)
            for _ in range(rng.randint(0, 12)):  # arrivals and departures during the interval
                r = rng.randrange(self.regions)
                people[r] = max(0, people[r] + rng.choice((1, 1, -1)))
                peak = max(peak, sum(people))
            doc = {
                "event": "Region People Counting",
                "report_type": "interval",
                "device_info": {"device": "Workplace Sensor", "device_sn": f"3693620{n % 100000:05d}"},
                "time_info": {
                    "timezone": self._zone(),
                    "dst_status": self.dst,
                    "start_time": self._local(t0),
                    "end_time": self._local(t0 + self.interval_s),
                },
                "current_total": sum(people),
                "Max_counted" if self.vendor_key_case else "max_counted": peak,
                "total_mapped_regions": self.regions,
                "numbering_regions": list(range(1, self.regions + 1)),
                "current_counted": list(people),
                "occupancy": [1 if p else 0 for p in people],
            }
            if self.snapshot:
                doc["snapshot"] = base64.b64encode(rng.randbytes(256)).decode()
            self.truth.setdefault(sensor, []).append(((t0 + self.interval_s) * 10**9, sum(people), peak, list(people)))
            msg = (self.topic(sensor), orjson.dumps(doc))
            self.sent += 1
            yield msg
            if self.duplicate_ratio and rng.random() < self.duplicate_ratio:
                self.sent += 1
                yield msg
            if self.garbage_ratio and rng.random() < self.garbage_ratio:
                self.sent += 1
                yield self.topic(sensor), VENDOR_SAMPLE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_broker_args(ap, interval_s=900)
    ap.add_argument("--sensors", type=int, default=2)
    ap.add_argument("--regions", type=int, default=2)
    ap.add_argument("--topic-template", default="milesight/{sensor}/people")
    ap.add_argument("--utc-offset-h", type=float, default=8.0)
    ap.add_argument("--dst", action="store_true")
    ap.add_argument("--snapshot", action="store_true", help="attach a base64 image, as HTTP pushes do")
    ap.add_argument("--duplicates", type=float, default=0.0)
    ap.add_argument("--garbage", type=float, default=0.0)
    args = ap.parse_args()
    street = Street(
        sensors=[f"vs121p-{i + 1:02d}" for i in range(args.sensors)],
        topic_template=args.topic_template,
        regions=args.regions,
        interval_s=args.interval_s,
        utc_offset_h=args.utc_offset_h,
        dst=args.dst,
        snapshot=args.snapshot,
        duplicate_ratio=args.duplicates,
        garbage_ratio=args.garbage,
    )
    acked = run_street(args, street)
    last = {s: rows[-1][1] for s, rows in street.truth.items()}
    print(orjson.dumps({"sent": street.sent, "acked": acked, "people_now": last}).decode())


if __name__ == "__main__":
    main()
