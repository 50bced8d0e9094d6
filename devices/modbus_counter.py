"""RS-485 people counters polled over Modbus RTU: read-holding-registers, register map as data.

Source: device-protocols.md §4.7 (Modbus over serial line: `addr | func | data | CRC-16/MODBUS`).
No counter vendor publishes a common register map, so the map — which registers hold each line's
in and out totals, 16 or 32 bits, word order — is configuration (`RegisterMap`); the default is the
map our emulator (firmware-stubs/modbus_counter.py) serves.

Request the gateway sends (8 bytes), and the response it decodes (5 + 2·N bytes):

    offset  width  field
    0       1      slave address (1..247)
    1       1      function: 0x03 read holding registers (0x04 input registers, where mapped)
    2       2      first register, big-endian          | response: byte count = 2·N
    4       2      number of registers N, big-endian   | response: N registers, each big-endian
    last 2  2      CRC-16/MODBUS, LOW byte first
    exception response: addr | func + 0x80 | exception code | CRC (5 bytes)

CRC-16/MODBUS: polynomial 0xA001 (0x8005 reflected), init 0xFFFF, no final XOR, sent LSB first;
check value of "123456789" is 0x4B37. Worked example (§4.7): read 2 holding registers from address 0
of slave 1 → 01 03 00 00 00 02 C4 0B (CRC 0x0BC4). 32-bit values span two registers; which comes
first is the map's `word_order` (HIGH_FIRST = "ABCD", LOW_FIRST = "CDAB"). An optional occupancy
register (people present now, same width) becomes an OccupancySnapshot gauge.

On the bus (one request in flight, `match_answer`): the answer to a request is the frame with the same
slave address and the same function, or that function + 0x80 (an exception answer). Modbus over serial
line asks for 3.5 character times of silence between frames (1.75 ms fixed above 19200 baud);
`INTER_FRAME_GAP_S` covers 9600 baud. A master's usual response timeout is about 1 s.

Framing (no delimiter, and no inter-frame silence visible through a USB adapter): a frame starts at
a plausible address and function; its length follows from the function (and byte count); it counts
only if its CRC matches. Bytes that start no valid frame are skipped and reported as one SYNC reject
in front of the next good frame. A read request seen on the line (an adapter echoing our own poll)
is consumed silently. pymodbus has a CRC and an RTU framer, but importing it pulls in asyncio,
logging and threads (devices/ must stay pure) and its framer drops the whole buffer on a CRC error
instead of resynchronising one byte on, so both are written here.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from devices.events import Answer, CounterTotals, Event, OccupancySnapshot, Reject, RejectReason

READ_HOLDING = 0x03
READ_INPUT = 0x04
MAX_RESPONSE_BYTES = 5 + 250  # 125 registers
POLL_INTERVAL_S = 10.0  # totals change slowly; every poll is one footfall delta per line
RESPONSE_TIMEOUT_S = 1.0
INTER_FRAME_GAP_S = 0.004  # 3.5 characters of 11 bits at 9600 baud
_EXCEPTIONS = {1: "illegal function", 2: "illegal data address", 3: "illegal data value", 4: "device failure"}


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS of `data` (append it low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _crc_ok(frame: bytes | bytearray) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def with_crc(body: bytes) -> bytes:
    return body + crc16(body).to_bytes(2, "little")


class WordOrder(enum.StrEnum):
    HIGH_FIRST = "high_first"  # "ABCD": the register at the lower address holds the high word
    LOW_FIRST = "low_first"  # "CDAB"


@dataclass(frozen=True, slots=True)
class LineRegisters:
    line: str
    in_register: int  # register address (0-based, as on the wire) of the line's total in
    out_register: int


@dataclass(frozen=True)
class RegisterMap:
    """Where a counter keeps its totals. Validated on construction (config compile time)."""

    lines: tuple[LineRegisters, ...] = (LineRegisters("line_1", 0, 1),)
    slave: int = 1
    function: int = READ_HOLDING
    width_bits: int = 16
    word_order: WordOrder = WordOrder.HIGH_FIRST
    occupancy_register: int | None = None  # people present now (a gauge), same width as the totals
    first: int = field(init=False)  # first register polled
    count: int = field(init=False)  # registers polled

    def __post_init__(self) -> None:
        if not 1 <= self.slave <= 247:
            raise ValueError(f"slave: expected 1..247, got {self.slave}")
        if self.function not in (READ_HOLDING, READ_INPUT):
            raise ValueError(f"function: expected 3 (holding) or 4 (input), got {self.function}")
        if self.width_bits not in (16, 32):
            raise ValueError(f"width_bits: expected 16 or 32, got {self.width_bits}")
        if not self.lines or len({ln.line for ln in self.lines}) != len(self.lines):
            raise ValueError("lines: expected at least one line, names unique")
        words = self.width_bits // 16
        regs = [r for ln in self.lines for r in (ln.in_register, ln.out_register)]
        if self.occupancy_register is not None:
            regs.append(self.occupancy_register)
        if any(not 0 <= r <= 0xFFFF - words + 1 for r in regs):
            raise ValueError("lines: register addresses must be 0..65535")
        spans = sorted((r, r + words) for r in regs)
        if any(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans)):
            raise ValueError("lines: registers overlap")
        first, end = spans[0][0], spans[-1][1]
        if end - first > 125:
            raise ValueError(f"lines: registers span {end - first}, more than one read (125)")
        object.__setattr__(self, "first", first)
        object.__setattr__(self, "count", end - first)

    @classmethod
    def from_mapping(cls, doc: Mapping) -> RegisterMap:
        """From config: {"slave": 1, "table": "holding"|"input" (or "function": 3|4), "width_bits": 16|32,
        "word_order": "high_first"|"low_first", "lines": [{"line": "door", "in": 0, "out": 1}, …],
        "occupancy": 4 (optional)}."""
        unknown = set(doc) - {"slave", "table", "function", "width_bits", "word_order", "lines", "occupancy"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(unknown))}")
        try:
            lines = tuple(LineRegisters(str(d["line"]), int(d["in"]), int(d["out"])) for d in doc["lines"])
            table = doc.get("table", "holding")
            if table not in ("holding", "input"):
                raise ValueError(f"table: expected 'holding' or 'input', got {table!r}")
            function = int(doc.get("function", READ_HOLDING if table == "holding" else READ_INPUT))
            occupancy = doc.get("occupancy")
            return cls(
                lines,
                int(doc.get("slave", 1)),
                function,
                int(doc.get("width_bits", 16)),
                WordOrder(doc.get("word_order", WordOrder.HIGH_FIRST)),
                None if occupancy is None else int(occupancy),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"register map: missing or malformed {exc}") from None

    def value(self, registers: list[int], address: int) -> int:
        at = address - self.first
        if self.width_bits == 16:
            return registers[at]
        a, b = registers[at], registers[at + 1]
        return (a << 16 | b) if self.word_order is WordOrder.HIGH_FIRST else (b << 16 | a)

    def registers_for(self, totals: Mapping[str, tuple[int, int]]) -> list[int]:
        """The register block a device holding `totals` (line → (in, out)) serves: the emulator's side."""
        regs = [0] * self.count
        for ln in self.lines:
            for address, value in zip((ln.in_register, ln.out_register), totals.get(ln.line, (0, 0)), strict=True):
                value %= 1 << self.width_bits
                at = address - self.first
                if self.width_bits == 16:
                    regs[at] = value
                else:
                    hi, lo = value >> 16, value & 0xFFFF
                    regs[at], regs[at + 1] = (hi, lo) if self.word_order is WordOrder.HIGH_FIRST else (lo, hi)
        return regs


