"""Emulator: an RDM6300 125 kHz EM4100 card reader on a pseudo-terminal (device-protocols.md §1).

The reader only transmits: while a card is in the field it repeats the card's 14-byte frame
(STX, 10 hex digits, XOR checksum as 2 hex digits, ETX) every 1/rate s (the real module: about
every 50 ms → rate 20). One card at a time is in the field (EM4100 has no anti-collision); cards
come and go from a seeded population, and `population.stays()` is the ground truth. Noise: junk
before a frame, a flipped bit, a frame cut short. Unplug/replug: `unplug()`, `replug()`.

Run: python firmware-stubs/rdm6300_reader.py --link /tmp/sdgw-serial/by-id/rdm6300 --garbage 0.05
"""

from __future__ import annotations

import argparse
import json

from rfid_sim import Noise, Population, SerialEmulator, add_common_args, em4100_population, run_cli

STX, ETX = b"\x02", b"\x03"


def frame(tag_hex: str, *, lowercase: bool = False) -> bytes:
    """The 14-byte frame of a 10-hex-digit ID: `01000734E0` → 02 '01000734E0' 'D2' 03 (§1.2 R1)."""
    data = bytes.fromhex(tag_hex)
    checksum = 0
    for b in data:
        checksum ^= b
    text = f"{tag_hex.upper()}{checksum:02X}"
    return STX + (text.lower() if lowercase else text).encode() + ETX


class Rdm6300Reader(SerialEmulator):
    def __init__(
        self,
        link,
        cards: list[str] | None = None,
        *,
        seed: int = 1,
        rate_hz: float = 20.0,
        noise_ratio: float = 0.0,
        arrive_p: float = 0.05,
        depart_p: float = 0.05,
        lowercase: bool = False,
    ) -> None:
        population = Population(
            cards or em4100_population(8, seed), (0,), seed=seed, arrive_p=arrive_p, depart_p=depart_p, max_present=1
        )
        super().__init__(link, population, rate_hz=rate_hz, noise=Noise(noise_ratio, seed))
        self.lowercase = lowercase

    def tick(self, t_s: float) -> list[bytes]:
        frames = []
        for tag in self.population.present(t_s):
            self.reads_sent[(tag, 0)] += 1
            frames.append(frame(tag, lowercase=self.lowercase))
        return frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, rate_hz=20.0, tags=8)
    ap.add_argument("--lowercase", action="store_true", help="send lower-case hex digits")
    args = ap.parse_args()
    reader = Rdm6300Reader(
        args.link,
        em4100_population(args.tags, args.seed),
        seed=args.seed,
        rate_hz=args.rate,
        noise_ratio=args.garbage,
        arrive_p=args.arrive_p,
        depart_p=args.depart_p,
        lowercase=args.lowercase,
    )
    print(json.dumps(run_cli(reader, args)))


if __name__ == "__main__":
    main()
