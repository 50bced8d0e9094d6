"""Emulator: an RS-485 people counter answering Modbus RTU read requests on a pseudo-terminal.

The counter holds cumulative in/out totals per line in holding (or input) registers laid out by a
register map we define (device-protocols.md §4.7: maps are vendor-specific, so the gateway takes one
from config; the default here matches the gateway's default: slave 1, line_1 in at register 0, out at
1, 16 bits). The gateway opens the PTY's slave end through a stable symlink (like
/dev/serial/by-id/…), in raw mode as a USB-RS485 adapter is, and polls with read requests; the
emulator answers from its totals, which grow, restart (midnight, power cycle) and wrap at 2^16 or 2^32.

Hand-written rather than pymodbus's serial server: the faults must be ours to inject, per answer —
noise before an answer, a corrupted CRC, the request echoed back (adapters with local echo), answers
split over several writes, silence while "rebooting" — and the ground truth must know exactly which
answers went out whole. Frames are built here with a table-driven CRC, not the gateway's encoder, so
one bug cannot hide another.

Ground truth (counter_truth.py): every crossing per (line, direction), and `countable`: what the
gateway can count from the answers that went out whole (a reset between two answers loses the
crossings before it). `ambiguous` counts resets the rules cannot see.

Several counters can share the line (`add_unit`, `--units`): each answers only requests to its own
slave address, and a silent one (`reboot(silent=True)`) leaves the others answering — an RS-485 bus.
An optional occupancy register serves `occupancy` (people present now).

Run: python firmware-stubs/modbus_counter.py --link /tmp/sdgw-counter --rate 2 --reset-every-s 60 --units 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import signal
import threading
import time
import tty
from pathlib import Path

import orjson
from counter_truth import CumulativeTruth


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def frame(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


class CounterUnit:
    """One counter (one slave address) on a bus. Drive crossings with `cross`/`reset`/`reboot`."""

    def __init__(
        self,
        *,
        lines: dict[str, tuple[int, int]] | None = None,  # line → (in register, out register)
        slave: int = 1,
        function: int = 3,
        width_bits: int = 16,
        low_word_first: bool = False,
        start_total: int = 0,
        occupancy_register: int | None = None,  # people present now, same width as the totals
        noise_ratio: float = 0.0,
        crc_error_ratio: float = 0.0,
        seed: int = 1,
    ) -> None:
        self.lines = lines or {"line_1": (0, 1)}
        self.slave, self.function, self.width_bits = slave, function, width_bits
        self.low_word_first = low_word_first
        self.occupancy_register = occupancy_register
        self.occupancy = 0
        self.noise_ratio, self.crc_error_ratio = noise_ratio, crc_error_ratio
        self.rng = random.Random(seed)
        self.totals = CumulativeTruth(width_bits)
        for line in self.lines:
            for d in ("in", "out"):
                self.totals.start_at((line, d), start_total)
        self.requests = 0
        self.answers_whole = 0
        self.answers_spoiled = 0
        self.silent = False
        self._lock = threading.Lock()

    # -- the counting side -----------------------------------------------------------------------

    def cross(self, line: str, entries: int = 0, exits: int = 0) -> None:
        with self._lock:
            self.totals.cross((line, "in"), entries)
            self.totals.cross((line, "out"), exits)

    def reset(self) -> None:
        """Totals restart (the counter's midnight, or a power cycle)."""
        with self._lock:
            for line in self.lines:
                for d in ("in", "out"):
                    self.totals.reset((line, d))

    def reboot(self, silent: bool) -> None:
        """Power cycle: totals restart; while `silent`, requests go unanswered."""
        self.reset()
        self.silent = silent

    @property
    def truth(self):
        return self.totals.truth

    @property
    def countable(self):
        return self.totals.countable

    # -- the serial side -------------------------------------------------------------------------

    def _registers(self, first: int, count: int) -> list[int] | None:
        words = self.width_bits // 16
        values = [
            (reg, self.totals.value((line, d)))
            for line, pair in self.lines.items()
            for reg, d in zip(pair, ("in", "out"), strict=True)
        ]
        if self.occupancy_register is not None:
            values.append((self.occupancy_register, self.occupancy))
        regs: dict[int, int] = {}
        for reg, value in values:
            value %= 1 << self.width_bits
            parts = [value & 0xFFFF] if words == 1 else [value >> 16, value & 0xFFFF]
            if self.low_word_first:
                parts.reverse()
            for k, part in enumerate(parts):
                regs[reg + k] = part
        if not regs or first < min(regs) or first + count > max(regs) + 1:
            return None
        return [regs.get(first + k, 0) for k in range(count)]

    def answer(self, request: bytes) -> bytes | None:
        """The answer to a read request addressed to this unit (None: silent)."""
        self.requests += 1
        if self.silent:
            return None
        slave, function = request[0], request[1]
        first, count = int.from_bytes(request[2:4], "big"), int.from_bytes(request[4:6], "big")
        if function != self.function:
            return frame(bytes([slave, function | 0x80, 1]))
        with self._lock:
            regs = self._registers(first, count) if 1 <= count <= 125 else None
            if regs is None:
                return frame(bytes([slave, function | 0x80, 2]))
            spoil = self.crc_error_ratio and self.rng.random() < self.crc_error_ratio
            if not spoil:  # the answer leaves whole: the gateway will have these values
                for line, (r_in, r_out) in self.lines.items():
                    if first <= min(r_in, r_out) and max(r_in, r_out) < first + count:
                        self.totals.delivered((line, "in"))
                        self.totals.delivered((line, "out"))
        data = b"".join(r.to_bytes(2, "big") for r in regs)
        out = frame(bytes([slave, function, len(data)]) + data)
        if spoil:
            self.answers_spoiled += 1
            return out[:-1] + bytes([out[-1] ^ 0x5A])
        self.answers_whole += 1
        if self.noise_ratio and self.rng.random() < self.noise_ratio:
            out = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, 6))) + out
        return out


