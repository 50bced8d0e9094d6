"""Shared by the RFID emulators: tags that come and go (with ground truth), injected noise, and a
pseudo-terminal that behaves like a USB serial reader (stable by-id symlink, unplug and replug).

- `Population`: a deterministic (seeded) population of tags arriving at and leaving antennas in
  steps of `step_s` of emulator time; `stays()` is the ground truth: which tag was present at which
  antenna from when to when.
- `Noise`: with probability `ratio` per frame, junk before it, one flipped bit, or a truncation.
- `PtyPort`: `os.openpty()` in raw mode, a symlink to the slave (like /dev/serial/by-id/…) that is
  re-pointed atomically on replug and removed on unplug.
- `SerialEmulator`: a thread that writes what the reader sends on its own each tick (`tick`) and
  answers the host's bytes (`answer`); subclasses are the reader models.

Frames are built here and in the reader scripts independently of devices/, so tests that decode
emulator output with the gateway's codecs compare two implementations of the same document.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import threading
import time
import tty
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# SGTIN-96 partition table (device-protocols.md §3.1): P → (company prefix bits, digits)
_PARTITIONS = {0: (40, 12), 1: (37, 11), 2: (34, 10), 3: (30, 9), 4: (27, 8), 5: (24, 7), 6: (20, 6)}


def sgtin96_hex(company_prefix: str, item_ref: str, serial: int, filter_value: int = 1) -> str:
    """SGTIN-96 EPC as hex from the company prefix digits and the item reference digits (indicator
    first); the partition follows from the prefix length."""
    partition = next(p for p, (_, digits) in _PARTITIONS.items() if digits == len(company_prefix))
    cp_bits = _PARTITIONS[partition][0]
    fields = (
        (3, filter_value),
        (3, partition),
        (cp_bits, int(company_prefix)),
        (44 - cp_bits, int(item_ref)),
        (38, serial),
    )
    value = 0x30
    for width, field_value in fields:
        value = value << width | field_value
    return f"{value:024X}"


def epc_population(n: int, seed: int = 1) -> list[str]:
    """`n` distinct EPCs: mostly SGTIN-96 items of two products, every fifth a TID-style E280… EPC."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        if len(out) % 5 == 4:
            epc = "E280" + "".join(rng.choice("0123456789ABCDEF") for _ in range(20))
        else:
            epc = sgtin96_hex("0614141", rng.choice(("812345", "812346")), rng.randrange(1, 2**38))
        if epc not in out:
            out.append(epc)
    return out


def em4100_population(n: int, seed: int = 1) -> list[str]:
    """`n` distinct 10-hex-digit EM4100 IDs (version byte, 32-bit card number)."""
    rng = random.Random(seed)
    ids: list[str] = []
    while len(ids) < n:
        tag = f"{rng.randrange(256):02X}{rng.randrange(2**32):08X}"
        if tag not in ids:
            ids.append(tag)
    return ids


@dataclass(frozen=True)
class Stay:
    tag: str
    antenna: int
    start_s: float
    end_s: float | None  # None: still present
    rssi_dbm: float


