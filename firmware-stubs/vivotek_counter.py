"""Emulator: VIVOTEK SC8131 people counters pushing "Report Push" JSON over MQTT (paho-mqtt) or HTTP.

Each emulated camera reports one document per interval with In/Out deltas for each counting rule
(device-protocols.md §4.4), StartTime aligned to the interval. Knobs: number of cameras, rules per
camera, interval, publish rate, duplicates (a bucket re-sent, as after a camera's HTTP retry),
garbage (broken JSON). It keeps the ground truth — total entries/exits per (camera, rule) — so
tests can compare InfluxDB against what "really" crossed.

Run: python firmware-stubs/vivotek_counter.py --port 1883 --cameras 3 --rate 5 --count 0
     python firmware-stubs/vivotek_counter.py --http http://127.0.0.1:8080 --password … --cameras 3
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from mqtt_out import publish_all


def _iso(ts_s: int) -> str:
    return datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_payload(mac: str, start_s: int, interval_s: int, counts: dict[str, tuple[int, int]]) -> bytes:
    """One Report Push document (the manual's JSON shape) for the interval starting at start_s."""
    return orjson.dumps(
        {
            "Source": {
                "UtcTime": _iso(start_s + interval_s),
                "GroupID": "0",
                "DeviceID": "0",
                "ModelName": "SC8131",
                "MacAddress": mac,
                "IPAddress": "192.0.2.10",
                "TimeZone": "+8",
                "DST": "0",
            },
            "Data": [
                {
                    "RuleType": "Counting",
                    "CountingInfo": [
                        {
                            "RuleName": rule,
                            "In": i,
                            "Out": o,
                            "StartTime": _iso(start_s),
                            "EndTime": _iso(start_s + interval_s),
                        }
                        for rule, (i, o) in counts.items()
                    ],
                }
            ],
        }
    )


@dataclass
class Street:
    """A set of cameras and their ground truth."""

    cameras: list[str]
    topic_template: str = "vivotek/{camera}/report"
    rules: tuple[str, ...] = ("Counting1",)
    interval_s: int = 900
    start_s: int = 1_700_000_000 - 1_700_000_000 % 900
    seed: int = 1
    max_per_interval: int = 30
    duplicate_ratio: float = 0.0
    garbage_ratio: float = 0.0
    truth: Counter = field(default_factory=Counter)  # (camera, rule, "in"/"out") → people
    reports: int = 0  # distinct reports (identities)
    sent: int = 0  # messages published, duplicates and garbage included

    def topic(self, camera: str) -> str:
        return self.topic_template.format(camera=camera)

    def messages(self, count: int) -> Iterator[tuple[str, bytes]]:
        """`count` distinct reports round-robin over the cameras, plus duplicates and garbage."""
        rng = random.Random(self.seed)
        for n in range(count):
            camera = self.cameras[n % len(self.cameras)]
            start = self.start_s + (n // len(self.cameras)) * self.interval_s
            counts = {
                r: (rng.randint(0, self.max_per_interval), rng.randint(0, self.max_per_interval)) for r in self.rules
            }
            for rule, (i, o) in counts.items():
                self.truth[(camera, rule, "in")] += i
                self.truth[(camera, rule, "out")] += o
            payload = report_payload(f"00:02:81:31:{n % 256:02X}:{len(camera):02X}", start, self.interval_s, counts)
            self.reports += 1
            yield self.topic(camera), payload
            if self.duplicate_ratio and rng.random() < self.duplicate_ratio:
                yield self.topic(camera), payload
            if self.garbage_ratio and rng.random() < self.garbage_ratio:
                yield self.topic(camera), b'{"Data": [{"RuleType": "Counting", "CountingInfo": [{"In": '


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--camera-prefix", default="cam-")
    ap.add_argument("--topic-template", default="vivotek/{camera}/report")
    ap.add_argument("--rate", type=float, default=2.0, help="messages per second (0 = as fast as possible)")
    ap.add_argument("--count", type=int, default=0, help="reports to send (0 = until stopped)")
    ap.add_argument("--interval-s", type=int, default=60)
    ap.add_argument("--live", action="store_true", help="start at the current interval instead of 2023")
    ap.add_argument("--backfill-h", type=float, default=0.0, help="--live: first send the last H hours at once")
    ap.add_argument("--max-per-interval", type=int, default=30, help="most people per rule and interval")
    ap.add_argument("--duplicates", type=float, default=0.0)
    ap.add_argument("--garbage", type=float, default=0.0)
    ap.add_argument("--http", metavar="URL", help="push over HTTP to this gateway (e.g. http://127.0.0.1:8080)")
    ap.add_argument("--password", default="", help="--http: the cameras' HTTP Basic password")
    args = ap.parse_args()
    street = Street(
        cameras=[f"{args.camera_prefix}{i + 1:02d}" for i in range(args.cameras)],
        topic_template=args.topic_template,
        rules=("Counting1", "Counting2"),
        interval_s=args.interval_s,
        max_per_interval=args.max_per_interval,
        duplicate_ratio=args.duplicates,
        garbage_ratio=args.garbage,
    )
    count = args.count or 10**12
    if args.http:
        from http_out import push_all

        by_topic = {street.topic(c): c for c in street.cameras}

        def send(n: int, rate: float) -> dict:
            reports = ((by_topic[topic], doc) for topic, doc in street.messages(n))
            return dict(push_all(args.http, reports, lambda _camera: args.password, rate=rate))
    else:

        def send(n: int, rate: float) -> dict:
            return {"acked": publish_all(args.host, args.port, street.messages(n), rate=rate, client_id="")}

    outcome: dict = {}
    try:
        if args.live:
            now = int(time.time())
            live_start = now - now % args.interval_s
            if args.backfill_h:  # the last hours' reports at once, then one per interval, live
                back = int(args.backfill_h * 3600) // args.interval_s
                street.start_s = live_start - back * args.interval_s
                outcome["backfill"] = send(back * len(street.cameras), 0.0)
                count = max(count - back * len(street.cameras), 0)
            street.start_s = live_start
        outcome.update(send(count, args.rate))
    except KeyboardInterrupt:
        outcome["interrupted"] = True
    print(orjson.dumps({"reports": street.reports, **outcome}).decode())


if __name__ == "__main__":
    main()
