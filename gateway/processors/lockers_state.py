"""Parcel lockers: a bank's state as the small JSON document committed with its records (D1).

Times in it are on the monotonic clock of the boot that wrote it; restored in another boot they
are rebased (`rebase`), since a monotonic reading means nothing across a reboot.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import orjson

from gateway.processors.lockers_model import Board, Compartment, Load

if TYPE_CHECKING:
    from gateway.processors.lockers import LockerBank

STATE_VERSION = 1


def dump(bank: LockerBank, boot_id: str) -> bytes:
    return orjson.dumps(
        {
            "v": STATE_VERSION,
            "boot_id": boot_id,
            "comps": {f"{b}:{lock}": dataclasses.asdict(c) for (b, lock), c in bank.comps.items()},
            "boards": {str(b): dataclasses.asdict(s) for b, s in bank.boards.items()},
            "seen": list(bank.seen),
            "occupancy_ns": bank.occupancy_ns,
            "last_occupancy": bank.last_occupancy,
        }
    )


def load_into(bank: LockerBank, data: bytes, *, boot_id: str, now_ns: int) -> None:
    """Fill a fresh bank from committed state; compartments and boards no longer in config are
    dropped, new ones start unknown; a document of another version is ignored (fresh start)."""
    doc = orjson.loads(data)
    if doc.get("v") != STATE_VERSION:
        return
    for key, saved in doc["comps"].items():
        board, lock = (int(x) for x in key.split(":"))
        if (board, lock) in bank.comps:
            saved = dict(saved, number=bank.comps[(board, lock)].number, load=Load(saved["load"]))
            bank.comps[(board, lock)] = Compartment(**saved)
    for key, saved in doc["boards"].items():
        if int(key) in bank.boards:
            bank.boards[int(key)] = Board(**saved)
    bank.seen.extend(doc["seen"])
    bank.occupancy_ns = doc["occupancy_ns"]
    bank.last_occupancy = tuple(doc["last_occupancy"]) if doc["last_occupancy"] is not None else None
    if doc.get("boot_id") != boot_id:
        rebase(bank, now_ns)


def rebase(bank: LockerBank, now: int) -> None:
    """After a reboot the saved monotonic times mean nothing: timers restart from `now` (an open
    door's left-open timer too), a command window is over, a pending open becomes unconfirmed (its
    outcome is unknown: D10 keeps refusing a second open until a status shows the door), and a
    parcel's dwell is lost."""
    for c in bank.comps.values():
        c.opened_ns = now if c.door_open else None
        c.cmd_ns, c.loaded_ns = None, None
        c.jammed_ns = now if c.jammed_ns is not None else None
        if c.pending is not None:
            c.pending, c.pending_ns = "unconfirmed", now
    for b in bank.boards.values():
        b.offline_ns = now if b.offline_ns is not None else None
    bank.occupancy_ns = None
