"""codec → processors → stamped, encoded records for one source's batch (decisions.md D1, D8).

Everything here is plain data in, data out: the transport hands in payloads with the clock reading
of their arrival; what comes out is an `AppendBatch` for the log. Rejects become dead letters and
per-device counts; they never stop the batch.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

from devices.events import CounterInterval, CounterPeriod, CounterTotals, Reject, RejectedTail, RejectReason, TagRead
from devices.registry import lookup
from gateway.config import DeviceConfig, GatewayConfig
from gateway.log.store import AppendBatch, DeadLetter, NewRecord
from gateway.privacy import Pseudonymiser
from gateway.privacy_step import strip_personal
from gateway.processors import footfall
from gateway.processors.counters import CounterProcessor, footfall_draft, gauge_draft
from gateway.processors.locker_stage import STATE_KEY as LOCKERS_STATE_KEY
from gateway.processors.locker_stage import LockerStage, request_board
from gateway.processors.presence import PresenceSettings
from gateway.processors.rfid import STATE_KEY as RFID_STATE_KEY
from gateway.processors.rfid import RfidStage
from gateway.records import RecordDraft
from gateway.sinks.lineproto import LineProtocolError, encode_head

COUNTERS_STATE_KEY = "counters"
RECEIVE_SPACING_NS = 1_000  # between payloads of one chunk; room for 1,000 records per payload


@dataclass
class DeviceStats:
    messages: int = 0
    events: int = 0
    records: int = 0
    rejects: Counter = field(default_factory=Counter)  # reason → count
    last_seen_wall_ns: int = 0


@dataclass(frozen=True, slots=True)
class Arrival:
    """When a batch arrived: wall and monotonic time, and whether wall time may be used (D8)."""

    wall_ns: int
    mono_ns: int
    boot_id: str
    wall_trusted: bool


class TopicRouter:
    """MQTT topic → the device configured on it (exact topics first, then filters in config order)."""

    def __init__(self, devices: list[DeviceConfig]) -> None:
        self.exact: dict[str, DeviceConfig] = {}
        self.filters: list[tuple[list[str], DeviceConfig]] = []
        for d in devices:
            if d.transport != "mqtt" or not d.topic:
                continue
            if "+" in d.topic or "#" in d.topic:
                self.filters.append((d.topic.split("/"), d))
            else:
                self.exact[d.topic] = d

    def subscriptions(self) -> list[str]:
        return [*self.exact, *("/".join(f) for f, _ in self.filters)]

    def route(self, topic: str) -> DeviceConfig | None:
        found = self.exact.get(topic)
        if found is not None or not self.filters:
            return found
        levels = topic.split("/")
        for pattern, device in self.filters:
            if _matches(pattern, levels):
                return device
        return None


def _site_of_line(draft: RecordDraft, line_sites: dict[str, str]) -> RecordDraft:
    site = line_sites.get(draft.tags.get("line", "")) if draft.measurement == "footfall" else None
    return replace(draft, tags={**draft.tags, "site": site}) if site else draft


def _matches(pattern: list[str], levels: list[str]) -> bool:
    for i, p in enumerate(pattern):
        if p == "#":
            return True
        if i >= len(levels) or (p != "+" and p != levels[i]):
            return False
    return len(pattern) == len(levels)


class Pipeline:
    def __init__(self, config: GatewayConfig) -> None:
        g = config.gateway
        self.router = TopicRouter(config.devices)
        self.base_tags: dict[str, dict[str, str]] = {}
        self.stats: dict[str, DeviceStats] = {}
        for d in config.devices:
            tags = {"district": g.district, "street": g.street, "gateway": g.id, "device": d.id}
            if d.site:
                tags["site"] = d.site
            self.base_tags[d.id] = tags
            self.stats[d.id] = DeviceStats()
        # per-line sites (`[[devices]] lines`): a counter watching two shop doors feeds two sites
        self.line_sites: dict[str, dict[str, str]] = {d.id: dict(d.lines) for d in config.devices if d.lines}
        self.unrouted = 0
        self.unencodable = 0
        self.counters = CounterProcessor()
        self.committed_counters = b""  # the counter state as last committed (empty: fresh)
        r = config.rfid
        self.pseudonymiser = Pseudonymiser(config.privacy.key_file) if config.privacy.key_file else None
        self.rfid = RfidStage(
            PresenceSettings(r.depart_after_s, r.summary_interval_s, r.move_margin_db, r.move_margin_raw),
            self.pseudonymiser,
        )
        self.lockers = LockerStage(config, self.base_tags, self.pseudonymiser)
        # lock boards: the feedback polarity of the bank's wiring (device-protocols §5.1)
        self.decode_options: dict[str, dict] = {
            d: {"feedback": s.feedback} for d, s in self.lockers.specs.items() if s.transport == "serial"
        }
        for d in config.devices:  # the model's per-device decode settings (a Modbus register map)
            if kwargs := d.decode_kwargs():
                self.decode_options.setdefault(d.id, {}).update(kwargs)

    def drafts(self, device: DeviceConfig, events: list, arrival: Arrival, position: int) -> list[RecordDraft]:
        tags = self.base_tags[device.id]
        if self.lockers.owns(device.id):
            mono = arrival.mono_ns + position * RECEIVE_SPACING_NS
            return self.lockers.on_events(device.id, events, mono, arrival.wall_ns if arrival.wall_trusted else None)
        out = []
        if any(isinstance(ev, (CounterTotals, CounterPeriod)) for ev in events):
            # cumulative and per-period styles: one payload at a time through the counter state (§4.8)
            counter_events = [ev for ev in events if isinstance(ev, (CounterTotals, CounterPeriod))]
            for delta in self.counters.process(
                device.id, counter_events, received_ns=arrival.wall_ns, device_time_trusted=device.device_time_trusted
            ):
                out.append(footfall_draft(tags, delta))
        for ev in events:
            if isinstance(ev, CounterInterval):
                out.append(footfall.interval_draft(tags, device.id, ev))
            elif (gauge := gauge_draft(tags, device.id, ev)) is not None:
                out.append(gauge)
            elif isinstance(ev, TagRead):
                mono = arrival.mono_ns + position * RECEIVE_SPACING_NS
                wall = arrival.wall_ns if arrival.wall_trusted else None
                for change in self.rfid.on_read(device.id, tags, ev, mono, wall):
                    d = self.rfid.draft(change)
                    out.append(replace(d, mono_ns=change.at_ns))
        if device.id in self.line_sites:
            out = [_site_of_line(d, self.line_sites[device.id]) for d in out]
        return out

    def rfid_tick(self, arrival: Arrival) -> AppendBatch | None:
        """Departures and dwell summaries that are due (called every second by the runtime)."""
        changes = self.rfid.tick(arrival.mono_ns)
        if not changes and not self.rfid.dirty:
            return None
        batch = AppendBatch(boot_id=arrival.boot_id, pausable=False)
        for index, change in enumerate(changes):
            draft = replace(self.rfid.draft(change), mono_ns=change.at_ns)
            self._append_draft(batch, None, draft, arrival, 0, index, b"")
        self._add_state(batch, arrival)
        return batch

    def locker_tick(self, arrival: Arrival) -> AppendBatch | None:
        """Locker timers (door left open, open unconfirmed, periodic occupancy; called every second)."""
        if not self.lockers.banks:
            return None
        return self.locker_batch(self.lockers.tick(arrival.mono_ns), arrival)

    def poll_timeout(self, device: DeviceConfig, arrival: Arrival, request: bytes | None = None) -> AppendBatch | None:
        """A polled board did not answer (the serial poll loop's call). `request`, where given, is the
        poll that went unanswered: it names the board; without it every board of the bus counts a miss.
        None for devices that are not locker banks."""
        if not self.lockers.owns(device.id):
            return None
        board = request_board(self.lockers.specs[device.id].family, request)
        return self.locker_batch(self.lockers.poll_timeout(device.id, board, arrival.mono_ns), arrival)

    def locker_batch(self, drafts: list[RecordDraft], arrival: Arrival, *, always: bool = False) -> AppendBatch | None:
        """Locker drafts made outside a payload (timers, commands, audit) with the stage's state."""
        batch = AppendBatch(boot_id=arrival.boot_id, pausable=False)
        for index, draft in enumerate(drafts):
            self._append_draft(batch, None, draft, arrival, 0, index, b"")
        self._add_state(batch, arrival)
        return batch if batch.records or batch.state or always else None

    def _add_state(self, batch: AppendBatch, arrival: Arrival) -> None:
        if self.counters.dirty:
            batch.state[COUNTERS_STATE_KEY] = self.counters.to_bytes()
        if self.rfid.dirty:
            batch.state[RFID_STATE_KEY] = self.rfid.snapshot(arrival.boot_id)
            self.rfid.dirty = False
        if self.lockers.dirty and (lockers := self.lockers.snapshot(arrival.boot_id)) is not None:
            batch.state[LOCKERS_STATE_KEY] = lockers

    def counters_committed(self, batch: AppendBatch) -> None:
        """`batch` is durable: its counter state is the one to fall back on."""
        if COUNTERS_STATE_KEY in batch.state:
            self.committed_counters = batch.state[COUNTERS_STATE_KEY]

    def roll_back_counters(self) -> None:
        """An MQTT batch failed to commit: its messages stay unacknowledged and come again, so the
        counter state must forget them — else the redelivered reports would look like duplicates
        (or their totals like no change) and their crossings would be lost."""
        self.counters.restore(self.committed_counters)

    def restore_state(self, state: dict[str, bytes], boot_id: str, mono_ns: int = 0) -> None:
        """Processor state as committed in the log (D1): the gateway picks up where it stopped.
        `mono_ns`: now on this boot's monotonic clock (timers of another boot's state restart from it)."""
        if COUNTERS_STATE_KEY in state:
            self.counters.restore(state[COUNTERS_STATE_KEY])
            self.committed_counters = state[COUNTERS_STATE_KEY]
        if RFID_STATE_KEY in state:
            self.rfid.restore(state[RFID_STATE_KEY], boot_id)
        if LOCKERS_STATE_KEY in state:
            self.lockers.restore(state[LOCKERS_STATE_KEY], boot_id, mono_ns)

    def _append_draft(
        self,
        batch: AppendBatch,
        device: DeviceConfig | None,
        draft: RecordDraft,
        arrival: Arrival,
        position: int,
        index: int,
        payload: bytes,
    ) -> bool:
        origin = f"device:{device.id}" if device else "gateway"
        try:
            head = encode_head(draft.measurement, draft.tags, draft.fields)
        except LineProtocolError as exc:
            self.unencodable += 1
            if device is not None:
                self.stats[device.id].rejects["unencodable"] += 1
            raw = self._raw_for_log(device, payload) if device else b""
            batch.dead_letters.append(DeadLetter(origin, "unencodable", str(exc), raw))
            return False
        rec = NewRecord(draft.measurement, head, None, draft.identity, draft.klass)
        if draft.device_ts_ns is not None and device is not None and device.device_time_trusted:
            rec.ts_ns = draft.device_ts_ns
        elif draft.mono_ns is not None:
            # a state machine's time (monotonic): + index keeps points of one series distinct (D8)
            if arrival.wall_trusted:
                rec.ts_ns = draft.mono_ns + (arrival.wall_ns - arrival.mono_ns) + index
            else:
                rec.mono_ns = draft.mono_ns + index
        elif arrival.wall_trusted:
            # D8: unique within the series: the record's index within its message
            rec.ts_ns = arrival.wall_ns + position * RECEIVE_SPACING_NS + index
        else:
            rec.mono_ns = arrival.mono_ns + position * RECEIVE_SPACING_NS + index
        batch.records.append(rec)
        return True

    def decode_into(
        self, batch: AppendBatch, device: DeviceConfig, payload: bytes, arrival: Arrival, position: int = 0
    ) -> None:
        """Decode one payload of `device` and add its records (or its dead letter) to `batch`.

        `position` is the payload's place in its chunk: payloads of one chunk share one clock
        reading, so receive times are spread by it (1 µs apart) to keep points of one series
        distinct."""
        st = self.stats[device.id]
        st.messages += 1
        st.last_seen_wall_ns = arrival.wall_ns
        options = self.decode_options.get(device.id, {})
        result = lookup(device.model).decode(payload, received_ns=arrival.wall_ns, **options)
        if isinstance(result, Reject):
            st.rejects[result.reason.value] += 1
            batch.dead_letters.append(
                DeadLetter(
                    f"device:{device.id}",
                    result.reason.value,
                    result.detail,
                    self._raw_for_log(device, result.raw or payload),
                )
            )
            return
        tail = [ev for ev in result if isinstance(ev, RejectedTail)]
        if tail:  # the events before an undecodable item are kept; the payload is dead-lettered once
            result = [ev for ev in result if not isinstance(ev, RejectedTail)]
            st.rejects[tail[0].reason.value] += 1
            batch.dead_letters.append(
                DeadLetter(
                    f"device:{device.id}", tail[0].reason.value, tail[0].detail, self._raw_for_log(device, payload)
                )
            )
        st.events += len(result)
        try:
            # D13: personal fields are dropped or pseudonymised before anything else sees the events
            result = strip_personal(result, self.pseudonymiser, arrival.wall_ns if arrival.wall_trusted else None)
            drafts = self.drafts(device, result, arrival, position)
        except LookupError as exc:  # e.g. a personal ID with no pseudonym key: never stored clear
            st.rejects["no_pseudonym_key"] += 1
            batch.dead_letters.append(
                DeadLetter(f"device:{device.id}", "no_pseudonym_key", str(exc), self._raw_for_log(device, payload))
            )
            return
        for index, draft in enumerate(drafts):
            if self._append_draft(batch, device, draft, arrival, position, index, payload):
                st.records += 1

    def serial_batch(self, device: DeviceConfig, items: list, arrival: Arrival) -> AppendBatch:
        """Frames and framer rejects of one read from a serial port → one unpausable append."""
        batch = AppendBatch(boot_id=arrival.boot_id, pausable=False)
        st = self.stats[device.id]
        for position, item in enumerate(items):
            if isinstance(item, Reject):
                st.rejects[item.reason.value] += 1
                batch.dead_letters.append(
                    DeadLetter(
                        f"device:{device.id}", item.reason.value, item.detail, self._raw_for_log(device, item.raw)
                    )
                )
            else:
                self.decode_into(batch, device, item, arrival, position)
        self._add_state(batch, arrival)  # once per batch: the state as of its last payload
        return batch

    @staticmethod
    def _raw_for_log(device: DeviceConfig | None, raw: bytes) -> bytes:
        """Dead letters keep raw bytes for inspection, except where they may hold a personal
        identifier (D1, D13): then only their length."""
        if device is None or lookup(device.model).personal_raw:
            return f"<{len(raw)} bytes masked: may hold a personal identifier>".encode()
        return raw

    def push_batch(self, device: DeviceConfig, payload: bytes, arrival: Arrival) -> AppendBatch:
        """One document a device pushed over HTTP → one append (committed before the 2xx answer)."""
        batch = AppendBatch(boot_id=arrival.boot_id, pausable=True)
        self.decode_into(batch, device, payload, arrival)
        self._add_state(batch, arrival)
        return batch

    def mqtt_batch(self, messages: list, arrival: Arrival) -> AppendBatch:
        """All PUBLISHes of one received chunk → one append (committed before any PUBACK)."""
        batch = AppendBatch(boot_id=arrival.boot_id, pausable=True)
        route = self.router.route
        for position, msg in enumerate(messages):
            device = route(msg.topic)
            if device is None:
                self.unrouted += 1
                batch.dead_letters.append(
                    DeadLetter("mqtt", RejectReason.UNSUPPORTED.value, f"no device on topic {msg.topic[:200]}", b"")
                )
                continue
            self.decode_into(batch, device, msg.payload, arrival, position)
        self._add_state(batch, arrival)  # once per batch: the state as of its last payload
        return batch