class ModbusCounterDevice(CounterUnit):
    """A counter on its own PTY — the bus's first unit; `add_unit` puts more counters on the same
    RS-485 line (each answers only requests to its own slave address, as on a real bus)."""

    def __init__(
        self,
        link: Path,
        *,
        echo: bool = False,
        split_writes: bool = False,
        seed: int = 1,
        **unit: object,
    ) -> None:
        super().__init__(seed=seed, **unit)  # type: ignore[arg-type]
        self.link = Path(link)
        self.echo, self.split_writes = echo, split_writes
        self.bus_rng = self.rng  # one random sequence for a lone counter, as before buses existed
        self.units: dict[int, CounterUnit] = {self.slave: self}
        self.bus_requests = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        self.link.symlink_to(os.ttyname(self._slave))

    def add_unit(self, **unit: object) -> CounterUnit:
        """Another counter on the same line (keyword arguments as CounterUnit's; `slave` required)."""
        added = CounterUnit(**unit)  # type: ignore[arg-type]
        if added.slave in self.units:
            raise ValueError(f"slave {added.slave} is already on this bus")
        self.units[added.slave] = added
        return added

    def _write(self, data: bytes) -> None:
        chunks = [data]
        if self.split_writes and len(data) > 3:
            cut = self.bus_rng.randrange(1, len(data))
            chunks = [data[:cut], data[cut:]]
        for chunk in chunks:
            os.write(self.master, chunk)
            if len(chunks) > 1:
                time.sleep(0.002)

    def _serve(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(self.master, 4096)
            except (BlockingIOError, OSError):
                continue
            while len(buf) >= 8:
                request = bytes(buf[:8])
                if crc16(request[:6]) != int.from_bytes(request[6:], "little"):
                    del buf[:1]  # noise on the line: hunt for the next request
                    continue
                del buf[:8]
                self.bus_requests += 1
                unit = self.units.get(request[0])
                if unit is None:
                    continue  # no counter at that address: nobody answers
                answer = unit.answer(request)
                if answer is None:
                    continue
                self._write((request if self.echo else b"") + answer)

    def start(self) -> ModbusCounterDevice:
        self._thread = threading.Thread(target=self._serve, name="modbus-counter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()

    def __enter__(self) -> ModbusCounterDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _poisson(rng: random.Random, mean: float) -> int:
    n, p, limit = 0, rng.random(), pow(2.718281828459045, -mean)
    while p > limit:
        n += 1
        p *= rng.random()
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--link", default="/tmp/sdgw-modbus-counter", help="stable path the gateway opens")
    ap.add_argument("--slave", type=int, default=1)
    ap.add_argument("--units", type=int, default=1, help="counters on the bus: slaves --slave, --slave + 1, …")
    ap.add_argument("--occupancy-register", type=int, default=None, help="serve in − out there (e.g. 2)")
    ap.add_argument("--width-bits", type=int, choices=[16, 32], default=16)
    ap.add_argument("--low-word-first", action="store_true")
    ap.add_argument("--start-total", type=int, default=0, help="e.g. 65000 to see a 16-bit wrap soon")
    ap.add_argument("--rate", type=float, default=1.0, help="crossings per second per direction")
    ap.add_argument("--reset-every-s", type=float, default=0.0, help="simulated midnight (0 = never)")
    ap.add_argument("--reboot-every-s", type=float, default=0.0, help="power cycle, 2 s of silence (0 = never)")
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--crc-errors", type=float, default=0.0)
    ap.add_argument("--echo", action="store_true")
    ap.add_argument("--split-writes", action="store_true")
    ap.add_argument("--seconds", type=float, default=0.0, help="run time (0 = until SIGINT/SIGTERM)")
    args = ap.parse_args()
    dev = ModbusCounterDevice(
        Path(args.link),
        slave=args.slave,
        width_bits=args.width_bits,
        low_word_first=args.low_word_first,
        start_total=args.start_total,
        noise_ratio=args.noise,
        crc_error_ratio=args.crc_errors,
        echo=args.echo,
        split_writes=args.split_writes,
        occupancy_register=args.occupancy_register,
    )
    for k in range(1, args.units):
        dev.add_unit(
            slave=args.slave + k,
            width_bits=args.width_bits,
            low_word_first=args.low_word_first,
            start_total=args.start_total,
            occupancy_register=args.occupancy_register,
            seed=k + 1,
        )
    dev.start()
    signal.signal(signal.SIGTERM, lambda *_: dev._stop.set())
    rng = random.Random(7)
    t0 = last_reset = last_reboot = time.monotonic()
    try:
        while not dev._stop.is_set() and (not args.seconds or time.monotonic() - t0 < args.seconds):
            time.sleep(0.1)
            now = time.monotonic()
            for unit in dev.units.values():
                for line in unit.lines:
                    unit.cross(line, _poisson(rng, args.rate * 0.1), _poisson(rng, args.rate * 0.1))
                unit.occupancy = max(
                    0, unit.occupancy + _poisson(rng, args.rate * 0.1) - _poisson(rng, args.rate * 0.1)
                )
                if args.reset_every_s and now - last_reset >= args.reset_every_s:
                    unit.reset()
                if args.reboot_every_s and now - last_reboot >= args.reboot_every_s:
                    unit.reboot(silent=True)
                if unit.silent and now - last_reboot >= 2.0:
                    unit.silent = False
            if args.reset_every_s and now - last_reset >= args.reset_every_s:
                last_reset = now
            if args.reboot_every_s and now - last_reboot >= args.reboot_every_s:
                last_reboot = now
    except KeyboardInterrupt:
        pass
    finally:
        dev.stop()
    summary = {
        str(slave): {
            "requests": unit.requests,
            "answers_whole": unit.answers_whole,
            "truth": {"/".join(k): v for k, v in unit.truth.items()},
            "countable": {"/".join(k): v for k, v in unit.countable.items()},
            "ambiguous": unit.totals.ambiguous,
        }
        for slave, unit in dev.units.items()
    }
    print(orjson.dumps(summary).decode())


if __name__ == "__main__":
    main()
