"""Device model name (what config and `sdgw decode --device` take) → its family's codec.

Adding a model is one row here plus its family module (style.md 2)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from devices import vivotek
from devices.events import Event, Reject


class Transport(enum.StrEnum):
    MQTT = "mqtt"
    SERIAL = "serial"


class PayloadKind(enum.StrEnum):
    JSON = "json"  # `sdgw decode` takes the text as is
    BINARY = "binary"  # `sdgw decode` takes hex


@dataclass(frozen=True)
class DeviceModel:
    name: str
    family: str
    transports: tuple[Transport, ...]
    payload: PayloadKind
    protocol: str  # one line for `sdgw devices`
    emits: str  # measurement(s) the gateway writes for it
    decode: Callable[..., list[Event] | Reject]
    device_time_trusted: bool  # the payload carries interval times the default config trusts


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
