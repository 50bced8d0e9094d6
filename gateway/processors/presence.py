"""RFID presence (decisions.md D9): raw reads → arrive / move / depart transitions and periodic
dwell summaries, never one point per raw read.

A tag is at one place at a time: (reader, antenna). It *arrives* on its first read; it *moves* when
another antenna or reader reads it at an RSSI at least `move_margin_db` above the last RSSI seen
where it is (readers without RSSI never move a tag: arrive / depart only). Strength comes on one of
two scales: dBm, or a reader's raw value of unknown unit (Chafon UHFReader288, device-protocols
§2.2: taken as "higher is stronger", with its own margin `move_margin_raw`); values of different
scales are never compared, so a tag does not move between such readers. It *departs* after
`depart_after_s` unseen. While present, a summary every `summary_interval_s` carries read count,
peak RSSI and dwell so far. Pure: time comes in as `now_ns`; the state serialises to bytes and is
committed with the records it produced (D1).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class PresenceSettings:
    depart_after_s: float = 10.0
    summary_interval_s: float = 60.0
    move_margin_db: float = 6.0
    move_margin_raw: float = 10.0  # in the raw reader's own units


@dataclass(slots=True)
class Sighting:
    reader: str
    antenna: int
    first_ns: int
    last_ns: int
    reads: int
    peak_rssi: float | None
    last_rssi: float | None
    summary_ns: int  # when the last summary (or the arrival) was emitted
    scale: str = "dbm"  # of peak_rssi / last_rssi: "dbm" or "raw"


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """One presence record to write: `kind` is arrive | depart | summary."""

    kind: str
    tag: str  # EPC hex, or the card pseudonym — never a clear card number
    reader: str
    antenna: int
    at_ns: int
    first_ns: int
    reads: int
    peak_rssi: float | None
    dwell_s: float
    scale: str = "dbm"  # of peak_rssi


class PresenceTracker:
    def __init__(self, settings: PresenceSettings) -> None:
        self.settings = settings
        self.tags: dict[str, Sighting] = {}
        self.depart_ns = int(settings.depart_after_s * NS)
        self.summary_ns = int(settings.summary_interval_s * NS)

    def _change(self, kind: str, tag: str, s: Sighting, at_ns: int) -> PresenceChange:
        return PresenceChange(
            kind, tag, s.reader, s.antenna, at_ns, s.first_ns, s.reads, s.peak_rssi, (at_ns - s.first_ns) / NS, s.scale
        )

    def on_read(
        self, tag: str, reader: str, antenna: int, rssi: float | None, count: int, now_ns: int, scale: str = "dbm"
    ) -> list[PresenceChange]:
        s = self.tags.get(tag)
        if s is None:
            s = Sighting(reader, antenna, now_ns, now_ns, count, rssi, rssi, now_ns, scale)
            self.tags[tag] = s
            return [self._change("arrive", tag, s, now_ns)]
        out: list[PresenceChange] = []
        if (s.reader, s.antenna) != (reader, antenna):
            margin = self.settings.move_margin_db if scale == "dbm" else self.settings.move_margin_raw
            stronger = (
                rssi is not None and s.last_rssi is not None and scale == s.scale and rssi >= s.last_rssi + margin
            )
            if not stronger:
                return out  # a weaker read elsewhere (or one on another scale): the tag stays
            out.append(self._change("depart", tag, s, now_ns))
            s = Sighting(reader, antenna, now_ns, now_ns, count, rssi, rssi, now_ns, scale)
            self.tags[tag] = s
            out.append(self._change("arrive", tag, s, now_ns))
            return out
        s.last_ns = now_ns
        s.reads += count
        if rssi is not None:
            s.last_rssi = rssi
            s.peak_rssi = rssi if s.peak_rssi is None else max(s.peak_rssi, rssi)
        return out

    def tick(self, now_ns: int) -> list[PresenceChange]:
        """Departures of tags unseen for `depart_after_s`, and summaries that are due."""
        out: list[PresenceChange] = []
        for tag in list(self.tags):
            s = self.tags[tag]
            if now_ns - s.last_ns >= self.depart_ns:
                out.append(self._change("depart", tag, s, s.last_ns + self.depart_ns))
                del self.tags[tag]
            elif now_ns - s.summary_ns >= self.summary_ns:
                s.summary_ns = now_ns
                out.append(self._change("summary", tag, s, now_ns))
        return out

    def present_at(self, reader: str) -> list[str]:
        return sorted(t for t, s in self.tags.items() if s.reader == reader)

    def snapshot(self) -> bytes:
        return orjson.dumps(
            {
                tag: [
                    s.reader,
                    s.antenna,
                    s.first_ns,
                    s.last_ns,
                    s.reads,
                    s.peak_rssi,
                    s.last_rssi,
                    s.summary_ns,
                    s.scale,
                ]
                for tag, s in self.tags.items()
            }
        )

    def restore(self, data: bytes) -> None:
        self.tags = {tag: Sighting(*values) for tag, values in orjson.loads(data).items()}
