"""Device model name (what config and `sdgw decode --device` take) → its family's codec.

Adding a model is one row here plus its family module (style.md 2)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from devices import (
    axis,
    chafon,
    kerong,
    lock8a,
    locker_mqtt,
    m100,
    milesight,
    milesight_json,
    modbus_counter,
    rdm6300,
    rfid_json,
    vivotek,
)
from devices.events import Answer, Event, Reject


class Transport(enum.StrEnum):
    MQTT = "mqtt"
    SERIAL = "serial"
    HTTP = "http"  # the device pushes to the gateway's HTTP server (POST /v1/ingest/<device>)


class PayloadKind(enum.StrEnum):
    JSON = "json"  # `sdgw decode` takes the text as is
    BINARY = "binary"  # `sdgw decode` takes hex


class Framer(Protocol):
    """Incremental framing of a serial byte stream (style.md 7): `feed` returns the whole frames and
    the rejects found so far and keeps the tail; garbage becomes one Reject and the next good frame
    still comes out. One instance per port; no I/O, no clock."""

    def feed(self, chunk: bytes) -> list[bytes | Reject]: ...

    # Optionally also `flush() -> list[bytes | Reject]`: the line went silent, so a partial frame
    # is given up (as a reject). The serial transport calls it after `silence_flush_s`.


@dataclass(frozen=True)
class SerialSettings:
    """Line settings a model needs by default (config may override baud and parity)."""

    baudrate: int
    bytesize: int = 8
    parity: str = "N"  # "N", "E", "O"
    stopbits: int = 1


@dataclass(frozen=True)
class DeviceOptions:
    """A device's own settings from config that its model's hooks need (plain data, no gateway types)."""

    # the device's addresses on its bus: a Modbus unit id, a reader's address, a bank's lock boards
    addresses: tuple[int, ...]
    registers: Mapping[str, Any] | None = None  # modbus-rtu-counter: the register map (RegisterMap.from_mapping)


@dataclass(frozen=True)
class BusProfile:
    """How a request/response model is polled on a (possibly shared) bus: one request in flight, each
    frame matched to it, a timeout, the model's inter-frame gap, a routine poll every `interval_s`."""

    poll_requests: Callable[[int, DeviceOptions], list[bytes]]  # (address, options) → its routine polls
    match: Callable[[bytes, bytes], Answer]  # (request, frame) → is it the answer?
    addresses: range  # valid addresses of a device of this model
    default_address: int
    interval_s: float  # routine poll period (a floor between rounds where answers pace it)
    timeout_s: float  # per request
    gap_s: float  # silence before the next request


@dataclass(frozen=True)
class DeviceModel:
    name: str
    family: str
    transports: tuple[Transport, ...]
    payload: PayloadKind
    protocol: str  # one line for `sdgw devices`
    emits: str  # measurement(s) the gateway writes for it
    decode: Callable[..., list[Event] | Reject]  # decode(frame_or_payload, *, received_ns=…)
    device_time_trusted: bool  # the payload carries times the default config trusts
    # Serial models only:
    framer: Callable[[], Framer] | None = None  # a fresh framer per port
    serial: SerialSettings | None = None
    # bytes written once the port is open (e.g. start continuous inventory), and re-sent every
    # `keepalive_s` where the device needs it (0 = never)
    start_commands: Callable[[], list[bytes]] | None = None
    keepalive_s: float = 0.0
    # True where raw bytes may carry a personal identifier (125 kHz cards, pickup codes): dead
    # letters then keep only their length (decisions.md D1, D13)
    personal_raw: bool = False
    # Request/response serial models: polled by the bus loop instead of start commands + keepalive
    bus: BusProfile | None = None
    # where decoding depends on the device's config (a Modbus register map): keyword arguments for
    # `decode`, built once per device (ValueError names what is wrong with the options)
    decode_kwargs: Callable[[DeviceOptions], dict[str, Any]] | None = None

    def poll_requests(self, options: DeviceOptions) -> list[bytes]:
        """Every routine poll of one configured device, one per address."""
        assert self.bus is not None
        return [r for a in options.addresses for r in self.bus.poll_requests(a, options)]


def _register_map(options: DeviceOptions) -> modbus_counter.RegisterMap:
    if len(options.addresses) != 1:
        raise ValueError("a Modbus counter has exactly one unit id")
    return modbus_counter.RegisterMap.from_mapping({**(options.registers or {}), "slave": options.addresses[0]})


_CHAFON_ADDRESSES = range(0, 256)  # 0xFF = broadcast (a reader alone on its port)


