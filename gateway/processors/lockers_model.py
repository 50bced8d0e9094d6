"""Parcel lockers: the data of the state machine — commands, compartments, boards, views, config.

See `gateway/processors/lockers.py` for the design note and the records it writes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.records import RecordDraft

NS = 1_000_000_000


class CommandKind(enum.StrEnum):
    OPEN = "open"
    DISABLE = "disable"  # out of service
    ENABLE = "enable"


class CommandStatus(enum.StrEnum):
    """The answer to `on_command`; the API maps refusals to 409 and unknown compartments to 404."""

    ACCEPTED = "accepted"
    REFUSED_PENDING = "refused_pending"  # an open of it is still unconfirmed (D10)
    REFUSED_OUT_OF_SERVICE = "refused_out_of_service"
    UNKNOWN_COMPARTMENT = "unknown_compartment"


class Load(enum.StrEnum):
    EMPTY = "empty"
    LOADED = "loaded"
    UNKNOWN = "unknown"  # no item sensor and no parcel events (yet)


@dataclass(frozen=True)
class LockerConfig:
    bank: str  # tag value
    compartments: Mapping[tuple[int, int], int]  # (board, lock) → compartment number
    door_open_alarm_s: float = 120.0
    command_window_s: float = 30.0  # an opening this soon after an open command was commanded
    confirm_timeout_s: float = 2.0  # open sent, no confirmation → unconfirmed (8A/80: reply within 1.5 s)
    offline_after_polls: int = 3
    occupancy_every_s: float = 300.0

    @classmethod
    def serial(cls, bank: str, boards: Mapping[int, int], **kw) -> LockerConfig:
        """Boards (address → lock count) in order; compartments numbered 1… across them."""
        locks = [(b, lock) for b, n in boards.items() for lock in range(1, n + 1)]
        return cls(bank, {bl: i for i, bl in enumerate(locks, start=1)}, **kw)

    @classmethod
    def mqtt(cls, bank: str, count: int, **kw) -> LockerConfig:
        return cls(bank, {(0, n): n for n in range(1, count + 1)}, **kw)


@dataclass
class Compartment:
    number: int
    in_service: bool = True
    door_open: bool | None = None
    item_present: bool | None = None
    load: Load = Load.UNKNOWN
    opened_ns: int | None = None
    left_open_raised: bool = False
    forced_raised: bool = False
    jammed_ns: int | None = None
    cmd_ns: int | None = None  # last open command not yet matched by an opening
    pending: str | None = None  # "pending" | "unconfirmed"
    pending_ns: int = 0
    pending_txn: str = ""
    loaded_ns: int | None = None
    parcel_id: str | None = None


@dataclass
class Board:
    missed: int = 0
    offline_ns: int | None = None  # set while the controller is offline


@dataclass(frozen=True)
class CommandOutcome:
    status: CommandStatus
    drafts: list[RecordDraft]

    @property
    def accepted(self) -> bool:
        return self.status is CommandStatus.ACCEPTED


@dataclass(frozen=True)
class CompartmentView:
    """What the API and the status page show for one compartment."""

    compartment: int
    in_service: bool
    door_open: bool | None
    item_present: bool | None
    load: Load
    command: str | None  # "pending" | "unconfirmed" | None
    alarms: tuple[str, ...]
