"""Emulator: a Chafon UHFReader18 / UHFReader288 reader on a pseudo-terminal (device-protocols.md §2.2).

Request/response, like the real reader: it answers each command frame (`Len Adr Cmd Data CRC`,
CRC-16/MCRF4XX LSB first) addressed to it or to broadcast 0xFF and is otherwise silent.
- Inventory (0x01): the tags present at the requested antenna (288: Ant byte 0x80–0x83; 18: the
  one antenna) — each read with probability `read_p` — in frames of at most `tags_per_frame` tags,
  status 0x03 while more follow, 0x01 on the last. No tag: 288 → status 0x01 with Ant and Num 0;
  18 → status 0xFB "no tag operable".
- Get Reader Info (0x21): firmware 00 16, type 0x09 (18) or 0x0C (288), EU band, 30 dBm, 1 s.
- Anything else: status 0xFE "illegal command". A command with a bad CRC gets no answer.
The layout (`18` or `288`) is the emulated model's; the gateway must be configured to match.

Run: python firmware-stubs/chafon_reader.py --layout 288 --antennas 4 --link /tmp/sdgw-serial/by-id/chafon
"""

from __future__ import annotations

import argparse
import json
import random

from rfid_sim import Noise, Population, SerialEmulator, add_common_args, epc_population, run_cli


def crc16(data: bytes) -> int:
    """CRC-16/MCRF4XX, bitwise."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def response(recmd: int, status: int, data: bytes = b"", adr: int = 0x00) -> bytes:
    body = bytes((5 + len(data), adr, recmd, status)) + data
    return body + crc16(body).to_bytes(2, "little")


def inventory_frames(
    reads: list[tuple[str, int]], layout: str, antenna: int, tags_per_frame: int = 4, adr: int = 0x00
) -> list[bytes]:
    """Inventory answer frames for (EPC hex, RSSI byte) reads at one antenna."""
    if not reads:
        if layout == "18":
            return [response(0x01, 0xFB, b"", adr)]
        return [response(0x01, 0x01, bytes((1 << (antenna - 1), 0)), adr)]
    frames = []
    for start in range(0, len(reads), tags_per_frame):
        chunk = reads[start : start + tags_per_frame]
        body = bytearray((len(chunk),))
        for epc_hex, rssi in chunk:
            epc = bytes.fromhex(epc_hex)
            body += bytes((len(epc),)) + epc + (bytes((rssi,)) if layout == "288" else b"")
        if layout == "288":
            body = bytearray((1 << (antenna - 1),)) + body
        status = 0x01 if start + tags_per_frame >= len(reads) else 0x03
        frames.append(response(0x01, status, bytes(body), adr))
    return frames


def reader_info(layout: str, adr: int = 0x00) -> bytes:
    reader_type = 0x09 if layout == "18" else 0x0C
    return response(0x21, 0x00, bytes((0x00, 0x16, reader_type, 0x03, 0x4E, 0x00, 0x1E, 0x0A, 0x01, 0, 0, 0)), adr)


class ChafonReader(SerialEmulator):
    def __init__(
        self,
        link,
        tags: list[str] | None = None,
        *,
        layout: str = "288",
        antennas: int = 1,
        address: int = 0x00,
        seed: int = 1,
        read_p: float = 0.95,
        tags_per_frame: int = 4,
        noise_ratio: float = 0.0,
        arrive_p: float = 0.05,
        depart_p: float = 0.02,
    ) -> None:
        if layout not in ("18", "288"):
            raise ValueError("layout is '18' or '288'")
        ports = (0,) if layout == "18" else tuple(range(1, antennas + 1))
        population = Population(
            tags or epc_population(12, seed), ports, seed=seed, arrive_p=arrive_p, depart_p=depart_p
        )
        super().__init__(link, population, rate_hz=50.0, noise=Noise(noise_ratio, seed))
        self.layout, self.address, self.read_p, self.tags_per_frame = layout, address, read_p, tags_per_frame
        self.requests = 0
        self.silent = False  # a reader that hears commands but answers none (hung firmware, bad TX line)
        self._rng = random.Random(seed ^ 0x5A)
        self._rx = bytearray()

    def power_cycle(self) -> None:
        self._rx.clear()

    def answer(self, data: bytes, t_s: float) -> list[bytes]:
        self._rx += data
        out: list[bytes] = []
        while self._rx:
            size = self._rx[0] + 1
            if size < 5:
                del self._rx[:1]
                continue
            if len(self._rx) < size:
                break
            cmd = bytes(self._rx[:size])
            if crc16(cmd):
                del self._rx[:1]
                continue
            del self._rx[:size]
            if cmd[1] in (self.address, 0xFF) and not self.silent:
                out += self._command(cmd[2], cmd[3:-2], t_s)
        return out

    def _command(self, command: int, data: bytes, t_s: float) -> list[bytes]:
        wanted = 0 if self.layout == "18" else 9  # data bytes of an inventory request
        if command == 0x01 and len(data) == wanted:
            self.requests += 1
            antenna = 0 if self.layout == "18" else data[7] - 0x80 + 1
            reads = []
            for tag, stay in self.population.present(t_s).items():
                if stay.antenna == antenna and self._rng.random() < self.read_p:
                    self.reads_sent[(tag, antenna)] += 1
                    reads.append((tag, max(0, min(255, round(stay.rssi_dbm + 160)))))
            return inventory_frames(reads, self.layout, max(antenna, 1), self.tags_per_frame, self.address)
        if command == 0x21 and not data:
            return [reader_info(self.layout, self.address)]
        return [response(command, 0xFE, b"", self.address)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, rate_hz=50.0, tags=12)
    ap.add_argument("--layout", choices=("18", "288"), default="288")
    ap.add_argument("--antennas", type=int, default=1, help="288 only: antennas 1..N (max 4)")
    ap.add_argument("--read-p", type=float, default=0.95)
    ap.add_argument("--tags-per-frame", type=int, default=4)
    args = ap.parse_args()
    reader = ChafonReader(
        args.link,
        epc_population(args.tags, args.seed),
        layout=args.layout,
        antennas=args.antennas,
        seed=args.seed,
        read_p=args.read_p,
        tags_per_frame=args.tags_per_frame,
        noise_ratio=args.garbage,
        arrive_p=args.arrive_p,
        depart_p=args.depart_p,
    )
    print(json.dumps(run_cli(reader, args)))


if __name__ == "__main__":
    main()
