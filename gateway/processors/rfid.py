"""RFID reads → `rfid_presence` records: pseudonymise personal IDs first (D13), then presence (D9).

`rfid_presence` point: tags district, street, gateway, site, reader, antenna, gtin (SGTIN-96 only);
fields `event` (arrive | depart | summary), `epc` (item tags) or `card` + `pseudonym_period`
(125 kHz cards, as pseudonyms), `serial`, `reads`, `peak_rssi_dbm`, `dwell_s`, `first_seen_ns`.
EPCs, serials and pseudonyms are fields: unbounded values never become tags.

The tracker runs on monotonic time; a change becomes wall time through the arrival's offset when
the clock is trusted, else it waits for the clock like any receive-time record (D8).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from devices.events import TagKind, TagRead
from gateway.privacy import Pseudonymiser
from gateway.processors.presence import PresenceChange, PresenceSettings, PresenceTracker
from gateway.records import RecordDraft

STATE_KEY = "rfid/presence"


@dataclass(frozen=True, slots=True)
class TagMeta:
    """What a record needs to know about a tag beyond the tracker's key."""

    kind: TagKind
    gtin14: str | None
    serial: str | None
    period: str | None  # the pseudonym's key period, for cards


class RfidStage:
    def __init__(self, settings: PresenceSettings, pseudonymiser: Pseudonymiser | None) -> None:
        self.tracker = PresenceTracker(settings)
        self.pseudonymiser = pseudonymiser
        self.meta: dict[str, TagMeta] = {}
        self.reader_tags: dict[str, dict[str, str]] = {}  # reader key → base tags of its device
        self.dirty = False
        self.reads_pending = False

    def tag_key(self, read: TagRead, wall_ns: int | None) -> tuple[str, str | None]:
        """The tracker's key for a tag: the EPC, or the card's pseudonym (the clear ID stops here)."""
        if read.is_personal:
            if self.pseudonymiser is None:
                raise LookupError("a personal identifier arrived but no pseudonym key file is configured")
            pseudo, period = self.pseudonymiser.apply(read.tag_hex, wall_ns)
            return f"card:{pseudo}", period
        return read.tag_hex, None

    def on_read(
        self, device_id: str, base_tags: dict[str, str], read: TagRead, mono_ns: int, wall_ns: int | None
    ) -> list[PresenceChange]:
        key, period = self.tag_key(read, wall_ns)
        reader = f"{device_id}/{read.reader}" if read.reader else device_id
        if reader not in self.reader_tags:
            self.reader_tags[reader] = {**base_tags, "reader": reader}
        if key not in self.meta:
            self.meta[key] = TagMeta(read.tag_kind, read.gtin14, read.serial, period)
        if read.rssi_dbm is not None:
            rssi, scale = read.rssi_dbm, "dbm"
        else:  # a raw strength of unknown unit (UHFReader288) still orders reads of such readers
            rssi, scale = (float(read.rssi_raw) if read.rssi_raw is not None else None), "raw"
        changes = self.tracker.on_read(key, reader, read.antenna, rssi, read.read_count, mono_ns, scale)
        if changes:
            self.dirty = True  # committed with the records it produced
        else:
            # only last-seen times and read counts moved: snapshotting every present tag on every
            # read made the state cost O(tags) per read; the next tick (≤ 1 s) commits them instead
            self.reads_pending = True
        return changes

    def tick(self, mono_ns: int) -> list[PresenceChange]:
        changes = self.tracker.tick(mono_ns)
        if changes or self.reads_pending:
            self.dirty = True
            self.reads_pending = False
        return changes

    def draft(self, change: PresenceChange) -> RecordDraft:
        meta = self.meta.get(change.tag)
        tags = dict(self.reader_tags.get(change.reader, {"reader": change.reader}))
        tags["antenna"] = str(change.antenna)
        fields: dict = {"event": change.kind, "reads": change.reads, "dwell_s": round(change.dwell_s, 3)}
        if change.tag.startswith("card:"):
            fields["card"] = change.tag[5:]
            if meta and meta.period:
                fields["pseudonym_period"] = meta.period
        else:
            fields["epc"] = change.tag
        if meta and meta.gtin14:
            tags["gtin"] = meta.gtin14
        if meta and meta.serial:
            fields["serial"] = meta.serial
        if change.peak_rssi is not None:
            fields["peak_rssi_dbm" if change.scale == "dbm" else "peak_rssi_raw"] = float(change.peak_rssi)
        if change.kind == "depart" and change.tag not in self.tracker.tags:
            self.meta.pop(change.tag, None)
        return RecordDraft("rfid_presence", tags, fields, identity=None)

    def snapshot(self, boot_id: str) -> bytes:
        meta = {k: [m.kind.value, m.gtin14, m.serial, m.period] for k, m in self.meta.items()}
        return orjson.dumps(
            {"boot": boot_id, "tracker": self.tracker.snapshot().decode(), "meta": meta, "readers": self.reader_tags}
        )

    def restore(self, data: bytes, boot_id: str) -> None:
        """Presence survives a restart of the gateway. Across a reboot the monotonic times of the
        old boot mean nothing: the state is dropped and tags still there arrive again."""
        doc = orjson.loads(data)
        if doc.get("boot") != boot_id:
            return
        self.tracker.restore(doc["tracker"].encode())
        self.meta = {k: TagMeta(TagKind(v[0]), v[1], v[2], v[3]) for k, v in doc["meta"].items()}
        self.reader_tags = doc["readers"]
