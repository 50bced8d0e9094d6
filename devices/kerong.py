"""Kerong KR-CU16-style parcel-locker lock controller (16 locks + 16 item sensors per board) — sum checksum.

Source: device-protocols.md §5.2 — integrator code only (a Python KR-CU16 module, a TypeScript CU12/CU16
module, a Java `CU16Commands` class); no vendor document. Unverified on hardware: §7 lists the hook and
IR bit polarity as open. RS-485, 19200 8N1 factory default.

    frame             02 STX | ADDR | CMD | data … | 03 ETX | SUM
    status request    02 | ADDR | 30 | 03 | SUM
    unlock request    02 | ADDR | 31 | 03 | SUM
    status response   02 | ADDR | 35 | hook 1–8 | hook 9–16 | IR 1–8 | IR 9–16 | 03 | SUM   (9 bytes)

    offset  width  field
    0       1      STX 02
    1       1      ADDR: high nibble board address, low nibble lock number 0–15 (lock 1 = 0); F0 broadcast
    2       1      CMD (table COMMANDS)
    3       1      status: hook bits locks 1–8, bit n = lock n+1; 1 = latch closed (DOOR_CLOSING polarity)
    4       1      status: hook bits locks 9–16
    5       1      status: IR bits locks 1–8; 1 = item present (per the integrators)
    6       1      status: IR bits locks 9–16
    −2      1      ETX 03
    −1      1      SUM = (sum of all preceding bytes) mod 256

An unlock is answered with a 35 status frame (the integrators read 9 bytes after a 31), so the door the
unlock moved shows in that status and the next poll; there is no separate "unlock result".

Worked example ([CALC] in §5.2): status of board 0 lock 1 `02 00 30 03 35` (02+00+30+03 = 35);
unlock board 0 lock 1 `02 00 31 03 36`; reply "locks 1 and 3 latched, item in compartment 1"
`02 00 35 05 00 01 00 03 40` (02+00+35+05+00+01+00+03 = 40).

Frames whose layout the sources do not give (36 all-boards status, 38 unlock time, 39, the 6-byte
`STX addr lock cmd ETX SUM` variant, the "WKLY" board) are not claimed: the framer treats them as
garbage and `decode` answers UNSUPPORTED. Request frames in the receive stream are an echo of our own
transmission (an echoing adapter): `decode` answers UNSUPPORTED for them; the transport should discard
exactly the bytes it sent.

On the bus (`match_answer`, one request in flight): a status or unlock request of board b is answered by
the 35 status frame of board b (high nibble of ADDR). The sources give no timing: `RESPONSE_TIMEOUT_S`
and `INTER_FRAME_GAP_S` are ours, generous for 19200 baud.
"""

from __future__ import annotations

from devices.events import Answer, DoorFeedback, Event, LockStatus, Reject, RejectReason
from devices.resync import BAD, FRAME, NEED, ResyncFramer, Verdict

STX, ETX = 0x02, 0x03
BROADCAST = 0xF0
BOARDS = range(0, 16)
LOCKS = range(1, 17)
POLL_INTERVAL_S = 1.0
RESPONSE_TIMEOUT_S = 1.0
INTER_FRAME_GAP_S = 0.01

COMMANDS = {
    "status": 0x30,
    "unlock": 0x31,
    "status_all_boards": 0x32,
    "unlock_all": 0x33,  # never sent by the gateway: it opens every door of a board
    "unlock_time": 0x37,
    "status_reply": 0x35,
}
# command byte → whole frame length, for the frames whose layout the sources give
FRAME_LEN = {0x30: 5, 0x31: 5, 0x32: 5, 0x33: 5, 0x37: 7, 0x35: 9}
REQUESTS = frozenset({0x30, 0x31, 0x32, 0x33, 0x37})
# polarity → the hook-bit value that means "door open"
OPEN_WHEN_BIT = {DoorFeedback.DOOR_CLOSING: False, DoorFeedback.DOOR_OPENING: True}


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def _frame(addr: int, cmd: int, data: bytes = b"") -> bytes:
    body = bytes([STX, addr, cmd]) + data + bytes([ETX])
    return body + bytes([checksum(body)])


