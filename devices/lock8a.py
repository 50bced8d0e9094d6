"""RS-485 "8A/80" parcel-locker lock board (8 channels per board, DIP address) — XOR (BCC) checksum.

Source: device-protocols.md §5.1 (Open-Locker `locker-client/docs/rs485-lock-board.md`, its codec and
tests, ADR-0061 / ADR-0067). 9600 8N1, no flow control. The gateway asks, one board at a time; the
board never speaks unasked (a "0x82" change report exists only in custom firmware: poll instead).

    unlock request       8A | board | channel | 11 | BCC        channel 1-based
    unlock response      8A | board | channel | ST | BCC        ST 00 / 11: door feedback, ~500 ms later
    query-all request    80 | board | 00 | 33 | BCC
    query-all response   80 | board | S[n-1] … S[1] S[0] | 33 | BCC     n ≥ 1 status bytes

    offset  width  field
    0       1      header: 8A unlock, 80 query-all
    1       1      board address (DIP; Open-Locker 1–31, vendor text 1–99)
    2       1      unlock: channel, 1-based | query-all response: first status byte
    2…−3    n      query-all: status bytes; S[k] (k-th from the end) = channels 8k+1 … 8k+8, LSB lowest
    −2      1      command marker: 11 unlock, 33 query-all
    −1      1      BCC = XOR of every preceding byte (so the XOR of a whole good frame is 00)

Feedback polarity is wiring, set per bank (`DoorFeedback`): DOOR_CLOSING (the default) reads bit 1 /
status 11 as "door closed". The protocol has no item sensor: `item_present` is None, never guessed
(decisions.md D10).

Worked example (L1, captured at DIP 1): TX `80 01 00 33 B2` (80⊕01 = 81, ⊕00 = 81, ⊕33 = B2);
RX `80 01 00 00 00 33 B2`: three status bytes 00 → channels 1–24 all bit 0 → all open under
DOOR_CLOSING. That board has 8 channels but reports 24: the channel count comes from the frame.

Framing (`Framer`): no length field and no unique end byte, and 33 is also a legal status byte and
BCC, so a reply is never split at a 33. An unlock reply is 5 bytes; a query-all reply ends at the first
point where the bytes so far are a whole reply (33 second-to-last, XOR 00); an unfinished reply is given
up as soon as a whole frame ends the buffer behind it (or after MAX_QUERY_LEN bytes). The transport
calls `Framer.flush()` once the line has been quiet for the inter-frame gap (Open-Locker: 25 ms): what
is buffered then is complete or garbage. Without that, two ambiguities remain, both rare: a reply whose
first bytes already form a valid shorter reply is cut early, and a truncated reply glued to the next one
can form a valid longer "phantom" (e.g. `80 01 00` + `80 01 00 00 33 33 81` holds the valid
`80 01 00 80 01 00 00 33 33`: the fragment's XOR equals the next reply's BCC). Both vanish when config
gives the bus's status-byte count (`Framer(status_bytes=3)` for the verified board): replies then have
one length.

Echo: the unlock reply with status 11 is byte-identical to the unlock request, and a query-all request
reads as a one-status-byte reply. On an adapter that echoes its own transmission the transport must
discard exactly the bytes it sent before feeding the framer.

On the bus (`match_answer`, one request in flight): an unlock is answered by the unlock reply of the same
board and channel, a query-all by the query-all reply of the same board. Open-Locker waits 25 ms of
silence between frames and gives up on a reply after 1500 ms (`INTER_FRAME_GAP_S`, `RESPONSE_TIMEOUT_S`).
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.events import Answer, DoorFeedback, Event, LockStatus, Reject, RejectReason, UnlockAnswered
from devices.resync import BAD, FRAME, NEED, ResyncFramer, Verdict


@dataclass(frozen=True, slots=True)
class Command:
    header: int
    marker: int


COMMANDS = {
    "unlock": Command(0x8A, 0x11),
    "query_all": Command(0x80, 0x33),
}
HEADERS = frozenset(c.header for c in COMMANDS.values())
UNLOCK_LEN = 5
MIN_QUERY_LEN = 5  # 80 | board | one status byte | 33 | BCC
MAX_STATUS_BYTES = 16  # 128 channels: far above any board seen; bounds how long the framer waits
MAX_QUERY_LEN = 4 + MAX_STATUS_BYTES
BOARDS = range(1, 100)  # vendor text: DIP 1–99
POLL_INTERVAL_S = 1.0
RESPONSE_TIMEOUT_S = 1.5  # Open-Locker's reply timeout; an unlock reply comes about 0.5 s after the pulse
INTER_FRAME_GAP_S = 0.025  # Open-Locker's end-of-reply silence
CHANNELS = range(1, 256)

# unlock reply status byte → is the feedback bit set?
UNLOCK_STATUS = {0x00: False, 0x11: True}
# polarity → the feedback-bit value that means "door open"
OPEN_WHEN_BIT = {DoorFeedback.DOOR_CLOSING: False, DoorFeedback.DOOR_OPENING: True}


def bcc(data: bytes | bytearray) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def _frame(body: bytes) -> bytes:
    return body + bytes([bcc(body)])


def encode_unlock(board: int, lock: int) -> bytes:
    """Pulse one lock. Never re-send on a lost reply: there is no transaction id (a second opening)."""
    if board not in BOARDS or lock not in CHANNELS:
        raise ValueError(f"board must be 1–99 and lock 1–255, got board {board} lock {lock}")
    c = COMMANDS["unlock"]
    return _frame(bytes([c.header, board, lock, c.marker]))


def encode_query_all(board: int) -> bytes:
    """Ask one board for the door feedback of all its channels."""
    if board not in BOARDS:
        raise ValueError(f"board must be 1–99, got {board}")
    c = COMMANDS["query_all"]
    return _frame(bytes([c.header, board, 0x00, c.marker]))


def poll_requests(board: int) -> list[bytes]:
    """The routine poll of one board: query-all."""
    return [encode_query_all(board)]


def match_answer(request: bytes, frame: bytes) -> Answer:
    """Same header and board; an unlock reply also names the channel that was pulsed."""
    if len(request) < 3 or len(frame) < 3 or frame[0] != request[0] or frame[1] != request[1]:
        return Answer.NONE
    if request[0] == COMMANDS["unlock"].header and frame[2] != request[2]:
        return Answer.NONE
    return Answer.LAST


def decode(
    frame: bytes, *, received_ns: int, feedback: DoorFeedback = DoorFeedback.DOOR_CLOSING
) -> list[Event] | Reject:
    """One reply frame → UnlockAnswered, or one LockStatus per channel the query-all reply covers."""
    del received_ns  # the board carries no time
    if len(frame) < UNLOCK_LEN:
        return Reject(RejectReason.LENGTH, f"{len(frame)} bytes, a reply has at least 5", bytes(frame))
    header = frame[0]
    if header not in HEADERS:
        return Reject(RejectReason.SYNC, f"header {header:02X} is neither 8A nor 80", bytes(frame))
    if bcc(frame) != 0:
        return Reject(RejectReason.CHECKSUM, f"BCC {frame[-1]:02X}, expected {bcc(frame[:-1]):02X}", bytes(frame))
    board = frame[1]
    if board not in BOARDS:
        return Reject(RejectReason.SANITY, f"board address {board} outside 1–99", bytes(frame))
    open_when = OPEN_WHEN_BIT[feedback]
    if header == COMMANDS["unlock"].header:
        if len(frame) != UNLOCK_LEN:
            return Reject(RejectReason.LENGTH, f"unlock reply of {len(frame)} bytes, expected 5", bytes(frame))
        channel, status = frame[2], frame[3]
        if channel == 0 or status not in UNLOCK_STATUS:
            return Reject(RejectReason.SANITY, f"channel {channel} / status {status:02X}", bytes(frame))
        return [UnlockAnswered(board, channel, UNLOCK_STATUS[status] == open_when)]
    if frame[-2] != COMMANDS["query_all"].marker:
        return Reject(RejectReason.SANITY, "query-all reply without its 33 marker", bytes(frame))
    status_bytes = frame[2:-2]
    if len(status_bytes) > MAX_STATUS_BYTES:
        return Reject(RejectReason.LENGTH, f"{len(status_bytes)} status bytes", bytes(frame))
    events: list[Event] = []
    for group, byte in enumerate(reversed(status_bytes)):
        for bit in range(8):
            is_set = bool(byte >> bit & 1)
            events.append(LockStatus(board, group * 8 + bit + 1, is_set == open_when, None))
    return events


def _candidate(buf: bytearray, status_bytes: int | None) -> tuple[int, int | RejectReason]:
    """buf starts with a header byte: (FRAME, length) | (NEED, 0) | (BAD, reason)."""
    if buf[0] == COMMANDS["unlock"].header:
        if len(buf) < UNLOCK_LEN:
            return NEED, 0
        window = buf[:UNLOCK_LEN]
        if bcc(window) == 0 and window[3] in UNLOCK_STATUS:
            return FRAME, UNLOCK_LEN
        cut_short = any(b in HEADERS for b in window[1:])
        return BAD, RejectReason.LENGTH if cut_short else RejectReason.CHECKSUM
    if status_bytes is not None:  # the bus's reply length is known: no guessing where it ends
        length = 4 + status_bytes
        if len(buf) < length:
            return NEED, 0
        if _query_end(buf[:length]) == length:
            return FRAME, length
        cut_short = any(b in HEADERS for b in buf[1:length])
        return BAD, RejectReason.LENGTH if cut_short else RejectReason.CHECKSUM
    end = _query_end(buf)
    if end:
        return FRAME, end
    if len(buf) >= MAX_QUERY_LEN:
        return BAD, RejectReason.LENGTH
    # A whole frame ending exactly at the end of the buffer behind an unfinished reply means that reply
    # was cut short: give it up now instead of holding the good frame until MAX_QUERY_LEN bytes arrive.
    # (Inside a genuine reply of ≤ 3 status bytes no such tail exists; see the module's top.)
    if any(buf[j] in HEADERS and _whole(buf[j:]) for j in range(1, len(buf))):
        return BAD, RejectReason.LENGTH
    return NEED, 0


def _query_end(buf: bytearray) -> int:
    """Length of the shortest whole query-all reply at the start of buf, 0 if none (yet)."""
    marker = COMMANDS["query_all"].marker
    running = 0
    for end, byte in enumerate(buf[:MAX_QUERY_LEN], start=1):
        running ^= byte
        if end >= MIN_QUERY_LEN and running == 0 and buf[end - 2] == marker:
            return end
    return 0


def _whole(tail: bytearray) -> bool:
    if tail[0] == COMMANDS["unlock"].header:
        return len(tail) == UNLOCK_LEN and bcc(tail) == 0 and tail[3] in UNLOCK_STATUS
    return _query_end(tail) == len(tail)


class Framer(ResyncFramer):
    """Incremental framing of the reply stream (style.md 7). `feed` returns whole frames and rejects
    and keeps the tail; a garbage run (noise, a truncated or corrupted reply) becomes one Reject, sent
    out just before the next good frame (or at `flush`, or once it reaches MAX_JUNK bytes)."""

    def __init__(self, status_bytes: int | None = None) -> None:
        """`status_bytes`: how many status bytes this bus's boards send in a query-all reply, where
        config knows it (the verified 8-channel board: 3); None = find the end from the bytes."""
        super().__init__()
        self.status_bytes = status_bytes

    def _start(self, buf: bytearray) -> int:
        return next((i for i, b in enumerate(buf) if b in HEADERS), -1)

    def _candidate(self, buf: bytearray) -> Verdict:
        return _candidate(buf, self.status_bytes)