class Population:
    """Tags that arrive at an antenna and leave, one random draw per tag per step (seeded)."""

    def __init__(
        self,
        tags: Sequence[str],
        antennas: Sequence[int] = (0,),
        *,
        seed: int = 1,
        step_s: float = 0.1,
        arrive_p: float = 0.05,
        depart_p: float = 0.02,
        max_present: int | None = None,
    ) -> None:
        self.tags, self.antennas, self.step_s = list(tags), list(antennas), step_s
        self.arrive_p, self.depart_p, self.max_present = arrive_p, depart_p, max_present
        self._rng = random.Random(seed)
        self._step = 0
        self._open: dict[str, Stay] = {}
        self._closed: list[Stay] = []
        self._lock = threading.Lock()

    def _advance(self, t_s: float) -> None:
        target = int(t_s / self.step_s + 1e-9)
        while self._step < target:
            self._step += 1
            now = round(self._step * self.step_s, 6)
            for tag in self.tags:
                stay = self._open.get(tag)
                if stay is not None:
                    if self._rng.random() < self.depart_p:
                        self._closed.append(Stay(tag, stay.antenna, stay.start_s, now, stay.rssi_dbm))
                        del self._open[tag]
                elif self._rng.random() < self.arrive_p and (
                    self.max_present is None or len(self._open) < self.max_present
                ):
                    antenna = self._rng.choice(self.antennas)
                    self._open[tag] = Stay(tag, antenna, now, None, round(self._rng.uniform(-75, -40), 1))

    def present(self, t_s: float) -> dict[str, Stay]:
        """Tags in the field at emulator time `t_s` (time never runs backwards: earlier = now)."""
        with self._lock:
            self._advance(t_s)
            return dict(self._open)

    def stays(self) -> list[Stay]:
        """Ground truth so far: closed stays, then the open ones."""
        with self._lock:
            return [*self._closed, *self._open.values()]


class Noise:
    """With probability `ratio` a frame gets junk before it, one flipped bit, or is cut short."""

    KINDS = ("garbage", "flip", "truncate")

    def __init__(self, ratio: float = 0.0, seed: int = 1, kinds: Sequence[str] = KINDS) -> None:
        self.ratio, self.kinds = ratio, tuple(kinds)
        self._rng = random.Random(seed ^ 0x5EED)
        self.injected: Counter[str] = Counter()

    def apply(self, frame: bytes) -> bytes:
        if not self.ratio or self._rng.random() >= self.ratio:
            return frame
        kind = self._rng.choice(self.kinds)
        self.injected[kind] += 1
        if kind == "garbage":
            return self._rng.randbytes(self._rng.randint(1, 16)) + frame
        if kind == "flip":
            pos = self._rng.randrange(len(frame))
            return frame[:pos] + bytes((frame[pos] ^ (1 << self._rng.randrange(8)),)) + frame[pos + 1 :]
        return frame[: self._rng.randrange(1, len(frame))]