DEFAULT_MAP = RegisterMap()


def read_request(register_map: RegisterMap = DEFAULT_MAP) -> bytes:
    """The poll: read `count` registers from `first` of the map's slave."""
    m = register_map
    return with_crc(bytes([m.slave, m.function]) + m.first.to_bytes(2, "big") + m.count.to_bytes(2, "big"))


def match_answer(request: bytes, frame: bytes) -> Answer:
    """Is `frame` the answer to `request`? Same slave, same function (or its exception)."""
    if len(request) < 2 or len(frame) < 2 or frame[0] != request[0]:
        return Answer.NONE
    return Answer.LAST if frame[1] in (request[1], request[1] | 0x80) else Answer.NONE


def response(slave: int, function: int, registers: Iterable[int]) -> bytes:
    """A read response carrying `registers` (used by the emulator and tests)."""
    data = b"".join(r.to_bytes(2, "big") for r in registers)
    return with_crc(bytes([slave, function, len(data)]) + data)


def decode(frame: bytes, *, received_ns: int, register_map: RegisterMap = DEFAULT_MAP) -> list[Event] | Reject:
    """One read response → one CounterTotals per mapped line (no device time: receive time)."""
    del received_ns
    m = register_map
    if len(frame) < 5:
        return Reject(RejectReason.LENGTH, f"{len(frame)} bytes", frame)
    if len(frame) > MAX_RESPONSE_BYTES:
        return Reject(RejectReason.OVERSIZE, f"{len(frame)} bytes", frame[:1024])
    if not _crc_ok(frame):
        return Reject(RejectReason.CHECKSUM, "CRC-16/MODBUS mismatch", frame)
    slave, function = frame[0], frame[1]
    if function & 0x80:
        code = frame[2]
        return Reject(RejectReason.UNSUPPORTED, f"exception {code} ({_EXCEPTIONS.get(code, 'other')})", frame)
    if slave != m.slave or function != m.function:
        return Reject(RejectReason.UNSUPPORTED, f"slave {slave} function {function}: not this map's poll", frame)
    if frame[2] + 5 != len(frame):
        if len(frame) == 8:
            return Reject(RejectReason.UNSUPPORTED, "a read request, not a response", frame)
        return Reject(RejectReason.LENGTH, f"byte count {frame[2]} in a {len(frame)}-byte frame", frame)
    if frame[2] != 2 * m.count:
        return Reject(RejectReason.LENGTH, f"{frame[2] // 2} registers, the map reads {m.count}", frame)
    regs = [int.from_bytes(frame[3 + 2 * k : 5 + 2 * k], "big") for k in range(m.count)]
    events: list[Event] = [
        CounterTotals(ln.line, m.value(regs, ln.in_register), m.value(regs, ln.out_register), m.width_bits, None)
        for ln in m.lines
    ]
    if m.occupancy_register is not None:
        events.append(OccupancySnapshot(m.value(regs, m.occupancy_register), None, None, None))
    return events


