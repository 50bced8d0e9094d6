"""Parcel lockers: one state machine per compartment, controller liveness and bank occupancy.

Design note. One `LockerBank` per configured bank: a serial bus of lock boards (compartments mapped to
(board, lock)) or one MQTT bank (board 0, lock = compartment number). It is pure (style.md 1): the
runtime hands in decoded events *after* the privacy step (decisions.md D13), the commands it is about
to send, poll timeouts and its monotonic clock reading `now_ns` (as RFID presence does); every call
returns RecordDrafts stamped `mono_ns = now_ns`, which the pipeline turns into wall time. Timers (door
left open, open unconfirmed, periodic occupancy) run at the start of every call, so `tick` only has
to come often enough for alarms to be timely. The state is a small JSON document (`to_bytes` /
`from_bytes`) committed with the records (D1).

Modules by role: this one is the state machine (transitions, entry points, views);
`lockers_model` its data, `lockers_records` how transitions become records, `lockers_state` the
committed JSON state.

Records — tags beyond the pipeline's district/street/gateway/[site]/device are bounded by config; tag
and field names are disjoint across all locker measurements:

    measurement        class      extra tags                 fields
    locker_door        TELEMETRY  bank, compartment          is_open, is_commanded, open_s (closing only)
    locker_parcel      AUDIT      bank, compartment          action (deposit|pickup), source, parcel_id,
                                                             recipient_ref, dwell_s
    locker_alarm       ALARM      bank, compartment, alarm   is_active, duration_s, detail
    locker_controller  ALARM      bank, board                is_online, missed_polls, outage_s
    locker_command     COMMAND    bank, compartment          action, outcome, actor, is_forced, latency_ms,
                                                             transaction_id, detail
    locker_audit       AUDIT      bank, compartment          action, actor, detail
    locker_occupancy   TELEMETRY  bank                       compartments, loaded, empty, unknown,
                                                             out_of_service, doors_open

(`locker_compartment`, each compartment's full state at each change, is written by the stage around
the banks, `locker_stage.py`; remote opens add their own `locker_audit` records, `lockers_control.py`.)

`alarm` ∈ door_left_open, forced_open, lock_jammed: raised once (is_active true), cleared once
(is_active false, duration_s). A command's `outcome`: requested, refused, confirmed, failed,
unconfirmed, not_opened (D10: no confirmation within `confirm_timeout_s` → unconfirmed, until the next
status showing the door resolves it as confirmed or not_opened; a second open meanwhile is refused
unless forced, and a forced open is audited).

A forced open is an opening with no open command pending and none unused within `command_window_s`
(one command, one opening: a latch relocks on close). It is inferred for lock boards, whose only
commander is this gateway; an MQTT bank fires its own relays (keypad, its backend), so there the bank's
`compartment_uncommanded_open` is the signal.

Deposit and pickup come from item sensors (Kerong board) or from the bank's parcel events (MQTT);
the 8A/80 board has neither, so its compartments stay `unknown` in occupancy (D10). Parcel ids are
fields, never tags. A recipient reference is written only when it already is a D13 pseudonym (32 hex
characters): clear text that slipped past the privacy step is never written.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from devices.events import (
    CompartmentDoorReported,
    CompartmentOpenCommanded,
    CompartmentOpenDetected,
    CompartmentOpenFailed,
    CompartmentUncommandedOpen,
    DeviceEvent,
    LockerCommandAnswered,
    LockerConnection,
    LockerHeartbeat,
    LockStatus,
    ParcelDeposited,
    ParcelPickedUp,
    UnlockAnswered,
)
from gateway.log.schema import RecordClass
from gateway.processors import lockers_state
from gateway.processors.lockers_model import (
    NS,
    Board,
    CommandKind,
    CommandOutcome,
    CommandStatus,
    Compartment,
    CompartmentView,
    Load,
    LockerConfig,
)
from gateway.processors.lockers_records import LockerRecords
from gateway.records import RecordDraft

__all__ = [
    "CommandKind",
    "CommandOutcome",
    "CommandStatus",
    "CompartmentView",
    "Load",
    "LockerBank",
    "LockerConfig",
]

SEEN_IDS = 512  # message ids remembered to drop an MQTT bank's duplicates (D4)


@dataclass
class LockerBank(LockerRecords):
    config: LockerConfig
    base_tags: dict[str, str]  # district, street, gateway, [site], device
    device_id: str = ""
    comps: dict[tuple[int, int], Compartment] = field(default_factory=dict)
    boards: dict[int, Board] = field(default_factory=dict)
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=SEEN_IDS))
    occupancy_ns: int | None = None
    last_occupancy: tuple[int, ...] | None = None
    _out: list[RecordDraft] = field(default_factory=list, repr=False)
    _now: int = 0

    def __post_init__(self) -> None:
        for key, number in self.config.compartments.items():
            self.comps.setdefault(key, Compartment(number))
            self.boards.setdefault(key[0], Board())

    # --- entry points ------------------------------------------------------------------------------

    def on_event(self, event: DeviceEvent, now_ns: int) -> list[RecordDraft]:
        return self.on_events([event], now_ns)

    def on_events(self, events: Iterable[DeviceEvent], now_ns: int) -> list[RecordDraft]:
        """The events of one frame or message (after the privacy step)."""
        timers = self._run_timers(now_ns)
        self._out = []
        ids = []
        for event in events:
            mid = getattr(event, "message_id", None)
            if mid is not None:
                key = f"{mid}|{getattr(event, 'compartment', '')}|{type(event).__name__}"
                if key in self.seen:
                    continue
                self.seen.append(key)
                ids.append(mid)
            self._apply(event, now_ns)
        self._occupancy(now_ns, periodic=False)
        drafts, self._out = self._out, []
        if ids and self.device_id:  # D4: identity from the message, so a redelivery overwrites itself
            drafts = [
                dataclasses.replace(d, identity=f"locker|{self.device_id}|{ids[0]}|{i}") for i, d in enumerate(drafts)
            ]
        return timers + drafts

    def on_poll_timeout(self, board: int, now_ns: int) -> list[RecordDraft]:
        """A status poll of `board` went unanswered (8A/80: 1.5 s)."""
        drafts = self._run_timers(now_ns)
        b = self.boards.get(board)
        if b is None:
            return drafts
        b.missed += 1
        if b.missed >= self.config.offline_after_polls and b.offline_ns is None:
            b.offline_ns = now_ns
            self._controller(board, is_online=False, missed_polls=b.missed, outage_s=0)
        drafts += self._out
        self._out = []
        return drafts

    def on_command(
        self,
        kind: CommandKind | str,
        board: int,
        lock: int,
        now_ns: int,
        actor: str,
        *,
        force: bool = False,
        transaction_id: str = "",
    ) -> CommandOutcome:
        """Call before sending: only an ACCEPTED open may go on the wire (D10)."""
        drafts = self._run_timers(now_ns)
        kind = CommandKind(kind)
        c = self.comps.get((board, lock))
        if c is None:
            return CommandOutcome(CommandStatus.UNKNOWN_COMPARTMENT, drafts)
        if kind is CommandKind.OPEN:
            status = CommandStatus.ACCEPTED
            if c.pending is not None and not force:
                status = CommandStatus.REFUSED_PENDING
            elif not c.in_service and not force:
                status = CommandStatus.REFUSED_OUT_OF_SERVICE
            if status is not CommandStatus.ACCEPTED:
                self._command(c, "open", "refused", actor=actor, is_forced=False, detail=status.value)
            else:
                if force:
                    overrode = c.pending or ("out_of_service" if not c.in_service else "")
                    self._audit(c, "force_open", actor, detail=overrode)
                c.cmd_ns, c.pending, c.pending_ns, c.pending_txn = now_ns, "pending", now_ns, transaction_id
                self._command(c, "open", "requested", actor=actor, is_forced=force, transaction_id=transaction_id)
        else:
            status = CommandStatus.ACCEPTED
            c.in_service = kind is CommandKind.ENABLE
            self._audit(c, kind.value, actor, detail="")
            self._occupancy(now_ns, periodic=False)
        drafts += self._out
        self._out = []
        return CommandOutcome(status, drafts)

    def tick(self, now_ns: int) -> list[RecordDraft]:
        """Timers: open unconfirmed, door left open, the periodic occupancy point. Call every second."""
        return self._run_timers(now_ns, periodic=True)

    def give_up_waiting(self, board: int, lock: int, transaction_id: str, now_ns: int) -> list[RecordDraft]:
        """The sender of open `transaction_id` waited its confirmation time in vain: the open is
        unconfirmed from now (D10), whether or not the timer has come round yet."""
        drafts = self._run_timers(now_ns)
        c = self.comps.get((board, lock))
        if c is not None and c.pending == "pending" and c.pending_txn == transaction_id:
            self._unconfirmed(c, now_ns)
        drafts += self._out
        self._out = []
        return drafts

    def unlock_failed(self, board: int, lock: int, transaction_id: str, now_ns: int) -> list[RecordDraft]:
        """The controller answered open `transaction_id` showing the door still shut (a Kerong board's
        status reply to its unlock): the open failed, the lock is presumed jammed."""
        drafts = self._run_timers(now_ns)
        c = self.comps.get((board, lock))
        if c is not None and c.pending is not None and c.pending_txn == transaction_id and not c.door_open:
            self._fail(c, now_ns, detail="door shut after the unlock")
        drafts += self._out
        self._out = []
        return drafts

    def pending_of(self, board: int, lock: int) -> tuple[str | None, str]:
        """(pending | unconfirmed | None, its transaction id) of a compartment."""
        c = self.comps.get((board, lock))
        return (c.pending, c.pending_txn) if c is not None else (None, "")

    # --- views -------------------------------------------------------------------------------------

    def view(self, board: int, lock: int) -> CompartmentView | None:
        c = self.comps.get((board, lock))
        if c is None:
            return None
        alarms = tuple(
            name
            for name, on in (
                ("door_left_open", c.left_open_raised),
                ("forced_open", c.forced_raised),
                ("lock_jammed", c.jammed_ns is not None),
            )
            if on
        )
        return CompartmentView(c.number, c.in_service, c.door_open, c.item_present, c.load, c.pending, alarms)

    def occupancy(self) -> dict[str, int]:
        comps = self.comps.values()
        return {
            "compartments": len(self.comps),
            "loaded": sum(c.load is Load.LOADED for c in comps),
            "empty": sum(c.load is Load.EMPTY for c in comps),
            "unknown": sum(c.load is Load.UNKNOWN for c in comps),
            "out_of_service": sum(not c.in_service for c in comps),
            "doors_open": sum(c.door_open is True for c in comps),
        }

    def offline_boards(self) -> list[int]:
        return sorted(b for b, s in self.boards.items() if s.offline_ns is not None)

    # --- state (D1) --------------------------------------------------------------------------------

    def to_bytes(self, boot_id: str = "") -> bytes:
        """The state to commit with the records (D1); times in it are on `boot_id`'s monotonic clock."""
        return lockers_state.dump(self, boot_id)

    @classmethod
    def from_bytes(
        cls,
        config: LockerConfig,
        base_tags: dict[str, str],
        device_id: str,
        data: bytes,
        *,
        boot_id: str = "",
        now_ns: int = 0,
    ) -> LockerBank:
        """Restore committed state (`lockers_state.load_into`): another boot's times are rebased."""
        bank = cls(config, base_tags, device_id)
        lockers_state.load_into(bank, data, boot_id=boot_id, now_ns=now_ns)
        return bank

    # --- transitions -------------------------------------------------------------------------------

    def _apply(self, ev: DeviceEvent, now: int) -> None:
        if isinstance(ev, LockStatus):
            self._alive(ev.board, now)
            c = self.comps.get((ev.board, ev.lock))
            if c is not None:
                self._door(c, ev.door_open, now, source="poll")
                self._item(c, ev.item_present, now)
        elif isinstance(ev, UnlockAnswered):
            self._alive(ev.board, now)
            c = self.comps.get((ev.board, ev.lock))
            if c is not None:
                if not ev.door_open and c.pending is not None:
                    self._fail(c, now, detail="door reported closed after the unlock")
                self._door(c, ev.door_open, now, source="unlock_reply")
        elif isinstance(ev, LockerHeartbeat):
            self._alive(0, now)
        elif isinstance(ev, LockerConnection):
            if ev.is_online:
                self._alive(0, now)
            elif (b := self.boards.get(0)) is not None and b.offline_ns is None:
                b.offline_ns = now
                self._controller(0, is_online=False, missed_polls=b.missed, outage_s=0)
        else:
            self._apply_bank_event(ev, now)

    def _apply_bank_event(self, ev: DeviceEvent, now: int) -> None:
        """MQTT bank events about one compartment (board 0, lock = compartment number)."""
        number = getattr(ev, "compartment", None)
        c = self.comps.get((0, number)) if isinstance(number, int) else None
        if isinstance(ev, LockerCommandAnswered):
            self._alive(0, now)
            if not ev.is_success and ev.transaction_id:
                for comp in self.comps.values():
                    if comp.pending is not None and comp.pending_txn == ev.transaction_id:
                        self._fail(comp, now, detail=ev.error_code or "command error", jammed=False)
            return
        if c is None:
            return
        self._alive(0, now)
        if isinstance(ev, CompartmentDoorReported):
            self._door(c, ev.door_open, now, source="bank", infer_forced=False)
        elif isinstance(ev, CompartmentOpenCommanded):
            c.cmd_ns = now
        elif isinstance(ev, CompartmentOpenDetected):
            if c.cmd_ns is None or now - c.cmd_ns > self.config.command_window_s * NS:
                c.cmd_ns = now  # the bank fired its relay for this opening
            self._door(c, True, now, source="bank", infer_forced=False)
        elif isinstance(ev, CompartmentOpenFailed):
            if c.pending is not None:
                self._fail(c, now, detail=ev.error_code or ev.outcome)
            else:
                self._jam(c, now, detail=ev.error_code or ev.outcome)
            self._door(c, False, now, source="bank", infer_forced=False)
        elif isinstance(ev, CompartmentUncommandedOpen):
            self._door(c, True, now, source="bank", infer_forced=False)
            if not c.forced_raised:
                c.forced_raised = True
                self._alarm(c, "forced_open", True, 0, detail="bank")
        elif isinstance(ev, ParcelDeposited):
            c.load, c.loaded_ns, c.parcel_id = Load.LOADED, now, ev.parcel_id
            self._parcel(c, "deposit", "bank", ev.parcel_id, now, recipient=ev.recipient_phone)
        elif isinstance(ev, ParcelPickedUp):
            dwell = now - c.loaded_ns if c.loaded_ns is not None and c.parcel_id == ev.parcel_id else None
            c.load, c.loaded_ns, c.parcel_id = Load.EMPTY, None, None
            self._parcel(c, "pickup", "bank", ev.parcel_id, now, dwell_ns=dwell)

    def _door(
        self, c: Compartment, door_open: bool | None, now: int, *, source: str, infer_forced: bool = True
    ) -> None:
        """A door observation. `infer_forced`: an opening with no command behind it is a forced open —
        true for lock boards, whose only commander is this gateway; an MQTT bank fires its own relays
        (keypad, its backend) and reports an uncommanded open itself."""
        if door_open is None:
            return  # unknown: nothing learnt
        prev, c.door_open = c.door_open, door_open
        if door_open:
            if prev is not True:
                commanded = c.pending is not None or (
                    c.cmd_ns is not None and now - c.cmd_ns <= self.config.command_window_s * NS
                )
                c.opened_ns, c.left_open_raised = now, False
                if prev is False:  # an opening seen happen (first sight proves nothing)
                    self._emit("locker_door", c, RecordClass.TELEMETRY, is_open=True, is_commanded=commanded)
                    if commanded:
                        c.cmd_ns = None  # one command, one opening: a latch relocks on close
                    elif infer_forced and not c.forced_raised:
                        c.forced_raised = True
                        self._alarm(c, "forced_open", True, 0, detail=source)
                if c.jammed_ns is not None:
                    self._alarm(c, "lock_jammed", False, now - c.jammed_ns, detail=source)
                    c.jammed_ns = None
            if c.pending is not None:
                late = c.pending == "unconfirmed"
                self._resolve(c, "confirmed", now, detail=f"{source}, late" if late else source)
            return
        if prev is True:
            open_ns = now - c.opened_ns if c.opened_ns is not None else 0
            self._emit("locker_door", c, RecordClass.TELEMETRY, is_open=False, is_commanded=False, open_s=open_ns // NS)
            if c.left_open_raised:
                self._alarm(c, "door_left_open", False, open_ns, detail=source)
            if c.forced_raised:
                self._alarm(c, "forced_open", False, open_ns, detail=source)
        c.opened_ns, c.left_open_raised, c.forced_raised = None, False, False
        if c.pending == "unconfirmed":  # D10: the next status showing the door resolves it
            self._resolve(c, "not_opened", now, detail=source)
            self._jam(c, now, detail="door still closed after an unconfirmed open")

    def _item(self, c: Compartment, item: bool | None, now: int) -> None:
        if item is None:
            return  # no sensor: never guessed (D10)
        prev, c.item_present = c.item_present, item
        if prev is None:
            c.load = Load.LOADED if item else Load.EMPTY
        elif item and not prev:
            c.load, c.loaded_ns = Load.LOADED, now
            self._parcel(c, "deposit", "item_sensor", None, now)
        elif prev and not item:
            dwell = now - c.loaded_ns if c.loaded_ns is not None else None
            c.load, c.loaded_ns = Load.EMPTY, None
            self._parcel(c, "pickup", "item_sensor", None, now, dwell_ns=dwell)

    def _alive(self, board: int, now: int) -> None:
        b = self.boards.get(board)
        if b is None:
            return
        b.missed = 0
        if b.offline_ns is not None:
            self._controller(board, is_online=True, missed_polls=0, outage_s=(now - b.offline_ns) // NS)
            b.offline_ns = None

    def _resolve(self, c: Compartment, outcome: str, now: int, *, detail: str) -> None:
        self._command(
            c,
            "open",
            outcome,
            latency_ms=(now - c.pending_ns) // 1_000_000,
            transaction_id=c.pending_txn,
            detail=detail,
        )
        c.pending, c.pending_txn = None, ""

    def _occupancy(self, now: int, *, periodic: bool) -> None:
        """An occupancy point when the counts changed, or when the periodic one is due."""
        counts = self.occupancy()
        key = tuple(counts.values())
        due = self.occupancy_ns is None or now - self.occupancy_ns >= self.config.occupancy_every_s * NS
        if key != self.last_occupancy or (periodic and due):
            self.last_occupancy, self.occupancy_ns = key, now
            self._occupancy_point(counts)

    def _unconfirmed(self, c: Compartment, now: int) -> None:
        c.pending = "unconfirmed"
        latency_ms = (now - c.pending_ns) // 1_000_000
        self._command(c, "open", "unconfirmed", latency_ms=latency_ms, transaction_id=c.pending_txn, detail="")

    def _fail(self, c: Compartment, now: int, *, detail: str, jammed: bool = True) -> None:
        self._resolve(c, "failed", now, detail=detail)
        if jammed:
            self._jam(c, now, detail=detail)

    def _jam(self, c: Compartment, now: int, *, detail: str) -> None:
        if c.jammed_ns is None:
            c.jammed_ns = now
            self._alarm(c, "lock_jammed", True, 0, detail=detail)

    def _run_timers(self, now: int, *, periodic: bool = False) -> list[RecordDraft]:
        self._out, self._now = [], now
        cfg = self.config
        for c in self.comps.values():
            if c.pending == "pending" and now - c.pending_ns >= cfg.confirm_timeout_s * NS:
                self._unconfirmed(c, now)
            is_open_too_long = c.opened_ns is not None and now - c.opened_ns >= cfg.door_open_alarm_s * NS
            if c.door_open and is_open_too_long and not c.left_open_raised:
                c.left_open_raised = True
                self._alarm(c, "door_left_open", True, 0, detail=f"> {cfg.door_open_alarm_s:g} s")
        if periodic:
            self._occupancy(now, periodic=True)
        drafts, self._out = self._out, []
        return drafts
