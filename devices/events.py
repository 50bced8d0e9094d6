"""What codecs return: typed events named as facts, or a Reject with a reason from a closed set.

Codecs are pure (style.md 6–8): bytes and the receive time in, these values out. They never raise
on bad input and never log; the runtime counts rejects per device and reason and dead-letters them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RejectReason(enum.StrEnum):
    LENGTH = "length"  # too short, too long, truncated
    CHECKSUM = "checksum"  # CRC / XOR / sum mismatch
    SYNC = "sync"  # garbage before a frame start
    BAD_ENCODING = "bad_encoding"  # not UTF-8 where text was expected
    BAD_JSON = "bad_json"  # not parseable JSON
    SCHEMA = "schema"  # JSON parsed, but a required key is missing or of the wrong type
    SANITY = "sanity"  # a value outside what the device can report (negative count, end < start)
    UNSUPPORTED = "unsupported"  # a valid message of a kind this codec does not handle
    OVERSIZE = "oversize"  # larger than the configured maximum payload


@dataclass(frozen=True, slots=True)
class Reject:
    reason: RejectReason
    detail: str  # short, human-readable; never contains a personal identifier
    raw: bytes = b""


class Answer(enum.Enum):
    """How a received frame relates to the request in flight on a request/response bus (a model's
    matcher says it; the poll loop sends the next request only after LAST or a timeout)."""

    NONE = "none"  # not an answer to this request (another address or function, a late answer)
    PART = "part"  # part of the answer: more frames of it follow (a Chafon round, status 0x03)
    LAST = "last"  # the answer, or its last frame


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """Base of every event a codec returns (families add theirs below, one section each)."""


# --- people counters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterInterval(DeviceEvent):
    """People crossing one counting line during [start_ns, end_ns) — a per-interval delta report.

    `start_ns`/`end_ns` are the device's own UTC times (nanoseconds since the epoch)."""

    line: str
    entries: int
    exits: int
    start_ns: int
    end_ns: int


@dataclass(frozen=True, slots=True)
class CounterTotals(DeviceEvent):
    """Cumulative crossings of one line since the counter's last reset (midnight, schedule, reboot).

    Monotonic until a reset, and modulo 2**width_bits where the counter is that wide (None: width
    unknown, e.g. JSON numbers). A direction the report does not carry is None. `device_ts_ns` is the
    report's own time (ns since the epoch, UTC as far as the payload says; None when it has none)."""

    line: str
    total_in: int | None
    total_out: int | None
    width_bits: int | None
    device_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class CounterPeriod(DeviceEvent):
    """People crossing one line during the reporting period that ended at `device_ts_ns`.

    Like CounterInterval, but the payload gives no bounds: the period's length is the device's
    configured reporting interval. `device_ts_ns` None: the payload carries no time."""

    line: str
    entries: int
    exits: int
    device_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class OccupancySnapshot(DeviceEvent):
    """People present in the counter's area now — a gauge, never summed (device-protocols §4.8).

    `region_mask`: bit i (least significant first) = region i + 1 occupied, only the first
    `region_count` bits meaningful; None where the payload lacks them."""

    people: int
    region_count: int | None
    region_mask: int | None
    device_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class RegionPeople(DeviceEvent):
    """People present now in one numbered region (1-based) — a gauge."""

    region: int
    people: int
    device_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class PeopleMax(DeviceEvent):
    """Most people seen at once during the reporting period that ended at `device_ts_ns` — a gauge."""

    people_max: int
    device_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class CounterStatus(DeviceEvent):
    """A counter's own health readings; a reading the payload does not carry is None."""

    battery_pct: int | None
    temperature_c: float | None
    device_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class ThresholdAlarm(DeviceEvent):
    """A device-side threshold alarm: `subject` is what crossed it ("temperature", "total",
    "period"); `alarm_code` is the vendor's raw code (its meanings disagree between sources)."""

    subject: str
    alarm_code: int
    device_ts_ns: int | None


