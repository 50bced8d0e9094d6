"""UHF EPC Gen2 readers speaking Chafon's "UHFReader18 / UHFReader288" protocol (CF-RU5102, CF-RU5106/5112,
CF-MU80x/90x …).

Source: device-protocols.md §2.2 (wabson/chafon-rfid and its tests; PyPI `uhfreader18` tests). Serial
speed is reader configuration (57600 is the family's usual default, 115200 also seen). Frames:

    command   Len · Adr · Cmd   · Data… · CRC-LSB · CRC-MSB      Len = 4 + len(Data)
    response  Len · Adr · reCmd · Status · Data… · CRC-LSB · CRC-MSB   Len = 5 + len(Data) ≥ 5

    Len   1  bytes that follow Len, CRC included: a frame is Len + 1 bytes
    Adr   1  reader address; 0xFF = broadcast when sending, readers answer with their own
    CRC   2  CRC-16/MCRF4XX (0x1021 reflected = 0x8408, preset 0xFFFF, no final XOR) over Len…Data,
             LSB first; equivalently the CRC over the whole frame is 0x0000 ("123456789" → 0x6F91)

Inventory responses (reCmd 0x01) come in two layouts that the bytes cannot tell apart; the layout is
the configured model's (one decode function per model), never guessed:

    UHFReader18   Data = Num · Num × (EPC length, EPC)                    no antenna, no RSSI
    UHFReader288  Data = Ant · Num · Num × (EPC length, EPC, RSSI)         Ant bit 0–3 = antenna 1–4

A frame that does not parse exactly in its layout (fields past the end, bytes left over) is one
LENGTH reject. The 288 RSSI byte has no documented unit: it is kept raw (`rssi_raw`).
Worked example (§2.2 C2, 288 layout): `0D 00 01 03 01 01 04 00 32 30 38 6D A3 D2` → status 0x03
(more frames follow), antenna 1, one tag, EPC `00323038` (4 bytes: take the length byte), RSSI 0x6D.

Inventory status (chafon-rfid `response.py`, Chafon SDK status table): 0x01 complete, 0x02 scan
time overflow, 0x03 more frames follow, 0x04 reader memory full (tags still listed; ReaderFault
too), 0xFB "no tag operable" (an empty round; the UHFReader18 "no tag" answer per integrators,
§7 open point), 0xF8 antenna error and the other error codes → ReaderFault. Each inventory frame
also gives an InventoryRound; `is_complete` (status ≠ 0x03) tells the gateway to poll again.

The reader is request/response: the gateway sends an inventory command, reads frames until one has
`is_complete`, then sends the next (or after `POLL_S` at the latest). Get Reader Info (0x21) →
ReaderInfo; any other answer → ReaderReply. `match_answer` is that rule for the poll loop: a frame
with the request's reCmd (and the request's address, unless it was broadcast) answers it; an
inventory frame with status 0x03 is PART of the round (InventoryRound.is_complete False), any other
is its LAST frame — the cue for the next inventory (reply-driven pacing).
"""

from __future__ import annotations

from typing import NamedTuple

from devices import epc
from devices.events import (
    Answer,
    Event,
    InventoryRound,
    ReaderFault,
    ReaderInfo,
    ReaderReply,
    Reject,
    RejectReason,
    TagKind,
    TagRead,
)

MIN_LEN = 5  # smallest Len of a response
RAW_MAX = 256
CMD_INVENTORY, CMD_READER_INFO = 0x01, 0x21
BROADCAST = 0xFF
POLL_S = 1.2  # at the latest, poll again: longer than the 1 s scan time the start commands ask for
MIN_ROUND_S = 0.02  # the poll loop's default floor between rounds (a reader's scan time paces it)
INTER_FRAME_GAP_S = 0.005
STATUS_MORE = 0x03
STATUS_MEMORY_FULL = 0x04
STATUS_NO_TAG = 0xFB