class _Kind(enum.Enum):
    FRAME = 1
    ECHO = 2  # a read request on the line: consumed silently
    NEED = 3
    BAD = 4


class ModbusRtuFramer:
    """Incremental framing of a Modbus RTU response stream (style.md 7); no I/O, no clock."""

    MAX_BUFFER = 2 * MAX_RESPONSE_BYTES

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipped = bytearray()

    def _at(self, i: int) -> tuple[_Kind, int]:
        buf = self._buf
        avail = len(buf) - i
        if avail < 2:
            return _Kind.NEED, 0
        if not 1 <= buf[i] <= 247:
            return _Kind.BAD, 0
        function = buf[i + 1]
        if function in (0x83, 0x84):
            if avail < 5:
                return _Kind.NEED, 0
            return (_Kind.FRAME, 5) if _crc_ok(buf[i : i + 5]) else (_Kind.BAD, 0)
        if function not in (READ_HOLDING, READ_INPUT):
            return _Kind.BAD, 0
        if avail < 3:
            return _Kind.NEED, 0
        count = buf[i + 2]
        n = 5 + count
        is_response_shape = count >= 2 and count % 2 == 0 and n <= MAX_RESPONSE_BYTES
        if is_response_shape and avail >= n and _crc_ok(buf[i : i + n]):
            return _Kind.FRAME, n
        if avail >= 8 and _crc_ok(buf[i : i + 8]):
            return _Kind.ECHO, 8
        if (is_response_shape and avail < n) or avail < 8:
            return _Kind.NEED, 0
        return _Kind.BAD, 0

    def _complete_after(self, i: int) -> int | None:
        """The first position after i where a whole valid frame (or echo) already sits."""
        for j in range(i + 1, len(self._buf) - 3):
            if self._at(j)[0] in (_Kind.FRAME, _Kind.ECHO):
                return j
        return None

    def _skip(self, n: int, out: list[bytes | Reject]) -> None:
        self._skipped += self._buf[:n]
        del self._buf[:n]
        if len(self._skipped) >= MAX_RESPONSE_BYTES:
            self._flush_skipped(out)

    def _flush_skipped(self, out: list[bytes | Reject]) -> None:
        if self._skipped:
            out.append(Reject(RejectReason.SYNC, f"{len(self._skipped)} bytes before a frame", bytes(self._skipped)))
            self._skipped.clear()

    def feed(self, chunk: bytes) -> list[bytes | Reject]:
        self._buf += chunk
        out: list[bytes | Reject] = []
        while self._buf:
            kind, n = self._at(0)
            if kind is _Kind.BAD:
                self._skip(1, out)
                continue
            if kind is _Kind.NEED:
                later = self._complete_after(0)
                if later is None:
                    break
                self._skip(later, out)
                continue
            self._flush_skipped(out)
            if kind is _Kind.FRAME:
                out.append(bytes(self._buf[:n]))
            del self._buf[:n]
        if len(self._buf) > self.MAX_BUFFER:
            self._skip(len(self._buf) - MAX_RESPONSE_BYTES, out)
        return out
