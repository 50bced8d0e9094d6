"""EM4100 125 kHz card readers with UART output: RDM6300 / RDM630 family (device-protocols.md §1).

UART 9600 8N1, the reader only transmits; it repeats the frame about every 50 ms while a card is
in the field (presence logic dedupes). One frame, 14 bytes:

    offset  0      1  0x02 STX
    offset  1–10  10  five data bytes D0–D4 as ASCII hex digits, most significant first
                      D0 = EM4100 version / customer byte, D1–D4 = 32-bit card number (D1 high)
    offset 11–12   2  checksum as ASCII hex digits = D0 ⊕ D1 ⊕ D2 ⊕ D3 ⊕ D4
    offset 13      1  0x03 ETX

Worked example (§1.2 R1, RDM630 datasheet): `02 30 31 30 30 30 37 33 34 45 30 44 32 03` = text
`01000734E0` + `D2`; 01⊕00⊕07⊕34⊕E0 = D2 ✓ → ID `01000734E0`, card number 0x000734E0 = 472288,
printed `0000472288` or `007,13536`.

The ID is the full 40 bits (version byte included): it identifies a person. `TagRead.is_personal`
is True and the pipeline replaces `tag_hex` by its pseudonym (decisions.md D13). Rejects never
carry the clear digits: their raw bytes have every hex digit masked as `x`.

Framing (§1.1, stricter than python-rdm6300): no STX, no frame. Bytes while no frame has begun are
garbage: discarded up to the next STX as one SYNC reject, however long the run. Any other failure
(non-hex character, not 12 characters, bad checksum, a new STX before the ETX) is one reject, and
the bytes discarded after it up to the next STX belong to it. Lower-case hex digits are accepted.
"""

from __future__ import annotations

import string

from devices.events import Event, Reject, RejectReason, TagKind, TagRead

STX, ETX = 0x02, 0x03
FRAME_BYTES = 14
RAW_MAX = 64  # raw bytes kept in a reject
_HEX = frozenset(string.hexdigits.encode())
_MASK = bytes.maketrans(bytes(string.hexdigits, "ascii"), b"x" * len(string.hexdigits))


def mask(raw: bytes) -> bytes:
    """Raw bytes safe to dead-letter: every hex digit (a piece of a card ID) becomes `x`."""
    return bytes(raw[:RAW_MAX]).translate(_MASK)


def _reject(reason: RejectReason, detail: str, raw: bytes) -> Reject:
    return Reject(reason, detail, mask(raw))


def decode(frame: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One 14-byte frame → one TagRead (kind em4100, personal, antenna 0, no RSSI)."""
    del received_ns  # the frame carries no time
    if len(frame) != FRAME_BYTES:
        return _reject(RejectReason.LENGTH, f"{len(frame)} bytes, a frame has 14", frame)
    if frame[0] != STX:
        return _reject(RejectReason.SYNC, "no STX", frame)
    if frame[13] != ETX:
        return _reject(RejectReason.LENGTH, "no ETX after 12 characters", frame)
    text = frame[1:13]
    if not _HEX.issuperset(text):
        return _reject(RejectReason.SANITY, "non-hex character", frame)
    data = bytes.fromhex(text.decode())
    if data[0] ^ data[1] ^ data[2] ^ data[3] ^ data[4] != data[5]:
        return _reject(RejectReason.CHECKSUM, "XOR of the five data bytes differs", frame)
    return [TagRead(TagKind.EM4100, data[:5].hex().upper(), 0, None, None, 1, True)]


def printed_numbers(tag_hex: str) -> tuple[str, str]:
    """The two renderings printed on cards (§1.1), from D1–D4 only: 10-digit decimal and W26 style
    `FFF,CCCCC` (facility = D2, card = D3·256 + D4). For a technician; never logged."""
    card = int(tag_hex[2:10], 16)
    return f"{card:010d}", f"{card >> 16 & 0xFF:03d},{card & 0xFFFF:05d}"


class Framer:
    """§1.1 framing: one reject per failure or garbage run, however the bytes are chunked."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._absorbing = False  # a reject already stands for the bytes up to the next STX

    def feed(self, chunk: bytes) -> list[bytes | Reject]:
        self._buf += chunk
        return self._scan(idle=False)

    def flush(self) -> list[bytes | Reject]:
        """The line has been silent for the inter-byte timeout: what is buffered will not grow."""
        return self._scan(idle=True)

    def _fail(self, out: list[bytes | Reject], reject: Reject) -> None:
        out.append(reject)
        self._absorbing = True

    def _scan(self, *, idle: bool) -> list[bytes | Reject]:
        buf, out, i = self._buf, [], 0
        while i < len(buf):
            if buf[i] != STX:
                end = buf.find(STX, i)
                end = len(buf) if end < 0 else end
                if not self._absorbing:
                    self._fail(out, _reject(RejectReason.SYNC, "garbage before STX", buf[i:end]))
                i = end
                continue
            window = buf[i + 1 : i + FRAME_BYTES]
            stx, etx = window.find(STX), window.find(ETX)
            if stx >= 0 and (etx < 0 or stx < etx):
                self._fail(out, _reject(RejectReason.LENGTH, "new STX before the ETX", buf[i : i + 1 + stx]))
                i += 1 + stx
            elif etx >= 0:
                frame = bytes(buf[i : i + 2 + etx])
                result = decode(frame, received_ns=0)
                if isinstance(result, Reject):
                    self._fail(out, result)
                else:
                    out.append(frame)
                    self._absorbing = False
                i += 2 + etx
            elif len(window) == FRAME_BYTES - 1:
                self._fail(out, _reject(RejectReason.LENGTH, "no ETX after 12 characters", buf[i : i + FRAME_BYTES]))
                i += FRAME_BYTES
            elif idle:
                self._fail(out, _reject(RejectReason.LENGTH, "frame cut short", buf[i:]))
                i = len(buf)
            else:
                break
        del buf[:i]
        return out