@dataclass(frozen=True, slots=True)
class RejectedTail(DeviceEvent):
    """Decoding stopped at byte `offset_bytes` of a payload whose earlier items were kept (the
    Milesight item stream has no lengths: an unknown item ends it). The runtime counts it as one
    reject with `reason` and dead-letters the payload, like a Reject."""

    reason: RejectReason
    detail: str
    offset_bytes: int


# --- RFID ----------------------------------------------------------------------------------------


class TagKind(enum.StrEnum):
    EPC = "epc"  # UHF EPC Gen2 item tag (device-protocols.md §2, §3)
    EM4100 = "em4100"  # 125 kHz card or fob: it identifies a person (§1)


@dataclass(frozen=True, slots=True)
class TagRead(DeviceEvent):
    """One tag seen by a reader: a notice, an inventory entry, a card frame, a JSON read.

    Presence key (decisions.md D9): (device, `reader`, `antenna`, `tag_hex`). `is_personal` marks
    an ID the pipeline pseudonymises right after the codec, before anything else sees it (D13): the
    codec returns it clear. `gtin14` is a tag of the record (bounded by the catalogue); `tag_hex`
    and `serial` are fields."""

    tag_kind: TagKind
    tag_hex: str  # EPC in upper-case hex, or the 10-hex-digit EM4100 ID (version byte first)
    antenna: int  # 1-based port; 0 where the reader reports none
    rssi_dbm: float | None  # None where the reader gives none (RDM6300, UHFReader18) or no unit
    rssi_raw: int | None  # the reader's own strength value where its unit is unknown (UHFReader288)
    read_count: int  # reads this event stands for: 1 per frame; a JSON reader may aggregate
    is_personal: bool
    gtin14: str | None = None  # SGTIN-96 EPCs only
    serial: str | None = None  # SGTIN-96 serial, decimal
    reader: str = ""  # sub-reader the payload names (MQTT JSON); "" = the configured device itself
    read_ns: int | None = None  # the reader's own time of the read (MQTT JSON), ns since the epoch


@dataclass(frozen=True, slots=True)
class InventoryRound(DeviceEvent):
    """A reader answered an inventory round: proof that inventory runs, tags in the field or not.

    Chafon: one per inventory response frame; `is_complete` is False while more frames of the same
    round follow (status 0x03), and True is the gateway's cue to send the next inventory request.
    M100: one per "no tag" answer (error 0x15 during single or multi polling): normal, to be
    counted, never logged one by one."""

    antenna: int  # 0 where the reader reports none
    tag_count: int  # tags in this frame
    is_complete: bool


@dataclass(frozen=True, slots=True)
class ReaderReply(DeviceEvent):
    """A reader's answer to a command the gateway sent (M100 stop multi-polling, Chafon settings)."""

    command: int  # the command code answered
    is_ok: bool
    status: int  # the status / result byte as sent
    detail: str  # the protocol table's name for the status


@dataclass(frozen=True, slots=True)
class ReaderFault(DeviceEvent):
    """A reader reports an error: antenna fault, malformed command, channel search timed out, …"""

    code: int
    fault: str  # the protocol table's name for the code


@dataclass(frozen=True, slots=True)
class ReaderInfo(DeviceEvent):
    """What a reader says about itself (version / info query), for the start-up log line."""

    model: str  # "" where this answer does not carry it
    firmware: str
    manufacturer: str
    region: str  # frequency band name, "" where not reported
    min_freq_mhz: float | None
    max_freq_mhz: float | None
    power_dbm: int | None
    scan_time_ms: int | None


# --- lockers -------------------------------------------------------------------------------------


class DoorFeedback(enum.StrEnum):
    """How a lock board's feedback bit reads, set per bank by its wiring (device-protocols §5.1)."""

    DOOR_CLOSING = "door_closing"  # bit 1 / status 0x11 = door closed (Open-Locker's default)
    DOOR_OPENING = "door_opening"  # bit 1 / status 0x11 = door open


