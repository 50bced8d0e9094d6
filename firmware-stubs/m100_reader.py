"""Emulator: a UHF reader on a Magic RF M100 module (YRM100, M5Stack U107 …) on a pseudo-terminal
(device-protocols.md §2.1).

Like the module, it is silent until the host asks: `BB 00 22 …` runs one inventory round,
`BB 00 27 00 03 22 <CNT>` runs CNT rounds at `rate` rounds per second, `BB 00 28 …` stops (answer
`BB 01 28 00 01 00 2A 7E`), `BB 00 03 00 01 <sub> …` answers the version. A round sends one notice
(type 02, command 22: RSSI, PC, EPC, tag CRC-16) per tag read — each present tag is read with
probability `read_p` — or the "no tag" answer `BB 01 FF 00 01 15 16 7E`. A malformed command gets
error 0x17. EPCs may contain 0xBB and 0x7E: frames are not stuffed. Unplugging is a power cycle:
multi-polling stops until the host starts it again. `--autostart` polls without being asked.

Run: python firmware-stubs/m100_reader.py --link /tmp/sdgw-serial/by-id/m100 --tags 20 --rate 20
"""

from __future__ import annotations

import argparse
import json
import random

from rfid_sim import Noise, Population, SerialEmulator, add_common_args, epc_population, run_cli

HEADER, END = 0xBB, 0x7E
HARDWARE, SOFTWARE, MANUFACTURER = "M100 V1.00", "V2.3.5", "MagicRF"


def frame(kind: int, command: int, params: bytes = b"") -> bytes:
    body = bytes((kind, command)) + len(params).to_bytes(2, "big") + params
    return bytes((HEADER,)) + body + bytes((sum(body) & 0xFF, END))


def gen2_crc(data: bytes) -> int:
    """CRC-16/GENIBUS, bitwise (the codec uses a table: two implementations, one document)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc ^ 0xFFFF


def notice(epc_hex: str, rssi_dbm: int, command: int = 0x22) -> bytes:
    """A tag notice: RSSI (signed), PC (EPC length in words in bits 15–11, UMI bit 10 set as on
    most tags), EPC, tag CRC."""
    epc = bytes.fromhex(epc_hex)
    pc_epc = bytes(((len(epc) // 2) << 3 | 0x04, 0x00)) + epc
    return frame(0x02, command, bytes((rssi_dbm & 0xFF,)) + pc_epc + gen2_crc(pc_epc).to_bytes(2, "big"))


NO_TAG = frame(0x01, 0xFF, b"\x15")
STOP_OK = frame(0x01, 0x28, b"\x00")
MALFORMED = frame(0x01, 0xFF, b"\x17")


def version(sub: int) -> bytes:
    text = {0: HARDWARE, 1: SOFTWARE, 2: MANUFACTURER}.get(sub)
    return MALFORMED if text is None else frame(0x01, 0x03, bytes((sub,)) + text.encode())


class M100Reader(SerialEmulator):
    def __init__(
        self,
        link,
        tags: list[str] | None = None,
        *,
        seed: int = 1,
        rate_hz: float = 20.0,
        read_p: float = 0.9,
        noise_ratio: float = 0.0,
        arrive_p: float = 0.05,
        depart_p: float = 0.02,
        autostart: bool = False,
    ) -> None:
        population = Population(tags or epc_population(12, seed), (0,), seed=seed, arrive_p=arrive_p, depart_p=depart_p)
        super().__init__(link, population, rate_hz=rate_hz, noise=Noise(noise_ratio, seed))
        self.read_p = read_p
        self.autostart = autostart
        self.rounds_left = 0xFFFF if autostart else 0
        self.commands: list[tuple[int, bytes]] = []  # (command, parameters) the host sent
        self._rng = random.Random(seed ^ 0xA5)
        self._rx = bytearray()

    def power_cycle(self) -> None:
        self.rounds_left = 0xFFFF if self.autostart else 0
        self._rx.clear()

    def _round(self, t_s: float) -> list[bytes]:
        frames = []
        for tag, stay in self.population.present(t_s).items():
            if self._rng.random() < self.read_p:
                self.reads_sent[(tag, 0)] += 1
                frames.append(notice(tag, round(stay.rssi_dbm + self._rng.uniform(-2, 2))))
        return frames or [NO_TAG]

    def tick(self, t_s: float) -> list[bytes]:
        if self.rounds_left <= 0:
            return []
        self.rounds_left -= 1
        return self._round(t_s)

    def answer(self, data: bytes, t_s: float) -> list[bytes]:
        self._rx += data
        out: list[bytes] = []
        while self._rx:
            start = self._rx.find(HEADER)
            if start < 0:
                self._rx.clear()
                break
            del self._rx[:start]
            if len(self._rx) < 5:
                break
            size = 7 + int.from_bytes(self._rx[3:5], "big")
            if size > 7 + 128:
                del self._rx[:1]
                continue
            if len(self._rx) < size:
                break
            cmd = bytes(self._rx[:size])
            if cmd[1] != 0x00 or cmd[-1] != END or sum(cmd[1:-2]) & 0xFF != cmd[-2]:
                del self._rx[:1]
                out.append(MALFORMED)
                continue
            del self._rx[:size]
            out += self._command(cmd[2], cmd[5:-2], t_s)
        return out

    def _command(self, command: int, params: bytes, t_s: float) -> list[bytes]:
        self.commands.append((command, params))
        if command == 0x22:
            return self._round(t_s)
        if command == 0x27 and len(params) == 3 and params[0] == 0x22:
            self.rounds_left = int.from_bytes(params[1:], "big")
            return []  # no answer: the notices are the answer
        if command == 0x28:
            self.rounds_left = 0
            return [STOP_OK]
        if command == 0x03 and len(params) == 1:
            return [version(params[0])]
        return [MALFORMED]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, rate_hz=20.0, tags=12)
    ap.add_argument("--read-p", type=float, default=0.9, help="chance a present tag is read in a round")
    ap.add_argument("--autostart", action="store_true", help="multi-poll without waiting for the host")
    args = ap.parse_args()
    reader = M100Reader(
        args.link,
        epc_population(args.tags, args.seed),
        seed=args.seed,
        rate_hz=args.rate,
        read_p=args.read_p,
        noise_ratio=args.garbage,
        arrive_p=args.arrive_p,
        depart_p=args.depart_p,
        autostart=args.autostart,
    )
    print(json.dumps(run_cli(reader, args)))


if __name__ == "__main__":
    main()
