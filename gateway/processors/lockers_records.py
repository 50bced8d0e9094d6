"""Parcel lockers: how the state machine's transitions become records (tags, fields, classes).

The measurements and their tag and field names are listed in `gateway/processors/lockers.py`.
"""

from __future__ import annotations

import re

from gateway.log.schema import RecordClass
from gateway.processors.lockers_model import NS, Compartment, LockerConfig
from gateway.records import FieldValue, RecordDraft

_PSEUDONYM = re.compile(r"[0-9a-f]{32}")


class LockerRecords:
    """Mixin of `LockerBank`: drafts go to `self._out`, stamped with `self._now` (monotonic)."""

    config: LockerConfig
    base_tags: dict[str, str]
    _out: list[RecordDraft]
    _now: int

    def _tags(self, c: Compartment | None = None, **extra: str) -> dict[str, str]:
        tags = dict(self.base_tags)
        tags["bank"] = self.config.bank
        if c is not None:
            tags["compartment"] = str(c.number)
        tags.update(extra)
        return tags

    def _emit(
        self, measurement: str, c: Compartment | None, klass: RecordClass, tags: dict | None = None, **fields
    ) -> None:
        clean: dict[str, FieldValue] = {k: v for k, v in fields.items() if v is not None}
        draft = RecordDraft(measurement, tags or self._tags(c), clean, identity=None, mono_ns=self._now, klass=klass)
        self._out.append(draft)

    def _alarm(self, c: Compartment, alarm: str, is_active: bool, duration_ns: int, *, detail: str) -> None:
        self._emit(
            "locker_alarm",
            c,
            RecordClass.ALARM,
            self._tags(c, alarm=alarm),
            is_active=is_active,
            duration_s=max(0, duration_ns) // NS,
            detail=detail,
        )

    def _controller(self, board: int, *, is_online: bool, missed_polls: int, outage_s: int) -> None:
        self._emit(
            "locker_controller",
            None,
            RecordClass.ALARM,
            self._tags(board=str(board)),
            is_online=is_online,
            missed_polls=missed_polls,
            outage_s=max(0, outage_s),
        )

    def _command(self, c: Compartment, action: str, outcome: str, **fields: FieldValue | None) -> None:
        fields = {k: v for k, v in fields.items() if v not in (None, "")}
        self._emit("locker_command", c, RecordClass.COMMAND, action=action, outcome=outcome, **fields)

    def _audit(self, c: Compartment, action: str, actor: str, *, detail: str) -> None:
        self._emit("locker_audit", c, RecordClass.AUDIT, action=action, actor=actor, detail=detail or None)

    def _parcel(
        self,
        c: Compartment,
        action: str,
        source: str,
        parcel_id: str | None,
        now: int,
        *,
        recipient: str | None = None,
        dwell_ns: int | None = None,
    ) -> None:
        ref = recipient if recipient is not None and _PSEUDONYM.fullmatch(recipient) else None
        self._emit(
            "locker_parcel",
            c,
            RecordClass.AUDIT,
            action=action,
            source=source,
            parcel_id=parcel_id,
            recipient_ref=ref,
            dwell_s=None if dwell_ns is None else max(0, dwell_ns) // NS,
        )

    def _occupancy_point(self, counts: dict[str, int]) -> None:
        self._emit("locker_occupancy", None, RecordClass.TELEMETRY, **counts)
