"""Emulator: Milesight LoRaWAN people counters (VS133, VS350, VS121) publishing via an LNS over MQTT.

Each emulated counter reports once per interval (device-protocols.md §4.1 item layouts, built here
with struct, not with the gateway's codec): cumulative totals (VS133 uint32 per line, VS350 and VS121
uint16 — they wrap at 65 536), per-period in/out, or both. The uplink is wrapped the way the LNS
publishes it: ChirpStack v4 (`data` + `time`), The Things Stack v3 (`uplink_message.frm_payload` +
`received_at`) or raw bytes.

Knobs: model, devices, lines (VS133: 1–4), style (totals | period | both), envelope, interval,
local midnight resets (totals restart at the counter's local midnight), reboots (totals and the running
period restart mid-interval), radio loss (an uplink never arrives), VS350 history (a lost report is
re-sent later as a 0x20 history record with its own time), duplicates (the same uplink published
again, as a broker re-delivery), stale re-deliveries (an older uplink published again later),
a starting total (65 500 makes a VS350 wrap soon), garbage (truncated items, broken envelopes).

Ground truth (counter_truth.py): every crossing per (device, line, direction), and what a correct
gateway can count from what was delivered (`countable`); `ambiguous` counts resets the rules cannot
see. Raw envelopes carry no time: their duplicates cannot be told apart (at-least-once), so keep
duplicate and stale ratios at 0 with `--envelope raw` when comparing sums.

Run: python firmware-stubs/milesight_counter.py --port 1883 --model vs350 --devices 3 --rate 5 --count 0
"""

from __future__ import annotations

import argparse
import base64
import random
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from counter_truth import CumulativeTruth, PeriodTruth
from mqtt_out import add_broker_args, counting_summary, run_street

WIDTH = {"vs133": 32, "vs350": 16, "vs121": 16}
TOPICS = {
    "chirpstack": "application/street/device/{eui}/event/up",
    "ttn": "v3/street@ttn/devices/{device}/up",
    "raw": "milesight/{device}/up",
}


def _iso_ns(t_ns: int) -> str:
    s, ns = divmod(t_ns, 1_000_000_000)
    return datetime.fromtimestamp(s, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ns:09d}Z"


def totals_items(model: str, values: dict[int, tuple[int, int]]) -> bytes:
    """Line → (total in, total out) as the model's items."""
    if model == "vs133":
        return b"".join(
            bytes([0x03 + 3 * (n - 1), 0xD2])
            + struct.pack("<I", i)
            + bytes([0x04 + 3 * (n - 1), 0xD2])
            + struct.pack("<I", o)
            for n, (i, o) in values.items()
        )
    channel = 0x04 if model == "vs350" else 0x0D
    i, o = values[1]
    return bytes([channel, 0xCC]) + struct.pack("<HH", i, o)


def period_items(model: str, values: dict[int, tuple[int, int]]) -> bytes:
    if model == "vs133":
        return b"".join(bytes([0x05 + 3 * (n - 1), 0xCC]) + struct.pack("<HH", i, o) for n, (i, o) in values.items())
    i, o = values[1]
    return bytes([0x05, 0xCC]) + struct.pack("<hh" if model == "vs121" else "<HH", i, o)


def history_item(t_s: int, period: tuple[int, int], totals: tuple[int, int] | None) -> bytes:
    """VS350 0x20 0xCE: data_type 1 carries the totals too."""
    body = struct.pack("<IBHH", t_s, 0 if totals is None else 1, *period)
    return bytes([0x20, 0xCE]) + body + (struct.pack("<HH", *totals) if totals is not None else b"")