MODELS: dict[str, DeviceModel] = {
    m.name: m
    for m in (
        DeviceModel(
            "vivotek-sc8131",
            "vivotek",
            (Transport.MQTT, Transport.HTTP),
            PayloadKind.JSON,
            "Report Push JSON, per-interval In/Out deltas per counting rule (device-protocols §4.4)",
            "footfall (entries, exits, interval_s per line)",
            vivotek.decode,
            True,
        ),
        DeviceModel(
            "lock8a-rs485",
            "lock8a",
            (Transport.SERIAL,),
            PayloadKind.BINARY,
            "RS-485 8A/80 parcel-locker lock board, XOR BCC: query-all door feedback, unlock; no item "
            "sensor (device-protocols §5.1)",
            "locker_compartment, locker_door, locker_alarm, locker_command, locker_controller, locker_occupancy, "
            "locker_audit",
            lock8a.decode,
            False,
            framer=lock8a.Framer,
            serial=SerialSettings(9600),
            bus=BusProfile(
                lambda address, _: lock8a.poll_requests(address),
                lock8a.match_answer,
                lock8a.BOARDS,
                1,  # the verified board's DIP address
                lock8a.POLL_INTERVAL_S,
                lock8a.RESPONSE_TIMEOUT_S,
                lock8a.INTER_FRAME_GAP_S,
            ),
        ),
        DeviceModel(
            "kerong-cu16",
            "kerong",
            (Transport.SERIAL,),
            PayloadKind.BINARY,
            "RS-485 Kerong KR-CU16-style lock controller, sum checksum: hooks + item sensors, unlock "
            "(device-protocols §5.2, integrator-derived)",
            "locker_compartment, locker_door, locker_parcel, locker_alarm, locker_command, locker_controller, "
            "locker_occupancy, locker_audit",
            kerong.decode,
            False,
            framer=kerong.Framer,
            serial=SerialSettings(19200),
            bus=BusProfile(
                lambda address, _: kerong.poll_requests(address),
                kerong.match_answer,
                kerong.BOARDS,
                0,
                kerong.POLL_INTERVAL_S,
                kerong.RESPONSE_TIMEOUT_S,
                kerong.INTER_FRAME_GAP_S,
            ),
        ),
        DeviceModel(
            "open-locker-mqtt",
            "locker_mqtt",
            (Transport.MQTT,),
            PayloadKind.JSON,
            "Open-Locker MQTT JSON contract: door snapshots and events, open outcomes, heartbeat, Last "
            "Will; parcel deposit/pickup extension (device-protocols §5.3)",
            "locker_compartment, locker_door, locker_parcel, locker_alarm, locker_command, locker_controller, "
            "locker_occupancy, locker_audit",
            locker_mqtt.decode,
            False,
            personal_raw=True,  # pickup codes, phone numbers, names in our parcel events
        ),
        DeviceModel(
            "milesight-vs133",
            "milesight",
            (Transport.MQTT,),
            PayloadKind.BINARY,
            "VS133/VS135 LoRaWAN items via the LNS (raw or ChirpStack/TTN JSON): line totals uint32, "
            "period in/out, regions (device-protocols §4.1)",
            "footfall (from totals, else periods); region people",
            milesight.decode_vs133,
            True,
        ),
        DeviceModel(
            "milesight-vs350",
            "milesight",
            (Transport.MQTT,),
            PayloadKind.BINARY,
            "VS350 LoRaWAN items via the LNS: totals uint16 (wrap), period, history records, battery, "
            "temperature, alarms (device-protocols §4.1)",
            "footfall (from totals, else periods); counter status",
            milesight.decode_vs350,
            True,
        ),
        DeviceModel(
            "milesight-vs121",
            "milesight",
            (Transport.MQTT,),
            PayloadKind.BINARY,
            "VS121 LoRaWAN items via the LNS: people now, region mask, periodic and accumulated "
            "in/out, people max (device-protocols §4.1)",
            "footfall; occupancy",
            milesight.decode_vs121,
            True,
        ),
        DeviceModel(
            "milesight-vs1xx-json",
            "milesight_json",
            (Transport.MQTT,),
            PayloadKind.JSON,
            "VS121-P & co. 'Region People Counting' JSON push, local times + zone (device-protocols §4.2)",
            "occupancy (people, max, regions)",
            milesight_json.decode,
            True,
        ),
        DeviceModel(
            "axis-people-counter",
            "axis",
            (Transport.MQTT,),
            PayloadKind.JSON,
            "AXIS People Counter live-sum.json: cumulative in/out, camera-local time (device-protocols §4.3)",
            "footfall (from totals)",
            axis.decode,
            False,
        ),
        DeviceModel(
            "modbus-rtu-counter",
            "modbus_counter",
            (Transport.SERIAL,),
            PayloadKind.BINARY,
            "RS-485 Modbus RTU, read holding registers, register map from config (device-protocols §4.7)",
            "footfall (from totals)",
            modbus_counter.decode,
            False,
            framer=modbus_counter.ModbusRtuFramer,
            # Modbus over serial line's default is 19200 8E1; config overrides baud and parity
            serial=SerialSettings(19200, 8, "E", 1),
            bus=BusProfile(
                lambda _, options: [modbus_counter.read_request(_register_map(options))],
                modbus_counter.match_answer,
                range(1, 248),  # unit ids; 0 is broadcast (no answer)
                1,
                modbus_counter.POLL_INTERVAL_S,
                modbus_counter.RESPONSE_TIMEOUT_S,
                modbus_counter.INTER_FRAME_GAP_S,
            ),
            decode_kwargs=lambda options: {"register_map": _register_map(options)},
        ),
        DeviceModel(
            "rdm6300",
            "rdm6300",
            (Transport.SERIAL,),
            PayloadKind.BINARY,
            "125 kHz EM4100 card reader RDM6300/RDM630: STX, 10 hex digits, XOR checksum, ETX; repeats "
            "while a card is held (device-protocols §1)",
            "presence (card pseudonyms: arrivals, departures, dwell)",
            rdm6300.decode,
            False,
            framer=rdm6300.Framer,
            serial=SerialSettings(9600),  # transmit-only: nothing to send
            personal_raw=True,  # card IDs are personal (D13)
        ),
        DeviceModel(
            "m100",
            "m100",
            (Transport.SERIAL,),
            PayloadKind.BINARY,
            "UHF EPC Gen2 reader on a Magic RF M100/QM100 module (YRM100, JRD-4035, M5Stack U107): BB…7E "
            "frames cut by length, multi-poll notices with RSSI (device-protocols §2.1)",
            "presence (EPC, GTIN for SGTIN-96: arrivals, departures, dwell)",
            m100.decode,
            False,
            framer=m100.Framer,
            serial=SerialSettings(115200),  # the M5Stack unit's speed; other boards differ: config
            start_commands=m100.start_commands,  # stop, then multi-poll 65 535 rounds
            keepalive_s=m100.REARM_S,  # re-arm before the rounds run out
        ),
        DeviceModel(
            "chafon-uhfreader18",
            "chafon",
            (Transport.SERIAL,),
            PayloadKind.BINARY,
            "UHF EPC Gen2 reader, Chafon UHFReader18 protocol (CF-RU5102 …), CRC-16/MCRF4XX, polled "
            "inventory without antenna or RSSI (device-protocols §2.2)",
            "presence (EPC, GTIN for SGTIN-96: arrivals, departures, dwell; no RSSI)",
            chafon.decode_18,
            False,
            framer=chafon.Framer,
            serial=SerialSettings(57600),  # reader configuration; 115200 also common
            # the next inventory when the round is complete; the timeout (POLL_S) is the fallback
            bus=BusProfile(
                lambda address, _: chafon.poll_requests_18(address),
                chafon.match_answer,
                _CHAFON_ADDRESSES,
                chafon.BROADCAST,
                chafon.MIN_ROUND_S,
                chafon.POLL_S,
                chafon.INTER_FRAME_GAP_S,
            ),
        ),
        DeviceModel(
            "chafon-uhfreader288",
            "chafon",
            (Transport.SERIAL,),
            PayloadKind.BINARY,
            "UHF EPC Gen2 reader, Chafon UHFReader288 protocol (CF-RU5106/5112, CF-MU80x/90x …), "
            "CRC-16/MCRF4XX, polled inventory with antenna and raw RSSI (device-protocols §2.2)",
            "presence (EPC, GTIN for SGTIN-96: arrivals, departures, dwell)",
            chafon.decode_288,
            False,
            framer=chafon.Framer,
            serial=SerialSettings(57600),  # reader configuration; 115200 also common
            # inventory of antenna 1, scan time 1 s; the next when the round is complete (reply-driven)
            bus=BusProfile(
                lambda address, _: chafon.poll_requests_288(address),
                chafon.match_answer,
                _CHAFON_ADDRESSES,
                chafon.BROADCAST,
                chafon.MIN_ROUND_S,
                chafon.POLL_S,
                chafon.INTER_FRAME_GAP_S,
            ),
        ),
        DeviceModel(
            "rfid-mqtt-json",
            "rfid_mqtt",
            (Transport.MQTT,),
            PayloadKind.JSON,
            "Networked RFID readers publishing our JSON read contract (EPC or EM4100, antenna, RSSI, "
            "count, time; see devices/rfid_json.py)",
            "presence (EPC, GTIN for SGTIN-96, card pseudonyms: arrivals, departures, dwell)",
            rfid_json.decode,
            False,  # reader clocks are often unsynchronised: trust per device in config
            personal_raw=True,  # reads may carry EM4100 card IDs (D13)
        ),
    )
}


def lookup(name: str) -> DeviceModel:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown device model {name!r}; known: {', '.join(sorted(MODELS))}") from None
