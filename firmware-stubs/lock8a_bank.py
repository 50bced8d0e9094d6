"""Emulator: a bank of RS-485 "8A/80" lock boards (device-protocols.md §5.1) on a pseudo-terminal.

Answers what the real board answers, with real frames built from the protocol document:
  query-all `80 b 00 33 BCC` → `80 b S[n-1] … S[0] 33 BCC`, one bit per channel, LSB = lowest channel of
      its group, the last status byte = channels 1–8; `status_bytes` of them (3, as the verified
      8-channel board, whatever its channel count)
  unlock `8A b ch 11 BCC` → `8A b ch ST BCC` after `unlock_delay_s` (the board: ~0.5 s), ST = the door
      feedback after the pulse
Wiring `door_closing` (the default): bit 1 / ST 11 = door closed; `door_opening` reverses it. No item
sensor exists in this protocol; the bank still keeps the physical item state as ground truth (a
courier's deposit happens whether or not the gateway can see it — decisions.md D10).

Knobs (see `BankKnobs` in lockbank_pty.py): answer / unlock delay, auto deposit–pickup cycle and its
hold time, split replies, noise bytes, corrupted bits; actions: jam, force_open, close_door, go_silent /
resume, unplug / replug. Ground truth in `bank.truth`.

Run: python firmware-stubs/lock8a_bank.py --boards 1:8 --links /tmp/sdgw-serial --scenario demo
(prints the link path; point a `lock8a-rs485` device's `port` at it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lockbank_pty import BankKnobs, Door, PtyLockBank, Request, boards_arg, parse_links_dir, serve

UNLOCK, QUERY = 0x8A, 0x80


def _bcc(data: bytes) -> int:
    value = 0
    for b in data:
        value ^= b
    return value


@dataclass
class Lock8aProtocol:
    name: str = "lock8a"
    status_bytes: int = 3
    door_closing: bool = True  # wiring: bit 1 = door closed

    def parse(self, buf: bytearray) -> list[Request]:
        out = []
        while buf:
            if buf[0] not in (UNLOCK, QUERY):
                del buf[0]
                continue
            if len(buf) < 5:
                break
            frame = bytes(buf[:5])
            if _bcc(frame) != 0:
                del buf[0]
                continue
            del buf[:5]
            if frame[0] == UNLOCK and frame[3] == 0x11:
                out.append(Request("unlock", frame[1], frame[2], frame))
            elif frame[0] == QUERY and frame[2] == 0x00 and frame[3] == 0x33:
                out.append(Request("status", frame[1], 0, frame))
        return out

    def _bit(self, door: Door | None) -> int:
        closed = door is None or not door.is_open
        return int(closed if self.door_closing else not closed)

    def reply(self, req: Request, doors: dict[tuple[int, int], Door], lock_count: int) -> bytes | None:
        if req.kind == "unlock":
            body = bytes([UNLOCK, req.board, req.lock, 0x11 if self._bit(doors.get((req.board, req.lock))) else 0x00])
            return body + bytes([_bcc(body)])
        groups = max(self.status_bytes, (lock_count + 7) // 8)
        status = []
        for g in range(groups):  # group g = channels 8g+1 … 8g+8
            byte = 0
            for bit in range(8):
                channel = 8 * g + bit + 1
                if channel <= lock_count:  # channels the board does not have report 0, as the capture does
                    byte |= self._bit(doors.get((req.board, channel))) << bit
            status.append(byte)
        body = bytes([QUERY, req.board, *reversed(status), 0x33])
        return body + bytes([_bcc(body)])


def make_bank(
    links_dir: Path,
    name: str = "bank1",
    boards: dict[int, int] | None = None,
    knobs: BankKnobs | None = None,
    *,
    status_bytes: int = 3,
    door_closing: bool = True,
) -> PtyLockBank:
    """A bank (not started) whose link is <links_dir>/by-id/usb-SDGW_Lock8A_<name>-if00-port0."""
    link = links_dir / "by-id" / f"usb-SDGW_Lock8A_{name}-if00-port0"
    return PtyLockBank(
        Lock8aProtocol(status_bytes=status_bytes, door_closing=door_closing),
        boards or {1: 8},
        link,
        knobs or BankKnobs(),
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--links", help="directory for the by-id style link (default: a new temp dir)")
    p.add_argument("--name", default="bank1")
    p.add_argument("--boards", default="1:8", help="address:channels,… (default 1:8)")
    p.add_argument("--status-bytes", type=int, default=3)
    p.add_argument("--wiring", choices=["door_closing", "door_opening"], default="door_closing")
    p.add_argument("--answer-delay", type=float, default=0.02)
    p.add_argument("--unlock-delay", type=float, default=0.5)
    p.add_argument("--hold", type=float, default=8.0, help="auto cycle: seconds a commanded door stays open")
    p.add_argument("--garbage-rate", type=float, default=0.0)
    p.add_argument("--corrupt-rate", type=float, default=0.0)
    p.add_argument("--scenario", choices=["idle", "demo"], default="idle")
    p.add_argument("--duration", type=float, default=3600.0)
    a = p.parse_args(argv)
    knobs = BankKnobs(a.answer_delay, a.unlock_delay, a.hold, True, False, a.garbage_rate, a.corrupt_rate)
    bank = make_bank(
        parse_links_dir(a.links),
        a.name,
        boards_arg(a.boards),
        knobs,
        status_bytes=a.status_bytes,
        door_closing=a.wiring == "door_closing",
    )
    serve(bank, a.scenario, a.duration)


if __name__ == "__main__":
    main()
