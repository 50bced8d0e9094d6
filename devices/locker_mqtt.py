"""Parcel-locker banks over MQTT — the Open-Locker JSON contract, plus two parcel events of ours.

Source: device-protocols.md §5.3 (Open-Locker `docs/asyncapi/mqtt.yaml` 0.1.0-alpha and
`docs/asyncapi/examples/`). One bank = one `locker_uuid`; config routes `locker/<uuid>/#` to one
device, so the codec sees payloads without their topic and tells the messages apart by their keys:

    topic (under locker/<uuid>/)  retain  distinguishing key      → event(s)
    command                       no      "action" (no "result")   open_compartment → CompartmentOpenCommanded
    response                      no      "result"                 → LockerCommandAnswered
    event                         no      "event"                  table EVENTS (door_state_changed, …)
    state/compartments            yes     "compartments"           → one CompartmentDoorReported each
    state/heartbeat               no      "uptime_seconds"         → LockerHeartbeat
    state/connection (Last Will)  no      "status"                 → LockerConnection

Every message carries `message_id` (the sender's identity: duplicates are dropped on it, D4) and
`timestamp` (RFC 3339 UTC, optional fraction) → `ts_ns`. Compartments are numbered from 1.

Example (§5.3): `{"message_id":"msg-evt-door-001","event_id":"evt-door-001","event":"door_state_changed",
"timestamp":"2026-04-14T19:32:00Z","data":{"compartment_number":3,"state":"closed"}}` →
CompartmentDoorReported(compartment=3, door_open=False, message_id="msg-evt-door-001",
ts_ns=1776195120000000000).

Our extension — not in Open-Locker's contract, which has no deposit or pickup: a bank that knows them
publishes `parcel_deposited` / `parcel_picked_up` in the same event envelope (the contract's envelope
allows any `event` and any `data`): data `compartment_number`, `parcel_id`, and optionally
`pickup_code`, `recipient_phone`, `recipient_name`. Those three are personal: the events mark them
(`PERSONAL_FIELDS`), the codec returns them clear, and the privacy step right after the codec drops or
pseudonymises them (decisions.md D13). Rejected payloads carry a masked copy (`mask_personal`) as raw
bytes, so a dead letter never holds a code, phone number or name in clear (D1).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

import orjson

from devices.events import (
    CompartmentDoorReported,
    CompartmentOpenCommanded,
    CompartmentOpenDetected,
    CompartmentOpenFailed,
    CompartmentUncommandedOpen,
    Event,
    LockerCommandAnswered,
    LockerConnection,
    LockerHeartbeat,
    ParcelDeposited,
    ParcelPickedUp,
    Reject,
    RejectReason,
)

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_COMPARTMENT = 999
MAX_ID_CHARS = 128
DOOR_STATES = {"open": True, "closed": False, "unknown": None}
CONNECTION_STATUS = {"online": True, "offline": False}
PERSONAL_KEYS = frozenset({"pickup_code", "recipient_phone", "recipient_name", "phone", "name", "code"})


class _Bad(Exception):
    """Internal: a payload that breaks the contract (reason, detail); never escapes `decode`."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _utc_ns(text: object) -> int:
    if not isinstance(text, str) or len(text) > 40:
        raise _Bad(RejectReason.SCHEMA, "timestamp missing or not a string")
    try:
        dt = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise _Bad(RejectReason.SCHEMA, "timestamp not RFC 3339") from None
    if dt.tzinfo is None:
        raise _Bad(RejectReason.SCHEMA, "timestamp without a zone")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000


def _text(doc: dict, key: str, *, required: bool = True) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise _Bad(RejectReason.SCHEMA, f"{key} missing or not a short string")
    return value