class PtyPort:
    """A pseudo-terminal pair in raw mode with a stable symlink to its slave side."""

    def __init__(self, link: str | os.PathLike) -> None:
        self.link = Path(link)
        self.master: int | None = None
        self._slave: int | None = None
        self.dropped_bytes = 0

    @property
    def plugged(self) -> bool:
        return self.master is not None

    def plug(self) -> None:
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: 0x03 must not become SIGINT
        os.set_blocking(master, False)
        self.master, self._slave = master, slave
        self.link.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.link.with_name(self.link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.link)  # re-pointed atomically, as udev does on replug

    def unplug(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        for fd in (self.master, self._slave):
            if fd is not None:
                os.close(fd)
        self.master = self._slave = None

    def write(self, data: bytes) -> int:
        """Non-blocking: what the host does not read in time is lost, as on a real UART."""
        if self.master is None or not data:
            return 0
        try:
            n = os.write(self.master, data)
        except (BlockingIOError, OSError):
            n = 0
        self.dropped_bytes += len(data) - n
        return n

    def read(self) -> bytes:
        if self.master is None:
            return b""
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""


class SerialEmulator:
    """A reader on a pseudo-terminal, run by a thread: `tick` every 1/`rate_hz` s, `answer` whenever
    the host writes. Subclasses return lists of frames; noise is applied per frame."""

    def __init__(
        self, link: str | os.PathLike, population: Population, *, rate_hz: float = 10.0, noise: Noise | None = None
    ) -> None:
        self.port = PtyPort(link)
        self.population = population
        self.rate_hz = rate_hz
        self.noise = noise or Noise(0.0)
        self.frames_sent = 0
        self.reads_sent: Counter[tuple[str, int]] = Counter()  # (tag, antenna) → frames written
        self.host_bytes = bytearray()  # everything the host wrote (commands), for tests
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    @property
    def link(self) -> Path:
        return self.port.link

    def now_s(self) -> float:
        return time.monotonic() - self._t0

    # --- for subclasses
    def tick(self, t_s: float) -> list[bytes]:
        return []

    def answer(self, data: bytes, t_s: float) -> list[bytes]:
        return []

    def power_cycle(self) -> None:
        """Called on unplug: a reader that loses power forgets its state."""

    # --- lifecycle
    def start(self) -> SerialEmulator:
        self.port.plug()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"emulator-{self.link.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            self.port.unplug()

    def __enter__(self) -> SerialEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def unplug(self) -> None:
        """Pull the cable: the master closes (the host's reads fail), the symlink disappears."""
        with self._lock:
            self.port.unplug()
            self.power_cycle()

    def replug(self) -> None:
        """Plug back in: a new pty, the same symlink path pointing at it."""
        with self._lock:
            self.port.plug()

    def _send(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.port.write(self.noise.apply(frame))
            self.frames_sent += 1

    def _run(self) -> None:
        period = 1.0 / self.rate_hz
        next_tick = time.monotonic()
        while not self._stop.is_set():
            wait = max(0.0, min(next_tick - time.monotonic(), 0.02))
            with self._lock:
                if self.port.plugged:
                    readable, _, _ = select.select([self.port.master], [], [], wait)
                    if readable:
                        data = self.port.read()
                        if data:
                            self.host_bytes += data
                            self._send(self.answer(data, self.now_s()))
                    if time.monotonic() >= next_tick:
                        self.population.present(self.now_s())  # tags come and go while nobody asks
                        self._send(self.tick(self.now_s()))
            if not self.port.plugged:
                self._stop.wait(wait or 0.005)
            if time.monotonic() >= next_tick:
                next_tick += period * max(1, int((time.monotonic() - next_tick) / period) + 1)


def add_common_args(ap: argparse.ArgumentParser, *, rate_hz: float, tags: int) -> None:
    ap.add_argument("--link", default="/tmp/sdgw-serial/by-id/emulated-reader", help="stable symlink path")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate", type=float, default=rate_hz, help="ticks (frames or rounds) per second")
    ap.add_argument("--tags", type=int, default=tags, help="size of the tag population")
    ap.add_argument("--arrive-p", type=float, default=0.05, help="per tag and 0.1 s step")
    ap.add_argument("--depart-p", type=float, default=0.02, help="per tag and 0.1 s step")
    ap.add_argument("--garbage", type=float, default=0.0, help="share of frames damaged or preceded by junk")
    ap.add_argument("--duration", type=float, default=0.0, help="seconds to run (0 = until Ctrl-C)")
    ap.add_argument("--unplug-every", type=float, default=0.0, help="unplug every N s (0 = never)")
    ap.add_argument("--unplug-for", type=float, default=2.0, help="seconds unplugged each time")


def run_cli(emulator: SerialEmulator, args: argparse.Namespace) -> dict:
    """Run until --duration or Ctrl-C, unplugging on schedule; return a summary with ground truth."""
    print(f"reader on {emulator.link}", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else float("inf")
    next_unplug = time.monotonic() + args.unplug_every if args.unplug_every else float("inf")
    with emulator, contextlib.suppress(KeyboardInterrupt):
        while time.monotonic() < deadline:
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= next_unplug:
                emulator.unplug()
                time.sleep(args.unplug_for)
                emulator.replug()
                next_unplug = time.monotonic() + args.unplug_every
    stays = emulator.population.stays()
    return {
        "frames_sent": emulator.frames_sent,
        "noise": dict(emulator.noise.injected),
        "dropped_bytes": emulator.port.dropped_bytes,
        "stays": len(stays),
        "tags_seen": len({s.tag for s in stays}),
    }
