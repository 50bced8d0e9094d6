"""UHF EPC Gen2 readers on the Magic RF M100 / QM100 module (YRM100, JRD-4035 / M5Stack U107, clones).

Source: device-protocols.md §2.1 (M5Stack "Unit RFID-UHF" protocol manual §1–4, m5stack/M5Unit-UHF-RFID).
UART 8N1, 115200 baud on the M5Stack unit (other boards differ: configuration). Frame:

    offset 0       1  0xBB header
    offset 1       1  type: 0x00 command (host→module), 0x01 response, 0x02 notice (one per tag read)
    offset 2       1  command code (0xFF in error responses)
    offset 3–4     2  PL, parameter length, big-endian, at most 128 (§2.1: longest notice is 67)
    offset 5…      PL parameters
    offset 5+PL    1  checksum = low byte of the sum of bytes 1 … 4+PL (header excluded)
    offset 6+PL    1  0x7E end

No byte stuffing: 0xBB and 0x7E occur inside EPCs, so frames are cut by PL, never at a 0x7E.

Tag notice (type 0x02, command 0x22; 0x27 accepted too) parameters: RSSI (1, signed dBm at the chip
input) · PC (2; bits 15–11 = EPC length in words) · EPC (PL − 5) · CRC (2, the tag's Gen2
CRC-16/GENIBUS over PC+EPC, big-endian — checked here as a second integrity check).
Worked example (§2.1 U1): `BB 02 22 00 11 C9 34 00 30 75 1F EB 70 5C 59 04 E3 D5 0D 70 3A 76 EF 7E`
→ RSSI 0xC9 = −55 dBm, PC 0x3400 (6 words), EPC `30751FEB705C5904E3D50D70`, CRC 0x3A76 ✓,
checksum 02+22+00+11+…+76 = 0xEF ✓.

Answers and what they become:
- notice → TagRead (antenna 0: the module has one port; read_count 1);
- error response (type 0x01, command 0xFF) code 0x15 "no tag in this round" → InventoryRound with
  0 tags (normal during multi-polling: counted, never logged one by one); any other code →
  ReaderFault with the manual's name for it;
- response to 0x28 stop / 0x07 region / 0x11 baud / 0xB6 power → ReaderReply;
- response to 0x03 version query → ReaderInfo (sub-type 0 hardware, 1 software, 2 manufacturer);
- a host command (type 0x00) or another response → UNSUPPORTED reject.
The multi-poll command 0x27 itself has no response: the first notice or "no tag" answer confirms it.

Continuous inventory (§2.1 "Commands"): multi-polling runs CNT rounds, then stops. The gateway sends
`start_commands()` (stop, then multi-poll with CNT 65535) when the port opens and again every
`REARM_S` seconds, and `stop_multi_poll()` on shutdown. Stop-then-start is used because the manual
does not say whether a 0x27 during multi-polling is accepted; the stop costs a few ms of inventory.
"""

from __future__ import annotations