class PersonalHandling(enum.StrEnum):
    """What the privacy step right after the codec (decisions.md D13) does with a personal field that
    an event lists in its class attribute `PERSONAL_FIELDS` ((field, handling) pairs)."""

    DROP = "drop"  # set to None: never stored, not even hashed (pickup codes are secrets; names)
    PSEUDONYMISE = "pseudonymise"  # replaced by the D13 HMAC pseudonym, 32 hex characters


def personal_fields(event: DeviceEvent) -> dict[str, PersonalHandling]:
    """The personal fields of an event and what to do with each (empty for most events)."""
    return dict(getattr(type(event), "PERSONAL_FIELDS", ()))


@dataclass(frozen=True, slots=True)
class LockStatus(DeviceEvent):
    """One lock of a board as a status poll reported it (lock 1-based). `item_present` is None where
    the board has no item sensor (the 8A/80 board): unknown, never guessed (decisions.md D10)."""

    board: int
    lock: int
    door_open: bool
    item_present: bool | None


@dataclass(frozen=True, slots=True)
class UnlockAnswered(DeviceEvent):
    """A board's answer to an unlock: the door feedback it read after pulsing the lock (8A/80 board,
    about 500 ms later). `door_open` False after an unlock: the door stayed shut (jammed?)."""

    board: int
    lock: int
    door_open: bool


# MQTT banks (device-protocols §5.3): `message_id` is the sender's identity (duplicates, D4), `ts_ns`
# its own timestamp; compartments are numbered from 1.


@dataclass(frozen=True, slots=True)
class CompartmentDoorReported(DeviceEvent):
    """A bank's door state for one compartment: an entry of its retained snapshot or a
    `door_state_changed` event. `door_open` None = the bank says "unknown"."""

    compartment: int
    door_open: bool | None
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class CompartmentOpenDetected(DeviceEvent):
    """The bank saw the door open after its unlock pulse (`outcome` "opened" or "already_open")."""

    compartment: int
    transaction_id: str  # "" where not given
    outcome: str
    detection_ms: int | None
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class CompartmentOpenFailed(DeviceEvent):
    """The door never opened after the unlock pulse (`outcome` e.g. "door_jammed")."""

    compartment: int
    transaction_id: str
    outcome: str
    error_code: str
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class CompartmentUncommandedOpen(DeviceEvent):
    """The bank saw a door open with no unlock pulse behind it."""

    compartment: int
    since_relay_ms: int | None  # since the bank last fired any lock relay
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class CompartmentOpenCommanded(DeviceEvent):
    """An `open_compartment` command seen on the bank's command topic (from whichever backend)."""

    compartment: int
    transaction_id: str
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class LockerCommandAnswered(DeviceEvent):
    """The bank acknowledged a command: the pulse was sent (or not), not that a door moved."""

    action: str
    transaction_id: str
    is_success: bool
    error_code: str  # "" on success
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class LockerHeartbeat(DeviceEvent):
    uptime_s: int
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class LockerConnection(DeviceEvent):
    """The bank's connection state; `is_online` False is its MQTT Last Will."""

    is_online: bool
    reason: str
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ParcelDeposited(DeviceEvent):
    """A courier put a parcel in (our extension of §5.3). `parcel_id` is a field, never a tag."""

    PERSONAL_FIELDS = (
        ("pickup_code", PersonalHandling.DROP),
        ("recipient_phone", PersonalHandling.PSEUDONYMISE),
        ("recipient_name", PersonalHandling.DROP),
    )

    compartment: int
    parcel_id: str
    pickup_code: str | None
    recipient_phone: str | None
    recipient_name: str | None
    message_id: str
    ts_ns: int


@dataclass(frozen=True, slots=True)
class ParcelPickedUp(DeviceEvent):
    """A customer took a parcel out (our extension of §5.3)."""

    PERSONAL_FIELDS = (("pickup_code", PersonalHandling.DROP),)

    compartment: int
    parcel_id: str
    pickup_code: str | None
    message_id: str
    ts_ns: int


Event = DeviceEvent