def _addr(board: int, lock: int) -> int:
    if board not in BOARDS or lock not in LOCKS:
        raise ValueError(f"board must be 0–15 and lock 1–16, got board {board} lock {lock}")
    return board << 4 | (lock - 1)


def encode_status(board: int, lock: int = 1) -> bytes:
    """Status of a board (all 16 hooks and IR sensors come back, whichever lock is addressed)."""
    return _frame(_addr(board, lock), COMMANDS["status"])


def encode_unlock(board: int, lock: int) -> bytes:
    """Pulse one lock. Like every board without a transaction id: never re-send on a lost reply."""
    return _frame(_addr(board, lock), COMMANDS["unlock"])


def poll_requests(board: int) -> list[bytes]:
    """The routine poll of one board: status (all 16 hooks and item sensors)."""
    return [encode_status(board)]


def match_answer(request: bytes, frame: bytes) -> Answer:
    """A status or unlock of board b is answered by board b's 35 status frame."""
    if len(request) < 3 or len(frame) < 3 or request[2] not in (COMMANDS["status"], COMMANDS["unlock"]):
        return Answer.NONE
    if frame[2] != COMMANDS["status_reply"] or frame[1] >> 4 != request[1] >> 4:
        return Answer.NONE
    return Answer.LAST


def decode(
    frame: bytes, *, received_ns: int, feedback: DoorFeedback = DoorFeedback.DOOR_CLOSING
) -> list[Event] | Reject:
    """A 35 status frame → one LockStatus per lock (16), with the item sensor's reading."""
    del received_ns
    raw = bytes(frame)
    if len(frame) < 5:
        return Reject(RejectReason.LENGTH, f"{len(frame)} bytes, a frame has at least 5", raw)
    if frame[0] != STX:
        return Reject(RejectReason.SYNC, f"starts with {frame[0]:02X}, not STX 02", raw)
    if checksum(frame[:-1]) != frame[-1]:
        return Reject(RejectReason.CHECKSUM, f"SUM {frame[-1]:02X}, expected {checksum(frame[:-1]):02X}", raw)
    if frame[-2] != ETX:
        return Reject(RejectReason.SANITY, "no ETX 03 before the SUM", raw)
    cmd = frame[2]
    expected = FRAME_LEN.get(cmd)
    if expected is None:
        return Reject(RejectReason.UNSUPPORTED, f"command {cmd:02X}: layout not documented", raw)
    if len(frame) != expected:
        return Reject(RejectReason.LENGTH, f"command {cmd:02X} of {len(frame)} bytes, expected {expected}", raw)
    if cmd in REQUESTS:
        return Reject(RejectReason.UNSUPPORTED, f"request {cmd:02X} (an echo of our own transmission?)", raw)
    board = frame[1] >> 4
    hooks = frame[3] | frame[4] << 8
    items = frame[5] | frame[6] << 8
    open_when = OPEN_WHEN_BIT[feedback]
    return [LockStatus(board, n + 1, bool(hooks >> n & 1) == open_when, bool(items >> n & 1)) for n in range(16)]


def _candidate(buf: bytearray) -> tuple[int, int | RejectReason]:
    """buf starts with STX: (FRAME, length) | (NEED, 0) | (BAD, reason)."""
    if len(buf) < 3:
        return NEED, 0
    length = FRAME_LEN.get(buf[2])
    if length is None:
        return BAD, RejectReason.SYNC
    if len(buf) < length:
        return NEED, 0
    if buf[length - 2] == ETX and checksum(buf[: length - 1]) == buf[length - 1]:
        return FRAME, length
    cut_short = STX in buf[1:length]
    return BAD, RejectReason.LENGTH if cut_short else RejectReason.CHECKSUM


class Framer(ResyncFramer):
    """Incremental framing (style.md 7): frames of the documented commands, by their fixed lengths.
    A garbage run becomes one Reject, sent out before the next good frame (or at `flush`, or at
    MAX_JUNK bytes)."""

    def _start(self, buf: bytearray) -> int:
        return buf.find(STX)

    def _candidate(self, buf: bytearray) -> Verdict:
        return _candidate(buf)