def _personal(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        raise _Bad(RejectReason.SCHEMA, f"{key} not a short string")  # detail names the key, never the value
    return value


def _opt_int(doc: dict, key: str, lo: int, hi: int) -> int | None:
    return None if doc.get(key) is None else _int(doc, key, lo, hi)


def _int(doc: dict, key: str, lo: int, hi: int) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(RejectReason.SCHEMA, f"{key} missing or not an integer")
    if not lo <= value <= hi:
        raise _Bad(RejectReason.SANITY, f"{key} {value} outside {lo}–{hi}")
    return value


def _compartment(data: dict) -> int:
    return _int(data, "compartment_number", 1, MAX_COMPARTMENT)


def _data(doc: dict) -> dict:
    data = doc.get("data")
    if not isinstance(data, dict):
        raise _Bad(RejectReason.SCHEMA, "data missing or not an object")
    return data


# --- event envelope: `event` name → builder ---------------------------------------------------------


def _door_changed(data: dict, mid: str, ts: int) -> list[Event]:
    state = data.get("state")
    if not isinstance(state, str) or state not in DOOR_STATES:
        raise _Bad(RejectReason.SCHEMA, "state not open / closed / unknown")
    return [CompartmentDoorReported(_compartment(data), DOOR_STATES[state], mid, ts)]


def _open_detected(data: dict, mid: str, ts: int) -> list[Event]:
    return [
        CompartmentOpenDetected(
            _compartment(data),
            _text(data, "transaction_id", required=False),
            _text(data, "outcome", required=False) or "opened",
            _opt_int(data, "detection_ms", 0, 3_600_000),
            mid,
            ts,
        )
    ]


def _open_failed(data: dict, mid: str, ts: int) -> list[Event]:
    return [
        CompartmentOpenFailed(
            _compartment(data),
            _text(data, "transaction_id", required=False),
            _text(data, "outcome", required=False),
            _text(data, "error_code", required=False),
            mid,
            ts,
        )
    ]


def _uncommanded_open(data: dict, mid: str, ts: int) -> list[Event]:
    since = _opt_int(data, "milliseconds_since_last_relay_fire", 0, 2**53)
    return [CompartmentUncommandedOpen(_compartment(data), since, mid, ts)]


def _deposited(data: dict, mid: str, ts: int) -> list[Event]:
    return [
        ParcelDeposited(
            _compartment(data),
            _text(data, "parcel_id"),
            _personal(data, "pickup_code"),
            _personal(data, "recipient_phone"),
            _personal(data, "recipient_name"),
            mid,
            ts,
        )
    ]


def _picked_up(data: dict, mid: str, ts: int) -> list[Event]:
    return [ParcelPickedUp(_compartment(data), _text(data, "parcel_id"), _personal(data, "pickup_code"), mid, ts)]


EVENTS: dict[str, Callable[[dict, str, int], list[Event]]] = {
    "door_state_changed": _door_changed,
    "compartment_open_detected": _open_detected,
    "compartment_open_failed": _open_failed,
    "compartment_uncommanded_open": _uncommanded_open,
    "parcel_deposited": _deposited,  # ours
    "parcel_picked_up": _picked_up,  # ours
}

# command `action` → builder; None = a valid command the gateway does not record
COMMAND_ACTIONS: dict[str, Callable[[dict, str, int], list[Event]] | None] = {
    "open_compartment": lambda doc, mid, ts: [
        CompartmentOpenCommanded(_compartment(_data(doc)), _text(doc, "transaction_id", required=False), mid, ts)
    ],
    "apply_config": None,
}


def _event(doc: dict, mid: str, ts: int) -> list[Event]:
    name = doc.get("event")
    builder = EVENTS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise _Bad(RejectReason.UNSUPPORTED, "event name not handled")
    return builder(_data(doc), mid, ts)


def _snapshot(doc: dict, mid: str, ts: int) -> list[Event]:
    entries = doc["compartments"]
    if not isinstance(entries, list) or len(entries) > MAX_COMPARTMENT:
        raise _Bad(RejectReason.SCHEMA, "compartments not a list of at most 999")
    events: list[Event] = []
    seen: set[int] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            raise _Bad(RejectReason.SCHEMA, "compartments entry not an object")
        number = _compartment(entry)
        state = entry.get("door_state")
        if not isinstance(state, str) or state not in DOOR_STATES:
            raise _Bad(RejectReason.SCHEMA, "door_state not open / closed / unknown")
        if number in seen:
            raise _Bad(RejectReason.SANITY, f"compartment {number} listed twice")
        seen.add(number)
        events.append(CompartmentDoorReported(number, DOOR_STATES[state], mid, ts))
    return events


def _response(doc: dict, mid: str, ts: int) -> list[Event]:
    result = doc["result"]
    if result not in ("success", "error"):
        raise _Bad(RejectReason.SCHEMA, "result not success / error")
    return [
        LockerCommandAnswered(
            _text(doc, "action"),
            _text(doc, "transaction_id", required=False),
            result == "success",
            _text(doc, "error_code", required=False),
            mid,
            ts,
        )
    ]


def _command(doc: dict, mid: str, ts: int) -> list[Event]:
    action = doc["action"]
    if not isinstance(action, str) or action not in COMMAND_ACTIONS:
        raise _Bad(RejectReason.UNSUPPORTED, "command action not handled")
    builder = COMMAND_ACTIONS[action]
    return builder(doc, mid, ts) if builder else []


def _heartbeat(doc: dict, mid: str, ts: int) -> list[Event]:
    return [LockerHeartbeat(_int(doc, "uptime_seconds", 0, 2**53), mid, ts)]


def _connection(doc: dict, mid: str, ts: int) -> list[Event]:
    status = doc["status"]
    if not isinstance(status, str) or status not in CONNECTION_STATUS:
        raise _Bad(RejectReason.SCHEMA, "status not online / offline")
    return [LockerConnection(CONNECTION_STATUS[status], _text(doc, "reason", required=False), mid, ts)]


# distinguishing key → builder, tried in this order (a response also has "action": "result" first)
KINDS: tuple[tuple[str, Callable[[dict, str, int], list[Event]]], ...] = (
    ("event", _event),
    ("compartments", _snapshot),
    ("result", _response),
    ("action", _command),
    ("uptime_seconds", _heartbeat),
    ("status", _connection),
)


def decode(payload: bytes, *, received_ns: int) -> list[Event] | Reject:
    """One MQTT payload of a locker bank → its events (see the table on top)."""
    del received_ns  # every message carries its sender's timestamp
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Reject(RejectReason.OVERSIZE, f"{len(payload)} bytes", mask_personal(payload[:1024]))
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        reason = RejectReason.BAD_ENCODING if "utf-8" in str(exc).lower() else RejectReason.BAD_JSON
        return Reject(
            reason, "not a JSON document" if reason is RejectReason.BAD_JSON else "not UTF-8", mask_personal(payload)
        )
    if not isinstance(doc, dict):
        return Reject(RejectReason.SCHEMA, "not a JSON object", mask_personal(payload))
    try:
        builder = next((b for key, b in KINDS if key in doc), None)
        if builder is None:
            raise _Bad(RejectReason.SCHEMA, "no key of a known message kind")
        mid = _text(doc, "message_id")
        ts = _utc_ns(doc.get("timestamp"))
        return builder(doc, mid, ts)
    except _Bad as bad:
        return Reject(bad.reason, bad.detail, mask_personal(payload))


_KEY_VALUE = re.compile(
    rb'("(?:' + b"|".join(re.escape(k.encode()) for k in sorted(PERSONAL_KEYS)) + rb')"\s*:\s*)"(?:[^"\\]|\\.)*"?'
)
_PHONE_LIKE = re.compile(rb"\+?\d[\d \-]{4,}\d")


def _mask(value: object) -> object:
    if isinstance(value, dict):
        return {k: ("***" if k in PERSONAL_KEYS and v is not None else _mask(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return value


def mask_personal(payload: bytes) -> bytes:
    """A copy of `payload` safe to keep as a dead letter: values of personal keys become "***"; in a
    payload that is not JSON, those keys' values and every phone-like run of digits are masked too."""
    try:
        return orjson.dumps(_mask(orjson.loads(payload)))
    except (orjson.JSONDecodeError, TypeError):
        masked = _KEY_VALUE.sub(rb'\1"***"', payload)
        return _PHONE_LIKE.sub(lambda m: b"#" * len(m.group()), masked)
