"""Emulator: a bank of Kerong KR-CU16-style lock controllers (device-protocols.md §5.2) on a PTY.

The item-sensor flavour of the serial locker bank. Frames, built from the protocol document:
  status `02 ADDR 30 03 SUM` and unlock `02 ADDR 31 03 SUM` (ADDR = board << 4 | lock − 1) are both
  answered with the 9-byte status `02 ADDR 35 hook1-8 hook9-16 IR1-8 IR9-16 03 SUM`,
  SUM = sum of the preceding bytes mod 256; hook bit 1 = latch closed (door shut), IR bit 1 = item.
An unlock's status reply is built after the door reacted (open, or still shut when the lock is jammed).
§5.2 is integrator-derived and unverified on hardware; so is this emulator.

Knobs, actions and ground truth as in lockbank_pty.py (`BankKnobs`, jam / force_open / close_door /
set_item / go_silent / resume / unplug / replug, `bank.truth`).

Run: python firmware-stubs/kerong_bank.py --boards 0:16 --links /tmp/sdgw-serial --scenario demo
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lockbank_pty import BankKnobs, Door, PtyLockBank, Request, boards_arg, parse_links_dir, serve

STX, ETX = 0x02, 0x03
REQUEST_KINDS = {0x30: "status", 0x31: "unlock"}


@dataclass
class KerongProtocol:
    name: str = "kerong"

    def parse(self, buf: bytearray) -> list[Request]:
        out = []
        while buf:
            if buf[0] != STX:
                del buf[0]
                continue
            if len(buf) < 5:
                break
            frame = bytes(buf[:5])
            if frame[3] != ETX or sum(frame[:4]) & 0xFF != frame[4]:
                del buf[0]
                continue
            del buf[:5]
            kind = REQUEST_KINDS.get(frame[2])
            if kind is not None:
                out.append(Request(kind, frame[1] >> 4, (frame[1] & 0x0F) + 1, frame))
        return out

    def reply(self, req: Request, doors: dict[tuple[int, int], Door], lock_count: int) -> bytes | None:
        hooks = items = 0
        for n in range(min(lock_count, 16)):
            door = doors.get((req.board, n + 1))
            if door is not None:
                hooks |= (not door.is_open) << n
                items |= door.has_item << n
        addr = req.board << 4 | (req.lock - 1)
        body = bytes([STX, addr, 0x35, hooks & 0xFF, hooks >> 8, items & 0xFF, items >> 8, ETX])
        return body + bytes([sum(body) & 0xFF])


def make_bank(
    links_dir: Path, name: str = "bank1", boards: dict[int, int] | None = None, knobs: BankKnobs | None = None
) -> PtyLockBank:
    """A bank (not started) whose link is <links_dir>/by-id/usb-SDGW_Kerong_<name>-if00-port0."""
    link = links_dir / "by-id" / f"usb-SDGW_Kerong_{name}-if00-port0"
    return PtyLockBank(KerongProtocol(), boards or {0: 16}, link, knobs or BankKnobs())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--links", help="directory for the by-id style link (default: a new temp dir)")
    p.add_argument("--name", default="bank1")
    p.add_argument("--boards", default="0:16", help="address:locks,… (default 0:16)")
    p.add_argument("--answer-delay", type=float, default=0.02)
    p.add_argument("--unlock-delay", type=float, default=0.1)
    p.add_argument("--hold", type=float, default=8.0, help="auto cycle: seconds a commanded door stays open")
    p.add_argument("--loaded", default="", help="locks holding a parcel at start, e.g. 1,4")
    p.add_argument("--garbage-rate", type=float, default=0.0)
    p.add_argument("--corrupt-rate", type=float, default=0.0)
    p.add_argument("--scenario", choices=["idle", "demo"], default="idle")
    p.add_argument("--duration", type=float, default=3600.0)
    a = p.parse_args(argv)
    knobs = BankKnobs(a.answer_delay, a.unlock_delay, a.hold, True, False, a.garbage_rate, a.corrupt_rate)
    bank = make_bank(parse_links_dir(a.links), a.name, boards_arg(a.boards), knobs)
    board = min(bank.boards)
    for lock in filter(None, a.loaded.split(",")):
        bank.doors[(board, int(lock))].has_item = True
    serve(bank, a.scenario, a.duration)


if __name__ == "__main__":
    main()
