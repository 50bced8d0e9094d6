"""Device model name (what config and `sdgw decode --device` take) → its family's codec.

Adding a model is one row here plus its family module (style.md 2)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from devices import vivotek
from devices.events import Event, Reject


class Transport(enum.StrEnum):
    MQTT = "mqtt"
    SERIAL = "serial"


class PayloadKind(enum.StrEnum):
    JSON = "json"  # `sdgw decode` takes the text as is
    BINARY = "binary"  # `sdgw decode` takes hex


class Framer(Protocol):
    """Incremental framing of a serial byte stream (style.md 7): `feed` returns the whole frames and
    the rejects found so far and keeps the tail; garbage becomes one Reject and the next good frame
    still comes out. One instance per port; no I/O, no clock."""

    def feed(self, chunk: bytes) -> list[bytes | Reject]: ...


@dataclass(frozen=True)
class SerialSettings:
    """Line settings a model needs by default (config may override baud and parity)."""

    baudrate: int
    bytesize: int = 8
    parity: str = "N"  # "N", "E", "O"
    stopbits: int = 1


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


MODELS: dict[str, DeviceModel] = {
    m.name: m
    for m in (
        DeviceModel(
            "vivotek-sc8131",
            "vivotek",
            (Transport.MQTT,),
            PayloadKind.JSON,
            "Report Push JSON, per-interval In/Out deltas per counting rule (device-protocols §4.4)",
            "footfall (entries, exits, interval_s per line)",
            vivotek.decode,
            True,
        ),
    )
}


def lookup(name: str) -> DeviceModel:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown device model {name!r}; known: {', '.join(sorted(MODELS))}") from None
