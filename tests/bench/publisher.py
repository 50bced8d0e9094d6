"""One load-generating publisher process for the benchmark: VIVOTEK reports with paho-mqtt, QoS 1.

It builds its messages first (firmware-stubs/vivotek_counter.py `Street`, so the ground truth comes
with them), connects, prints `ready`, waits for a line on stdin (so that several publishers start
together), publishes — paced at `--rate` msg/s, or as fast as the broker takes them with 0 — waits
for every PUBACK and prints one JSON line: counts, first/last publish wall time, the ground truth.
With `--times FILE` it writes the wall time (float64 s) at which each report was handed to
`publish()`, in order, for the latency figure.
"""

from __future__ import annotations

import argparse
import sys
import time
from array import array
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "firmware-stubs"))

from vivotek_counter import Street, publish_all  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cameras", required=True, help="comma-separated camera ids")
    ap.add_argument("--topic-template", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--interval-s", type=int, default=60)
    ap.add_argument("--rules", default="Counting1")
    ap.add_argument("--client-id", default="")
    ap.add_argument("--times", type=Path)
    args = ap.parse_args()

    street = Street(
        cameras=args.cameras.split(","),
        topic_template=args.topic_template,
        rules=tuple(args.rules.split(",")),
        interval_s=args.interval_s,
        seed=args.seed,
    )
    messages = list(street.messages(args.count))
    stamps = array("d")

    def stamped():
        now = time.time
        for m in messages:
            stamps.append(now())
            yield m

    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.time()
    acked = publish_all("127.0.0.1", args.port, stamped(), rate=args.rate, client_id=args.client_id)
    t_acked = time.time()
    if args.times is not None:
        args.times.write_bytes(stamps.tobytes())
    out = {
        "reports": street.reports,
        "sent": len(messages),
        "acked": acked,
        "t_start": t0,
        "t_first": stamps[0] if stamps else t0,
        "t_last": stamps[-1] if stamps else t0,
        "t_acked": t_acked,
        "truth": [[*k, v] for k, v in street.truth.items()],
    }
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