from devices import epc
from devices.events import (
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

HEADER, END = 0xBB, 0x7E
TYPE_COMMAND, TYPE_RESPONSE, TYPE_NOTICE = 0x00, 0x01, 0x02
MAX_PL = 128
RAW_MAX = 160
CMD_SINGLE_POLL, CMD_MULTI_POLL, CMD_STOP, CMD_VERSION, CMD_ERROR = 0x22, 0x27, 0x28, 0x03, 0xFF
NO_TAG = 0x15
REARM_S = 30.0  # re-arm period: 65 535 rounds outlast it if a round takes ≥ 0.5 ms (round time unverified, §7)

ERRORS = {
    0x09: "read fail",
    0x10: "write fail",
    0x12: "kill fail",
    0x13: "lock fail",
    0x15: "inventory fail (no tag / CRC error)",
    0x16: "access fail (password)",
    0x17: "malformed command frame",
    0x20: "frequency-hopping channel search timed out",
}
GEN2_ERROR_KINDS = {0xA0: "read", 0xB0: "write", 0xC0: "lock", 0xD0: "kill"}  # code = kind | Gen2 error
SETTING_REPLIES = {CMD_STOP: "stop multi-polling", 0x07: "set region", 0x11: "set baud rate", 0xB6: "set TX power"}
VERSION_FIELDS = {0x00: "model", 0x01: "firmware", 0x02: "manufacturer"}


def _gen2_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = (crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_GEN2_CRC = _gen2_crc_table()


def gen2_crc(data: bytes) -> int:
    """CRC-16/GENIBUS (poly 0x1021 MSB first, init 0xFFFF, final XOR 0xFFFF): the tag's PC+EPC CRC."""
    crc = 0xFFFF
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _GEN2_CRC[(crc >> 8) ^ b]
    return crc ^ 0xFFFF


def frame(kind: int, command: int, params: bytes = b"") -> bytes:
    """A complete frame: header, type, command, PL, parameters, checksum, end."""
    body = bytes((kind, command, len(params) >> 8, len(params) & 0xFF)) + params
    return bytes((HEADER,)) + body + bytes((sum(body) & 0xFF, END))


def single_poll() -> bytes:
    """One inventory round: `BB 00 22 00 00 22 7E`."""
    return frame(TYPE_COMMAND, CMD_SINGLE_POLL)


def multi_poll(rounds: int = 10_000) -> bytes:
    """Multi-polling for `rounds` rounds (reserved byte 0x22, CNT big-endian): 10 000 →
    `BB 00 27 00 03 22 27 10 83 7E`."""
    if not 0 <= rounds <= 0xFFFF:
        raise ValueError("rounds must be 0..65535")
    return frame(TYPE_COMMAND, CMD_MULTI_POLL, bytes((0x22, rounds >> 8, rounds & 0xFF)))


def stop_multi_poll() -> bytes:
    """`BB 00 28 00 00 28 7E`; the module answers `BB 01 28 00 01 00 2A 7E`."""
    return frame(TYPE_COMMAND, CMD_STOP)


def version_query(kind: int = 0x00) -> bytes:
    """0 hardware, 1 software, 2 manufacturer: hardware = `BB 00 03 00 01 00 04 7E`."""
    return frame(TYPE_COMMAND, CMD_VERSION, bytes((kind,)))


def set_region(code: int) -> bytes:
    """Region (manual example: China 900 MHz, code 1 → `BB 00 07 00 01 01 09 7E`)."""
    return frame(TYPE_COMMAND, 0x07, bytes((code,)))


def set_baud(baud: int) -> bytes:
    """Module baud rate, as baud/100 big-endian: 19200 → `BB 00 11 00 02 00 C0 D3 7E`."""
    return frame(TYPE_COMMAND, 0x11, (baud // 100).to_bytes(2, "big"))


def set_tx_power(dbm: float) -> bytes:
    """TX power in dBm × 100, big-endian (M5Stack: "2600 => 26dB")."""
    return frame(TYPE_COMMAND, 0xB6, round(dbm * 100).to_bytes(2, "big"))


def start_commands() -> list[bytes]:
    return [stop_multi_poll(), multi_poll(0xFFFF)]


def _check(data: bytes | bytearray) -> Reject | None:
    """Reject of a whole candidate frame (header at 0, length already 7 + PL), or None when good."""
    pl = data[3] << 8 | data[4]
    if data[6 + pl] != END:
        return Reject(RejectReason.LENGTH, f"no 0x7E after PL {pl}", bytes(data[:RAW_MAX]))
    if sum(data[1 : 5 + pl]) & 0xFF != data[5 + pl]:
        return Reject(RejectReason.CHECKSUM, "sum of type … parameters differs", bytes(data[:RAW_MAX]))
    return None


def _error_name(code: int) -> str:
    if code in ERRORS:
        return ERRORS[code]
    kind = GEN2_ERROR_KINDS.get(code & 0xF0)
    return f"Gen2 tag {kind} error 0x{code & 0x0F:X}" if kind else f"error 0x{code:02X}"


def _notice(params: bytes, raw: bytes) -> list[Event] | Reject:
    if len(params) < 7:
        return Reject(RejectReason.LENGTH, "notice too short for RSSI, PC, EPC and CRC", raw)
    pc_epc, crc = params[1:-2], params[-2:]
    if gen2_crc(pc_epc) != int.from_bytes(crc, "big"):
        return Reject(RejectReason.CHECKSUM, "tag CRC over PC+EPC differs", raw)
    epc_bytes = pc_epc[2:]
    words = pc_epc[0] >> 3
    if words * 2 + 2 == len(epc_bytes) and pc_epc[0] & 0x02:  # XPC_W1 follows the PC (XI bit)
        epc_bytes = epc_bytes[2:]
    elif words * 2 != len(epc_bytes):
        return Reject(RejectReason.SANITY, f"PC announces {words} words, PL carries {len(epc_bytes)} bytes", raw)
    tag_hex = epc_bytes.hex().upper()
    gtin14, serial = epc.gtin_and_serial(tag_hex)
    rssi = params[0] - 256 if params[0] > 127 else params[0]
    return [TagRead(TagKind.EPC, tag_hex, 0, float(rssi), None, 1, False, gtin14, serial)]


def _response(command: int, params: bytes, raw: bytes) -> list[Event] | Reject:
    if command == CMD_ERROR:
        if not params:
            return Reject(RejectReason.LENGTH, "error response without a code", raw)
        if params[0] == NO_TAG:
            return [InventoryRound(0, 0, True)]
        return [ReaderFault(params[0], _error_name(params[0]))]
    if command == CMD_VERSION and params:
        field = VERSION_FIELDS.get(params[0])
        if field is None:
            return Reject(RejectReason.UNSUPPORTED, f"version sub-type 0x{params[0]:02X}", raw)
        text = params[1:].decode("ascii", "replace").strip("\x00 ")
        info = dict.fromkeys(VERSION_FIELDS.values(), "") | {field: text}
        return [ReaderInfo(info["model"], info["firmware"], info["manufacturer"], "", None, None, None, None)]
    if command in SETTING_REPLIES and len(params) == 1:
        ok = params[0] == 0
        return [ReaderReply(command, ok, params[0], "success" if ok else f"{SETTING_REPLIES[command]} failed")]
    return Reject(RejectReason.UNSUPPORTED, f"response to command 0x{command:02X}", raw)


def decode(data: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One frame (as the Framer cuts them) → events."""
    del received_ns  # frames carry no time
    raw = bytes(data[:RAW_MAX])
    if len(data) < 7:
        return Reject(RejectReason.LENGTH, f"{len(data)} bytes, a frame has at least 7", raw)
    if data[0] != HEADER or data[1] > TYPE_NOTICE:
        return Reject(RejectReason.SYNC, "no 0xBB header with type 0–2", raw)
    pl = data[3] << 8 | data[4]
    if pl > MAX_PL or len(data) != 7 + pl:
        return Reject(RejectReason.LENGTH, f"{len(data)} bytes for PL {pl}", raw)
    bad = _check(data)
    if bad:
        return bad
    kind, command, params = data[1], data[2], bytes(data[5 : 5 + pl])
    if kind == TYPE_NOTICE and command in (CMD_SINGLE_POLL, CMD_MULTI_POLL):
        return _notice(params, raw)
    if kind == TYPE_RESPONSE:
        return _response(command, params, raw)
    return Reject(RejectReason.UNSUPPORTED, f"type 0x{kind:02X} command 0x{command:02X}", raw)


class Framer:
    """Frames by header + PL (§2.1), resynchronising on the next 0xBB after any failure.

    Each failed candidate (a 0xBB, valid type and PL ≤ 128 whose end byte or checksum is wrong, or
    that was cut short) is one reject; then one byte is skipped and the hunt goes on. Bytes that
    cannot start a frame are garbage: a run of them is one SYNC reject, or part of the reject just
    before it. `flush()` is for the inter-byte timeout: every pending candidate fails as LENGTH.
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

    def _garbage(self, out: list[bytes | Reject], raw: bytes | bytearray) -> None:
        if not self._absorbing:
            out.append(Reject(RejectReason.SYNC, "bytes before a 0xBB frame start", bytes(raw[:RAW_MAX])))
            self._absorbing = True

    def _scan(self, *, idle: bool) -> list[bytes | Reject]:
        buf, out, i = self._buf, [], 0
        while i < len(buf):
            if buf[i] != HEADER:
                end = buf.find(HEADER, i)
                end = len(buf) if end < 0 else end
                self._garbage(out, buf[i:end])
                i = end
                continue
            avail = len(buf) - i
            bad_type = avail >= 2 and buf[i + 1] > TYPE_NOTICE
            if bad_type or (avail >= 5 and (buf[i + 3] << 8 | buf[i + 4]) > MAX_PL):
                self._garbage(out, buf[i : i + 1])  # not a frame start
                i += 1
                continue
            size = 7 + (buf[i + 3] << 8 | buf[i + 4]) if avail >= 5 else None
            if size is None or avail < size:
                if not idle:
                    break
                out.append(Reject(RejectReason.LENGTH, "frame cut short (line silent)", bytes(buf[i : i + RAW_MAX])))
                self._absorbing = True
                i += 1
                continue
            bad = _check(buf[i : i + size])
            if bad:
                out.append(bad)
                self._absorbing = True
                i += 1
            else:
                out.append(bytes(buf[i : i + size]))
                self._absorbing = False
                i += size
        del buf[:i]
        return out