STATUS_NAMES = {
    0x00: "success",
    0x01: "inventory complete",
    0x02: "inventory scan time overflow",
    0x03: "more frames follow",
    0x04: "reader memory full",
    0x05: "access password error",
    0x09: "kill password error",
    0x0A: "kill password cannot be zero",
    0x0B: "tag does not support the command",
    0x0C: "access password cannot be zero",
    0x0D: "tag is protected",
    0x0E: "tag is unprotected",
    0x10: "some bytes locked, write failed",
    0x11: "cannot lock",
    0x12: "already locked",
    0x13: "parameter save failed",
    0x14: "cannot adjust",
    0x1A: "tag custom function error",
    0xF8: "antenna error",
    0xF9: "command execution error",
    0xFA: "poor communication with the tag",
    0xFB: "no tag operable",
    0xFC: "tag returned an error code",
    0xFD: "command length wrong",
    0xFE: "illegal command",
    0xFF: "parameter error",
}
INVENTORY_TAG_STATUSES = frozenset({0x01, 0x02, 0x03, 0x04})
READER_TYPES = {0x09: "UHFReader18", 0x0C: "UHFReader288M", 0x0F: "UHFReader86", 0x10: "UHFReader86"}
BANDS = {
    1: "China-2",
    2: "US",
    3: "Korea",
    4: "EU",
    6: "Ukraine",
    7: "Peru",
    8: "China-1",
    9: "EU3",
    10: "Taiwan",
    12: "US3",
}
BAND_CHANNELS_MHZ = {4: (865.1, 0.2)}  # band → (channel 0, spacing): only EU is given in §2.2
ANTENNA_BITS = {0x01: 1, 0x02: 2, 0x04: 3, 0x08: 4}


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/MCRF4XX."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC[(crc ^ b) & 0xFF]
    return crc


def command(cmd: int, data: bytes = b"", adr: int = BROADCAST) -> bytes:
    body = bytes((4 + len(data), adr, cmd)) + data
    return body + crc16(body).to_bytes(2, "little")


def inventory_18(adr: int = BROADCAST) -> bytes:
    """UHFReader18 inventory: broadcast → `04 FF 01 1B B4`."""
    return command(CMD_INVENTORY, b"", adr)