@dataclass
class Street:
    """A set of counters of one model and their ground truth."""

    devices: list[str]
    model: str = "vs350"
    style: str = "totals"  # totals | period | both
    envelope: str = "chirpstack"  # chirpstack | ttn | raw
    topic_template: str = ""
    lines: int = 1
    interval_s: int = 600
    start_s: int = 1_710_000_000
    utc_offset_h: float = 8.0  # the counters' local time, for their midnight reset
    midnight_reset: bool = True
    reboot_ratio: float = 0.0
    loss_ratio: float = 0.0
    history: bool = False  # VS350 only
    duplicate_ratio: float = 0.0
    stale_ratio: float = 0.0
    start_total: int = 0
    max_per_interval: int = 30
    garbage_ratio: float = 0.0
    seed: int = 1
    totals: CumulativeTruth = field(init=False)
    periods: PeriodTruth = field(default_factory=PeriodTruth)
    reports: int = 0  # reports made (delivered or lost)
    lost: int = 0
    sent: int = 0  # messages published, duplicates and garbage included
    _fcnt: dict = field(default_factory=dict)
    _stored: dict = field(default_factory=dict)  # device → history records waiting
    _last_totals: dict = field(default_factory=dict)
    _last_period: dict = field(default_factory=dict)
    _live_period_acc: list = field(default_factory=list)
    _periods_before_totals: Counter = field(default_factory=Counter)

    def __post_init__(self) -> None:
        if self.model not in WIDTH or self.style not in ("totals", "period", "both"):
            raise ValueError(f"model {self.model!r} / style {self.style!r}")
        if self.model != "vs133":
            self.lines = 1
        self.totals = CumulativeTruth(WIDTH[self.model])
        for dev in self.devices:
            for n in range(1, self.lines + 1):
                for direction in ("in", "out"):
                    self.totals.start_at((dev, f"line_{n}", direction), self.start_total)

    @property
    def countable(self):
        """What a correct gateway counts: totals win where the device sends them (the processor's rule),
        and a period that arrives before any totals of its line (the first totals uplink lost) counts:
        those totals only seed the baseline later."""
        if self.style == "period":
            return self.periods.countable
        return self.totals.countable + self._periods_before_totals

    @property
    def truth(self):
        return self.totals.truth

    def topic(self, device: str) -> str:
        template = self.topic_template or TOPICS[self.envelope]
        return template.format(device=device, eui=self.eui(device))

    def eui(self, device: str) -> str:
        return f"24e124{self.devices.index(device):010x}"

    def _wrap(self, device: str, t_s: int, items: bytes) -> bytes:
        fcnt = self._fcnt[device] = self._fcnt.get(device, 0) + 1
        if self.envelope == "raw":
            return items
        b64, when = base64.b64encode(items).decode(), _iso_ns(t_s * 1_000_000_000)
        if self.envelope == "chirpstack":
            return orjson.dumps(
                {
                    "deduplicationId": f"{device}-{fcnt}",
                    "time": when,
                    "deviceInfo": {"deviceName": device, "devEui": self.eui(device)},
                    "fCnt": fcnt,
                    "fPort": 85,
                    "data": b64,
                }
            )
        return orjson.dumps(
            {
                "end_device_ids": {"device_id": device, "dev_eui": self.eui(device).upper()},
                "received_at": when,
                "uplink_message": {"f_port": 85, "f_cnt": fcnt, "frm_payload": b64, "received_at": when},
            }
        )

    def _live_interval(self, rng: random.Random, device: str, t0: int) -> None:
        """The interval's crossings, in time order with its midnight and reboot."""
        keys = [(device, f"line_{n}", d) for n in range(1, self.lines + 1) for d in ("in", "out")]
        timeline = [(rng.random(), "cross", k) for k in keys for _ in range(rng.randint(0, self.max_per_interval))]
        day = 86400
        local0 = t0 + int(self.utc_offset_h * 3600)
        next_midnight = local0 - local0 % day + day
        if self.midnight_reset and next_midnight <= local0 + self.interval_s:
            timeline.append(((next_midnight - local0) / self.interval_s, "midnight", None))
        if self.reboot_ratio and rng.random() < self.reboot_ratio:
            timeline.append((rng.random(), "reboot", None))
        for _, kind, key in sorted(timeline, key=lambda x: x[0]):
            if kind == "cross":
                self.totals.cross(key, 1)
                self.periods.cross(key, 1)
                continue
            for k in keys:
                self.totals.reset(k)
                if kind == "reboot":
                    self.periods.reboot(k)

    def _report(self, device: str, t_s: int) -> list[tuple[bytes, list]]:
        """The uplinks of one report (items, and the deliveries to account when they arrive)."""
        lines = range(1, self.lines + 1)
        tot = {
            n: (self.totals.value((device, f"line_{n}", "in")), self.totals.value((device, f"line_{n}", "out")))
            for n in lines
        }
        per = {
            n: (self.periods.take((device, f"line_{n}", "in")), self.periods.take((device, f"line_{n}", "out")))
            for n in lines
        }
        self._last_totals, self._last_period = tot, per
        t_acc = [("totals", (device, f"line_{n}", d), None) for n in lines for d in ("in", "out")]
        p_acc = [("period", (device, f"line_{n}", d), per[n][k]) for n in lines for k, d in enumerate(("in", "out"))]
        uplinks: list[tuple[bytes, list]] = []
        if self.model == "vs133":
            if self.style in ("totals", "both"):
                uplinks.append((totals_items("vs133", tot), t_acc))
            if self.style in ("period", "both"):
                uplinks.append((period_items("vs133", per), p_acc))
            return uplinks
        items, acc = b"", []
        if self.model == "vs121":
            items += bytes([0x04, 0xC9, self.reports % 7, 4]) + (self.reports % 16).to_bytes(2, "big")
        elif self.reports % 6 == 0:
            items += bytes([0x01, 0x75, 90]) + bytes([0x03, 0x67]) + struct.pack("<h", 215)
        if self.style in ("totals", "both"):
            items += totals_items(self.model, tot)
            acc += t_acc
        if self.style in ("period", "both"):
            items += period_items(self.model, per)
            acc += p_acc
        if self.model == "vs121":
            items += bytes([0x06, 0xCD, 9])
        self._live_period_acc = [a for a in acc if a[0] == "period"]
        # history records of lost reports ride after the live items (older times: stale for totals);
        # the device keeps them until an uplink carrying them arrives
        for record, record_acc in self._stored.get(device, []):
            items += record
            acc += record_acc if self.style == "period" else []
        uplinks.append((items, acc))
        return uplinks

    def messages(self, count: int) -> Iterator[tuple[str, bytes]]:
        """`count` reports round-robin over the devices, plus losses, duplicates, stale and garbage."""
        rng = random.Random(self.seed)
        published: list[tuple[str, bytes]] = []
        for n in range(count):
            device = self.devices[n % len(self.devices)]
            t0 = self.start_s + (n // len(self.devices)) * self.interval_s
            t_s = t0 + self.interval_s
            self._live_interval(rng, device, t0)
            uplinks = self._report(device, t_s)
            self.reports += 1
            for k, (items, acc) in enumerate(uplinks):
                if self.loss_ratio and rng.random() < self.loss_ratio:
                    self.lost += 1
                    if self.history and self.model == "vs350":  # the device keeps the record
                        tot = None if self.style == "period" else self._last_totals[1]
                        record = history_item(t_s, self._last_period[1], tot)
                        self._stored.setdefault(device, []).append((record, self._live_period_acc))
                    continue
                self._stored.pop(device, None)
                msg = (self.topic(device), self._wrap(device, t_s + k, items))
                lines_with_totals = {key[:2] for kind, key, _ in acc if kind == "totals"}
                for kind, key, value in acc:
                    if kind == "totals":
                        self.totals.delivered(key)
                    else:
                        self.periods.delivered(key, value)
                        if key[:2] not in lines_with_totals and not self.totals.seen(key):
                            self._periods_before_totals[key] += value
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
                yield self.topic(device), (b"\x03\xd2\x48" if self.envelope == "raw" else b'{"data": "A9JI')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_broker_args(ap, interval_s=600)
    ap.add_argument("--model", choices=sorted(WIDTH), default="vs350")
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--device-prefix", default="ms-")
    ap.add_argument("--lines", type=int, default=2, help="VS133 only: 1-4")
    ap.add_argument("--style", choices=["totals", "period", "both"], default="totals")
    ap.add_argument("--envelope", choices=sorted(TOPICS), default="chirpstack")
    ap.add_argument("--topic-template", default="", help="placeholders {device} and {eui}")
    ap.add_argument("--no-midnight-reset", action="store_true")
    ap.add_argument("--reboots", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--history", action="store_true", help="VS350: lost reports re-sent as history records")
    ap.add_argument("--duplicates", type=float, default=0.0)
    ap.add_argument("--stale", type=float, default=0.0)
    ap.add_argument("--start-total", type=int, default=0)
    ap.add_argument("--garbage", type=float, default=0.0)
    args = ap.parse_args()
    street = Street(
        devices=[f"{args.device_prefix}{i + 1:02d}" for i in range(args.devices)],
        model=args.model,
        style=args.style,
        envelope=args.envelope,
        topic_template=args.topic_template,
        lines=args.lines,
        interval_s=args.interval_s,
        midnight_reset=not args.no_midnight_reset,
        reboot_ratio=args.reboots,
        loss_ratio=args.loss,
        history=args.history,
        duplicate_ratio=args.duplicates,
        stale_ratio=args.stale,
        start_total=args.start_total,
        garbage_ratio=args.garbage,
    )
    print(orjson.dumps(counting_summary(street, run_street(args, street))).decode())


if __name__ == "__main__":
    main()
