"""The gateway's locker banks: one `LockerBank` per configured bank device, state committed with the
records (D1) and restored at start, timers run from the runtime's processor tick.

Besides the state machine's own records this stage writes `locker_compartment`, the full state of a
compartment each time it changes, so that "the state of every compartment now" is one InfluxDB query
(the latest point of each series, decisions.md D15):

    measurement         class      extra tags           fields (always all present)
    locker_compartment  TELEMETRY  bank, compartment    door (open|closed|unknown), item (present|absent|
                                                        unknown), load, in_service, command (none|pending|
                                                        unconfirmed), alarms (comma list or "none")

It also tells whoever waits on an open (`watch`) how that open ended: the first final outcome of the
command records carrying its transaction id (confirmed, failed, not_opened, unconfirmed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import orjson

from devices.events import DeviceEvent, DoorFeedback
from devices.registry import MODELS
from gateway.config import LOCKER_FAMILIES, DeviceConfig, GatewayConfig
from gateway.privacy import Pseudonymiser
from gateway.processors.lockers import CommandKind, CommandOutcome, CompartmentView, LockerBank, LockerConfig
from gateway.records import RecordDraft

STATE_KEY = "lockers"
SNAPSHOT = "locker_compartment"
FINAL_OUTCOMES = frozenset({"confirmed", "failed", "not_opened", "unconfirmed"})


@dataclass(frozen=True)
class BankSpec:
    """What the gateway needs to know about one bank device beyond its state machine."""

    device_id: str
    bank: str  # the `bank` tag, unique across the gateway
    family: str  # lock8a | kerong | locker_mqtt
    transport: str  # serial | mqtt
    feedback: DoorFeedback
    command_topic: str | None  # MQTT banks: where open commands go
    config: LockerConfig

    def locate(self, compartment: int) -> tuple[int, int] | None:
        """Compartment number → (board, lock)."""
        for key, number in self.config.compartments.items():
            if number == compartment:
                return key
        return None


@dataclass(frozen=True)
class Resolution:
    outcome: str  # confirmed | failed | not_opened | unconfirmed
    detail: str
    latency_ms: int | None


def _command_topic(device: DeviceConfig) -> str | None:
    if device.locker is not None and device.locker.command_topic:
        return device.locker.command_topic
    topic = device.topic or ""
    for suffix in ("/#", "/+"):
        if topic.endswith(suffix):
            return topic[: -len(suffix)] + "/command"
    return None


def bank_spec(device: DeviceConfig, config: GatewayConfig) -> BankSpec:
    family = MODELS[device.model].family
    default_board, default_locks = LOCKER_FAMILIES[family]
    layout = device.locker
    lk = config.lockers
    timing = {
        "door_open_alarm_s": lk.door_left_open_s,
        "command_window_s": lk.command_window_s,
        "confirm_timeout_s": lk.open_confirm_timeout_s,
        "offline_after_polls": lk.offline_after_polls,
        "occupancy_every_s": lk.occupancy_every_s,
    }
    bank = (layout.bank if layout and layout.bank else None) or device.id
    if family == "locker_mqtt":
        assert layout is not None and layout.compartments is not None  # config validation
        cfg = LockerConfig.mqtt(bank, layout.compartments, **timing)
    else:
        boards = (layout.boards if layout and layout.boards else None) or [default_board]
        locks = (layout.locks_per_board if layout and layout.locks_per_board else None) or default_locks
        cfg = LockerConfig.serial(bank, dict.fromkeys(boards, locks), **timing)
    feedback = DoorFeedback(layout.door_feedback) if layout else DoorFeedback.DOOR_CLOSING
    topic = _command_topic(device) if device.transport == "mqtt" else None
    return BankSpec(device.id, bank, family, device.transport, feedback, topic, cfg)


def request_board(family: str, request: bytes | None) -> int | None:
    """The board a serial request was addressed to (None when unknown)."""
    if not request or len(request) < 2:
        return None
    if family == "lock8a":
        return request[1]
    if family == "kerong":
        return request[1] >> 4
    return None


def _view_fields(v: CompartmentView) -> dict[str, str | bool]:
    door = "unknown" if v.door_open is None else ("open" if v.door_open else "closed")
    item = "unknown" if v.item_present is None else ("present" if v.item_present else "absent")
    return {
        "door": door,
        "item": item,
        "load": v.load.value,
        "in_service": v.in_service,
        "command": v.command or "none",
        "alarms": ",".join(v.alarms) or "none",
    }


class LockerStage:
    def __init__(
        self, config: GatewayConfig, base_tags: dict[str, dict[str, str]], pseudonymiser: Pseudonymiser | None
    ) -> None:
        self.pseudonymiser = pseudonymiser
        self.specs: dict[str, BankSpec] = {}
        self.banks: dict[str, LockerBank] = {}
        self.base_tags = base_tags
        for device in config.devices:
            if device.is_locker:
                spec = bank_spec(device, config)
                self.specs[device.id] = spec
                self.banks[device.id] = LockerBank(spec.config, dict(base_tags[device.id]), device.id)
        self.by_bank = {s.bank: s.device_id for s in self.specs.values()}
        self.written: dict[str, dict[str, dict]] = {d: {} for d in self.specs}  # last locker_compartment
        self.watchers: dict[str, list[Callable[[Resolution], None]]] = {}
        self.dirty = False
        self._last_snapshot = b""

    def owns(self, device_id: str) -> bool:
        return device_id in self.banks

    # --- entry points (each returns the drafts to append, and leaves `dirty` set) ---------------------

    def on_events(
        self, device_id: str, events: Iterable[DeviceEvent], now_ns: int, wall_ns: int | None
    ) -> list[RecordDraft]:
        """Decoded events of one payload, after the privacy step."""
        drafts = self.banks[device_id].on_events(events, now_ns)
        return self._finish(device_id, self._with_period(drafts, wall_ns), now_ns)

    def poll_timeout(self, device_id: str, board: int | None, now_ns: int) -> list[RecordDraft]:
        """A status poll went unanswered: of `board`, or of every board when unknown (with polls in
        turn, a live board's next answer resets its count, so only silent boards go offline)."""
        bank = self.banks[device_id]
        boards = [board] if board is not None else sorted(bank.boards)
        drafts: list[RecordDraft] = []
        for b in boards:
            drafts += bank.on_poll_timeout(b, now_ns)
        return self._finish(device_id, drafts, now_ns)

    def command(
        self,
        device_id: str,
        kind: CommandKind,
        board: int,
        lock: int,
        now_ns: int,
        actor: str,
        *,
        force: bool = False,
        transaction_id: str = "",
    ) -> CommandOutcome:
        out = self.banks[device_id].on_command(
            kind, board, lock, now_ns, actor, force=force, transaction_id=transaction_id
        )
        return CommandOutcome(out.status, self._finish(device_id, out.drafts, now_ns))

    def give_up_waiting(self, device_id: str, board: int, lock: int, transaction_id: str, now_ns: int):
        drafts = self.banks[device_id].give_up_waiting(board, lock, transaction_id, now_ns)
        return self._finish(device_id, drafts, now_ns)

    def unlock_failed(self, device_id: str, board: int, lock: int, transaction_id: str, now_ns: int):
        drafts = self.banks[device_id].unlock_failed(board, lock, transaction_id, now_ns)
        return self._finish(device_id, drafts, now_ns)

    def tick(self, now_ns: int) -> list[RecordDraft]:
        drafts: list[RecordDraft] = []
        for device_id, bank in self.banks.items():
            if due := bank.tick(now_ns):  # timers change state only where they write a record
                drafts += self._finish(device_id, due, now_ns)
        return drafts

    def watch(self, transaction_id: str, callback: Callable[[Resolution], None]) -> Callable[[], None]:
        """Call `callback` with the first final outcome of open `transaction_id`; returns an unwatch."""
        self.watchers.setdefault(transaction_id, []).append(callback)

        def unwatch() -> None:
            callbacks = self.watchers.get(transaction_id, [])
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks:
                self.watchers.pop(transaction_id, None)

        return unwatch

    # --- internals -----------------------------------------------------------------------------------

    def _with_period(self, drafts: list[RecordDraft], wall_ns: int | None) -> list[RecordDraft]:
        """A recipient pseudonym carries the key period it was made with (the district can link it)."""
        if self.pseudonymiser is None:
            return drafts
        out = []
        for d in drafts:
            if d.measurement == "locker_parcel" and "recipient_ref" in d.fields:
                period = self.pseudonymiser.current(wall_ns).period
                d = replace(d, fields={**d.fields, "pseudonym_period": period})
            out.append(d)
        return out

    def _finish(self, device_id: str, drafts: list[RecordDraft], now_ns: int) -> list[RecordDraft]:
        self.dirty = True
        bank = self.banks[device_id]
        written = self.written[device_id]
        for key in bank.config.compartments:
            view = bank.view(*key)
            assert view is not None
            fields = _view_fields(view)
            number = str(view.compartment)
            if written.get(number) != fields and (view.door_open is not None or number in written):
                written[number] = fields
                tags = {**bank.base_tags, "bank": bank.config.bank, "compartment": number}
                drafts.append(RecordDraft(SNAPSHOT, tags, dict(fields), None, mono_ns=now_ns))
        for d in drafts:
            if d.measurement == "locker_command" and d.fields.get("outcome") in FINAL_OUTCOMES:
                txn = d.fields.get("transaction_id")
                for callback in self.watchers.pop(str(txn), []) if txn else []:
                    callback(Resolution(str(d.fields["outcome"]), str(d.fields.get("detail", "")), _int(d)))
        return drafts

    # --- state (D1) ----------------------------------------------------------------------------------

    def snapshot(self, boot_id: str) -> bytes | None:
        """The state to commit, or None when it is what was last handed out (a status poll that
        changed nothing: no state write on every poll)."""
        self.dirty = False
        data = orjson.dumps(
            {
                "banks": {d: b.to_bytes(boot_id).decode() for d, b in self.banks.items()},
                "written": self.written,
            }
        )
        if data == self._last_snapshot:
            return None
        self._last_snapshot = data
        return data

    def restore(self, data: bytes, boot_id: str, now_ns: int) -> None:
        doc = orjson.loads(data)
        for device_id, saved in doc.get("banks", {}).items():
            spec = self.specs.get(device_id)
            if spec is None:
                continue  # a bank no longer configured
            self.banks[device_id] = LockerBank.from_bytes(
                spec.config,
                dict(self.base_tags[device_id]),
                device_id,
                saved.encode(),
                boot_id=boot_id,
                now_ns=now_ns,
            )
        for device_id, written in doc.get("written", {}).items():
            if device_id in self.written:
                self.written[device_id] = written
        self._last_snapshot = data


def _int(d: RecordDraft) -> int | None:
    value = d.fields.get("latency_ms")
    return value if isinstance(value, int) else None