def inventory_288(
    adr: int = BROADCAST,
    *,
    q: int = 15,
    session: int = 0,
    mask_mem: int = 1,
    target: int = 0,
    antenna: int = 1,
    scan_time_ms: int = 2000,
    statistics: bool = False,
    strategy: int = 0,
    fast_id: bool = False,
) -> bytes:
    """UHFReader288 inventory, 9 data bytes: QValue (bit 7 statistics, bit 6 strategy, bit 5 FastID,
    bits 3–0 Q) · Session · MaskMem · MaskAdr (2) · MaskLen · Target · Ant (0x80 + antenna − 1) ·
    ScanTime (×100 ms). The defaults are chafon-rfid's: data `0F 00 01 00 00 00 00 80 14`."""
    if not (0 <= q <= 15 and 1 <= antenna <= 4 and 0 < scan_time_ms <= 25_500):
        raise ValueError("q 0..15, antenna 1..4, scan time 100..25500 ms")
    qvalue = statistics << 7 | (strategy & 1) << 6 | fast_id << 5 | q
    data = bytes((qvalue, session, mask_mem, 0, 0, 0, target, 0x80 + antenna - 1, scan_time_ms // 100))
    return command(CMD_INVENTORY, data, adr)


def get_reader_info(adr: int = BROADCAST) -> bytes:
    """Get Reader Info: address 0 → `04 00 21 D9 6A`."""
    return command(CMD_READER_INFO, b"", adr)


def start_commands_18() -> list[bytes]:
    return [inventory_18()]


def start_commands_288() -> list[bytes]:
    return [inventory_288(scan_time_ms=1000)]


def poll_requests_18(address: int = BROADCAST) -> list[bytes]:
    return [inventory_18(address)]


def poll_requests_288(address: int = BROADCAST) -> list[bytes]:
    return [inventory_288(address, scan_time_ms=1000)]


def match_answer(request: bytes, frame: bytes) -> Answer:
    """The frame answers `request` if it carries its command (and address, unless broadcast); an
    inventory frame with status 0x03 is only part of the round."""
    if len(request) < 3 or len(frame) < 4 or frame[2] != request[2]:
        return Answer.NONE
    if request[1] != BROADCAST and frame[1] != request[1]:
        return Answer.NONE
    if frame[2] == CMD_INVENTORY and frame[3] == STATUS_MORE:
        return Answer.PART
    return Answer.LAST


def _reject(reason: RejectReason, detail: str, data: bytes | bytearray) -> Reject:
    return Reject(reason, detail, bytes(data[:RAW_MAX]))


class _Tags(NamedTuple):
    antenna: int
    tags: list[tuple[bytes, int | None]]  # (EPC, RSSI byte or None)


class _Bad(NamedTuple):
    reason: RejectReason
    detail: str


def _tags_18(data: bytes) -> _Tags | _Bad:
    return _tag_list(data, 0, rssi=False)


def _tags_288(data: bytes) -> _Tags | _Bad:
    if not data:
        return _Bad(RejectReason.LENGTH, "no antenna byte")
    antenna = ANTENNA_BITS.get(data[0])
    if antenna is None:
        return _Bad(RejectReason.SANITY, f"antenna byte 0x{data[0]:02X} is not one of 01/02/04/08")
    return _tag_list(data[1:], antenna, rssi=True)


def _tag_list(data: bytes, antenna: int, *, rssi: bool) -> _Tags | _Bad:
    """Num · Num × (length, EPC[, RSSI]), parsed exactly."""
    if not data:
        return _Bad(RejectReason.LENGTH, "no Num byte")
    tags, pos = [], 1
    for _ in range(data[0]):
        end = pos + 1 + (data[pos] if pos < len(data) else 0) + rssi
        if pos >= len(data) or end > len(data):
            return _Bad(RejectReason.LENGTH, "tag list runs past the end of Data")
        if data[pos] == 0:
            return _Bad(RejectReason.SANITY, "empty EPC")
        tags.append((data[pos + 1 : end - rssi], data[end - 1] if rssi else None))
        pos = end
    if pos != len(data):
        return _Bad(RejectReason.LENGTH, f"{len(data) - pos} bytes left after {data[0]} tags")
    return _Tags(antenna, tags)


def _inventory(status: int, data: bytes, frame: bytes, layout) -> list[Event] | Reject:
    if status == STATUS_NO_TAG:
        return [InventoryRound(0, 0, True)]
    if status not in INVENTORY_TAG_STATUSES:
        return [ReaderFault(status, STATUS_NAMES.get(status, f"status 0x{status:02X}"))]
    parsed = layout(data)
    if isinstance(parsed, _Bad):
        return _reject(parsed.reason, parsed.detail, frame)
    antenna, tags = parsed
    events: list[Event] = []
    for epc_bytes, rssi in tags:
        tag_hex = epc_bytes.hex().upper()
        gtin14, serial = epc.gtin_and_serial(tag_hex)
        events.append(TagRead(TagKind.EPC, tag_hex, antenna, None, rssi, 1, False, gtin14, serial))
    if status == STATUS_MEMORY_FULL:
        events.append(ReaderFault(status, STATUS_NAMES[status]))
    events.append(InventoryRound(antenna, len(tags), status != STATUS_MORE))
    return events


def _reader_info(data: bytes, frame: bytes) -> list[Event] | Reject:
    """Data: version (2) · type · protocols · MaxFre · MinFre · power · scan time (×100 ms) [· more]."""
    if len(data) < 8:
        return _reject(RejectReason.LENGTH, f"reader info has {len(data)} data bytes, needs 8", frame)
    band = (data[4] >> 6) << 2 | data[5] >> 6
    min_mhz = max_mhz = None
    if band in BAND_CHANNELS_MHZ:
        channel0, spacing = BAND_CHANNELS_MHZ[band]
        min_mhz, max_mhz = (round(channel0 + spacing * (b & 0x3F), 3) for b in (data[5], data[4]))
    return [
        ReaderInfo(
            READER_TYPES.get(data[2], f"type 0x{data[2]:02X}"),
            f"{data[0]}.{data[1]:02d}",
            "",
            BANDS.get(band, f"band {band}"),
            min_mhz,
            max_mhz,
            data[6],
            data[7] * 100,
        )
    ]


def _decode(frame: bytes, layout) -> list[Event] | Reject:
    if len(frame) < MIN_LEN + 1:
        return _reject(RejectReason.LENGTH, f"{len(frame)} bytes, a response has at least 6", frame)
    if frame[0] + 1 != len(frame):
        return _reject(RejectReason.LENGTH, f"Len {frame[0]} does not match {len(frame)} bytes", frame)
    if crc16(frame):
        return _reject(RejectReason.CHECKSUM, "CRC-16/MCRF4XX differs", frame)
    recmd, status, data = frame[2], frame[3], bytes(frame[4:-2])
    if recmd == CMD_INVENTORY:
        return _inventory(status, data, frame, layout)
    if recmd == CMD_READER_INFO and status == 0:
        return _reader_info(data, frame)
    return [ReaderReply(recmd, status == 0, status, STATUS_NAMES.get(status, f"status 0x{status:02X}"))]


def decode_18(frame: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One response frame of a reader configured as UHFReader18 (inventory layout without RSSI)."""
    del received_ns
    return _decode(frame, _tags_18)


def decode_288(frame: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One response frame of a reader configured as UHFReader288 (antenna byte, RSSI per tag)."""
    del received_ns
    return _decode(frame, _tags_288)


class Framer:
    """§2.2 "Framing a response stream": no sync byte, Len then CRC.

    Len < 5 cannot start a response: that byte is garbage. Otherwise wait for Len + 1 bytes; a good
    CRC is a frame, a bad one drops ONE byte (the Len of a truncated frame reaches into the good frame
    after it). Every byte ≥ 5 inside a damaged frame is a false candidate, so rejects count damaged
    stretches, not candidates: the first failure after a good frame (or at the start) is one reject
    with its reason; everything dropped until the next good frame belongs to it. `flush()` is for the
    inter-byte timeout: pending candidates fail (LENGTH) and the buffered bytes are worked through.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._absorbing = False

    def feed(self, chunk: bytes) -> list[bytes | Reject]:
        self._buf += chunk
        return self._scan(idle=False)

    def flush(self) -> list[bytes | Reject]:
        """The line has been silent for the inter-byte timeout: what is buffered will not grow."""
        return self._scan(idle=True)

    def _fail(self, out: list[bytes | Reject], reason: RejectReason, detail: str, raw: bytes | bytearray) -> None:
        if not self._absorbing:
            out.append(_reject(reason, detail, raw))
            self._absorbing = True

    def _scan(self, *, idle: bool) -> list[bytes | Reject]:
        buf, out, i = self._buf, [], 0
        while i < len(buf):
            size = buf[i] + 1
            if size <= MIN_LEN:
                start = i
                while i < len(buf) and buf[i] < MIN_LEN:
                    i += 1
                self._fail(out, RejectReason.SYNC, "bytes that cannot start a response (Len < 5)", buf[start:i])
            elif len(buf) - i < size:
                if not idle:
                    break
                self._fail(out, RejectReason.LENGTH, "frame cut short (line silent)", buf[i:])
                i += 1
            elif crc16(buf[i : i + size]):
                self._fail(out, RejectReason.CHECKSUM, "CRC-16/MCRF4XX differs", buf[i : i + size])
                i += 1
            else:
                out.append(bytes(buf[i : i + size]))
                self._absorbing = False
                i += size
        del buf[:i]
        return out
