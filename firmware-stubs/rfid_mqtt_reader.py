"""Emulator: networked fixed RFID readers publishing our JSON read contract over MQTT (paho-mqtt 2.x).

Each reader has its own seeded tag population over its antennas (ground truth: `stays(reader)`);
every `interval_s` of emulator time it publishes the tags it saw since the last message, one entry per
(tag, antenna) with an aggregated `count`, RSSI and an epoch-ms `ts` — the contract documented in
devices/rfid_json.py. Knobs: readers, antennas, tags, interval, publish rate, a share of EM4100 card
reads (personal), vendor-style keys (idHex/antennaPort/peakRssiCdbm) on some readers, garbage
(broken JSON). Deterministic for a seed: `messages()` is a pure generator; `publish_all()` sends.

Run: python firmware-stubs/rfid_mqtt_reader.py --port 1883 --readers 2 --rate 5 --count 0
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
from mqtt_out import publish_all
from rfid_sim import Population, Stay, em4100_population, epc_population


def reads_payload(reader: str, reads: list[dict], *, vendor_keys: bool = False) -> bytes:
    """One message of the contract; `vendor_keys` spells the fields as some vendors do."""
    if vendor_keys:
        names = {"epc": "idHex", "antenna": "antennaPort", "count": "tagSeenCount", "ts": "timestamp"}
        reads = [
            {names.get(k, k): v for k, v in r.items() if k != "rssi"}
            | ({"peakRssiCdbm": round(r["rssi"] * 100)} if "rssi" in r else {})
            for r in reads
        ]
    return orjson.dumps({"reader": reader, "reads": reads})


@dataclass
class ReaderFleet:
    readers: list[str]
    antennas: tuple[int, ...] = (1, 2)
    tags: int = 20
    em4100_share: float = 0.0  # share of the population that are 125 kHz cards
    vendor_keys_every: int = 0  # every Nth reader spells keys the vendor way (0 = none)
    topic_template: str = "rfid/{reader}/reads"
    interval_s: float = 1.0
    start_ms: int = 1_700_000_000_000
    seed: int = 1
    garbage_ratio: float = 0.0
    reads_sent: Counter = field(default_factory=Counter)  # (reader, tag, antenna) → reads
    messages_sent: int = 0
    _populations: dict[str, Population] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for i, reader in enumerate(self.readers):
            n_cards = round(self.tags * self.em4100_share)
            tags = epc_population(self.tags - n_cards, self.seed + i) + em4100_population(n_cards, self.seed + i)
            self._populations[reader] = Population(tags, self.antennas, seed=self.seed + i, step_s=self.interval_s / 4)

    def topic(self, reader: str) -> str:
        return self.topic_template.format(reader=reader)

    def stays(self, reader: str) -> list[Stay]:
        return self._populations[reader].stays()

    def messages(self, count: int) -> Iterator[tuple[str, bytes]]:
        """`count` reports round-robin over the readers, plus garbage; deterministic for the seed."""
        rng = random.Random(self.seed)
        for n in range(count):
            index = n % len(self.readers)
            reader = self.readers[index]
            t_s = (n // len(self.readers) + 1) * self.interval_s
            reads = []
            for tag, stay in self._populations[reader].present(t_s).items():
                reads_n = rng.randint(1, 8)
                self.reads_sent[(reader, tag, stay.antenna)] += reads_n
                key = "em4100" if len(tag) == 10 else "epc"
                reads.append(
                    {
                        key: tag,
                        "antenna": stay.antenna,
                        "rssi": round(stay.rssi_dbm + rng.uniform(-2, 2), 1),
                        "count": reads_n,
                        "ts": self.start_ms + round(t_s * 1000),
                    }
                )
            vendor = bool(self.vendor_keys_every) and index % self.vendor_keys_every == self.vendor_keys_every - 1
            self.messages_sent += 1
            yield self.topic(reader), reads_payload(reader, reads, vendor_keys=vendor)
            if self.garbage_ratio and rng.random() < self.garbage_ratio:
                yield self.topic(reader), b'{"reader": "' + reader.encode() + b'", "reads": [{"epc": "30'


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=1883)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--reader-prefix", default="rfid-")
    ap.add_argument("--topic-template", default="rfid/{reader}/reads")
    ap.add_argument("--antennas", type=int, default=2)
    ap.add_argument("--tags", type=int, default=20)
    ap.add_argument("--em4100-share", type=float, default=0.0)
    ap.add_argument("--vendor-keys-every", type=int, default=0)
    ap.add_argument("--interval-s", type=float, default=1.0, help="emulator time between a reader's reports")
    ap.add_argument("--rate", type=float, default=2.0, help="messages per second (0 = as fast as possible)")
    ap.add_argument("--count", type=int, default=0, help="reports to send (0 = until stopped)")
    ap.add_argument("--garbage", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--live", action="store_true", help="timestamps from now instead of 2023")
    args = ap.parse_args()
    fleet = ReaderFleet(
        [f"{args.reader_prefix}{i + 1:02d}" for i in range(args.readers)],
        antennas=tuple(range(1, args.antennas + 1)),
        tags=args.tags,
        em4100_share=args.em4100_share,
        vendor_keys_every=args.vendor_keys_every,
        topic_template=args.topic_template,
        interval_s=args.interval_s,
        seed=args.seed,
        garbage_ratio=args.garbage,
    )
    if args.live:
        fleet.start_ms = time.time_ns() // 1_000_000
    try:
        acked = publish_all(args.host, args.port, fleet.messages(args.count or 10**12), rate=args.rate)
    except KeyboardInterrupt:
        acked = -1
    print(
        orjson.dumps(
            {"messages": fleet.messages_sent, "acked": acked, "reads": sum(fleet.reads_sent.values())}
        ).decode()
    )


if __name__ == "__main__":
    main()
