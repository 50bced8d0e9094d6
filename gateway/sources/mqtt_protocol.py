"""The wire side of the gateway's MQTT 5 connection: an asyncio.Protocol over the sans-I/O `mqtt5`
codec (decisions.md D3). The session around it (connect, subscribe, publish, reconnect) is
`mqtt_client.py`.

Design
- `MqttProtocol` is one TCP/TLS connection. `data_received` parses every whole packet of the chunk
  with `mqtt5.read` and hands all its PUBLISHes (QoS 0 and 1, in order) to `on_batch` in one call.
  The caller commits them and then calls `MqttClient.ack(token)`, which writes all their PUBACKs
  in one `transport.write`. Nothing is acknowledged before that (D1): after a crash the broker
  re-sends what we had not acknowledged, with DUP set.
- Mosquitto 2.0.11 faults we must survive (D4): it exceeds our Receive Maximum once messages queue,
  and it reuses packet ids we have not acknowledged yet. Hence a count per inbound packet id (the
  PUBACK goes out only when every delivery holding that id has been acked, so the broker never
  gets an ack for a message we have not committed) and a client-side bound (`pause_reading` while
  `receive_max` QoS 1 messages are unacknowledged).
- `mqtt5` 0.8.0 enforces no size limit, panics (a BaseException) on a topic that is not UTF-8 and
  accepts packet id 0 and wildcard topics: we bound the size from the fixed header before reading
  and only read whole packets, catch the panic at the read, and reject the rest ourselves. Each of
  these is counted and drops the connection (the broker is broken; the messages come back).
- The bounds apply from the CONNACK on, within its very chunk, and nothing waits for the SUBACK:
  it queues behind everything the broker had queued for us, so waiting for it would either stall
  a reconnect with a backlog or read the whole backlog into memory.
- While we do not read, EOF is invisible to the transport: the keepalive tick polls the socket
  for the broker's FIN/RST instead, so a broker restart during a pause is still noticed.
- `disconnect` lets the broker close first (why: its docstring).
- The protocol reads its client's options, pause state and callbacks; it is made only by
  `MqttClient.new_protocol`, so this module needs the client type for annotations only.
- Every method must be called from the event loop's thread (the log's writer thread hands its
  acks back with `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import select
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mqtt5

if TYPE_CHECKING:
    from gateway.sources.mqtt_client import MqttClient

_PUBLISH = 3
_PINGREQ = mqtt5.PingReqPacket().write()
_DISCONNECT_NORMAL = mqtt5.DisconnectPacket().write()
# A PUBACK without reason code is 0x40 0x02 <id:16> (MQTT 5 §3.4.2.1): one big-endian uint32
# per id, so all PUBACKs of a batch are one struct.pack (≈1 µs/message cheaper than PubAckPacket).
_PUBACK_BASE = 0x40020000
# Exceptions a failing `mqtt5.read` must let through; any other BaseException out of the codec is
# the Rust panic (`pyo3_runtime.PanicException`, not importable by name) and counts as malformed.
_NOT_CODEC_ERRORS = (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError)
_R = mqtt5.DisconnectReasonCode


@dataclass(slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    packet_id: int | None
    dup: bool
    retain: bool


class AckToken:
    """Opaque: the QoS 1 packet ids of one delivered batch and the connection they came on."""

    __slots__ = ("_generation", "_packet_ids", "_pending")

    def __init__(self, generation: int, packet_ids: list[int]) -> None:
        self._generation = generation
        self._packet_ids = packet_ids
        self._pending = True

    def __len__(self) -> int:
        return len(self._packet_ids)


class MqttStats:
    """Counters and gauges for the metrics layer: plain ints.

    messages_received, redeliveries (DUP set: Mosquitto 2.0.11 sets it on messages it queued
    while we were away too), protocol_violations (a reused unacked packet id, packet id 0,
    wildcard topic, QoS 2, an unexpected packet), malformed_packets, oversized_packets,
    connects, reconnects, connect_failures, acks_sent (PUBACKs written), stale_acks (tokens of
    an earlier connection), quota_pauses (reads paused at receive_max), paused (gauge: 1 while
    the socket is not read), published (our publishes, QoS 1 once acked with success),
    publish_rejected (QoS 1 PUBACKs with an error reason), subscribe_failures.
    """

    __slots__ = (
        "acks_sent",
        "connect_failures",
        "connects",
        "malformed_packets",
        "messages_received",
        "oversized_packets",
        "paused",
        "protocol_violations",
        "publish_rejected",
        "published",
        "quota_pauses",
        "reconnects",
        "redeliveries",
        "stale_acks",
        "subscribe_failures",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


def _remaining_length(data: bytes | bytearray, i: int, end: int) -> tuple[int, int]:
    """The multi-byte Remaining Length at data[i:] (MQTT 5 §1.5.5): (value, index after it),
    (0, -1) when more bytes are needed; ValueError past 4 bytes."""
    value = 0
    for shift in (0, 7, 14, 21):
        if i >= end:
            return 0, -1
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
    raise ValueError("remaining length longer than 4 bytes")


_HANGUP = getattr(select, "POLLRDHUP", 0) | getattr(select, "POLLHUP", 0) | getattr(select, "POLLERR", 0)


def _peer_closed(transport: asyncio.BaseTransport | None) -> bool:
    """Whether the peer has closed the TCP connection (FIN or RST), even with unread data
    before it: a zero-timeout poll for POLLRDHUP (Linux) on the socket."""
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(sock.fileno(), _HANGUP)
    return bool(poller.poll(0))


class MqttProtocol(asyncio.Protocol):
    """One connection of an `MqttClient` (made by `MqttClient.new_protocol`)."""

    def __init__(self, client: MqttClient, generation: int) -> None:
        self._client = client
        self._on_batch = client._on_batch
        self._stats = client.stats
        self._loop = asyncio.get_running_loop()
        self.generation = generation
        self._max_bytes = client.options.max_packet_bytes
        self._receive_max = client.options.receive_max
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._need = 0
        self._held: dict[int, int] = {}  # inbound packet id → deliveries not yet acked
        self.unacked = 0  # QoS 1 deliveries not yet acked
        self._reading_paused = False
        self._reuse_logged = False
        self.can_publish = False  # CONNACK done and our unanswered publishes re-sent
        self.is_ready = False  # CONNACK accepted: the Receive Maximum and pause() apply
        self.closing = False
        self._lost_reason = ""
        self.closed: asyncio.Future[str] = self._loop.create_future()  # result: why
        self.connack: asyncio.Future[mqtt5.ConnAckPacket] = self._loop.create_future()
        self.suback_pid: int | None = None
        self._drained: asyncio.Future[None] | None = None
        self._last_rx = self._last_tx = self._loop.time()
        self._keepalive_s = 0
        self._tick_s = 1.0
        self._keepalive_timer: asyncio.TimerHandle | None = None
        self._abort_timer: asyncio.TimerHandle | None = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closing:
            self.closing = True
            self._lost_reason = f"{type(exc).__name__}: {exc}" if exc else "closed by the broker"
        for timer in (self._keepalive_timer, self._abort_timer):
            if timer is not None:
                timer.cancel()
        self.is_ready = False
        if self._reading_paused:
            self._reading_paused = False
            self._stats.paused = 0
        if not self.closed.done():
            self.closed.set_result(self._lost_reason)
        self._client._connection_lost(self)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._last_rx = self._loop.time()
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = buf  # type: ignore[assignment]
        end = len(data)
        pos = 0
        need = 0
        msgs: list[InboundMessage] = []
        pids: list[int] = []
        held = self._held
        stats = self._stats
        read = mqtt5.read
        max_bytes = self._max_bytes
        error: tuple[str, mqtt5.DisconnectReasonCode] | None = None
        with memoryview(data) as view:
            while end - pos >= 2:
                first = data[pos]
                size = data[pos + 1]
                if size < 0x80:
                    start = pos + 2
                else:
                    try:
                        size, start = _remaining_length(data, pos + 1, end)
                    except ValueError:
                        stats.malformed_packets += 1
                        error = ("malformed remaining length", _R.MALFORMED_PACKET)
                        break
                    if start < 0:
                        break
                if size > max_bytes:
                    stats.oversized_packets += 1
                    error = (f"packet of {size} bytes > max_packet_bytes", _R.PACKET_TOO_LARGE)
                    break
                stop = start + size
                if stop > end:
                    need = stop - pos
                    break
                try:
                    packet = read(view[pos:stop])[0]
                except (ValueError, IndexError) as exc:
                    stats.malformed_packets += 1
                    error = (f"malformed packet: {exc}", _R.MALFORMED_PACKET)
                    break
                except _NOT_CODEC_ERRORS:
                    raise
                except BaseException as exc:  # mqtt5's panic, e.g. on a topic that is not UTF-8
                    stats.malformed_packets += 1
                    error = (f"malformed packet ({type(exc).__name__})", _R.MALFORMED_PACKET)
                    break
                pos = stop
                if first >> 4 != _PUBLISH:
                    self._control(packet)
                    if self.closing:
                        break
                    continue
                topic = packet.topic
                if not topic or "+" in topic or "#" in topic:
                    stats.protocol_violations += 1
                    error = ("PUBLISH with an empty or wildcard topic", _R.PROTOCOL_ERROR)
                    break
                qos = (first >> 1) & 3
                if qos == 1:
                    pid = packet.packet_id
                    if not pid:
                        stats.protocol_violations += 1
                        error = ("QoS 1 PUBLISH with packet id 0", _R.PROTOCOL_ERROR)
                        break
                    count = held.get(pid)
                    if count is None:
                        held[pid] = 1
                    else:
                        held[pid] = count + 1
                        self._count_reused_id()
                    pids.append(pid)
                elif qos:
                    stats.protocol_violations += 1
                    error = ("QoS 2 PUBLISH although we subscribed with max QoS 1", _R.PROTOCOL_ERROR)
                    break
                else:
                    pid = None
                if first & 8:
                    stats.redeliveries += 1
                msgs.append(InboundMessage(topic, packet.payload, qos, pid, first & 8 != 0, first & 1 != 0))
        if data is buf:
            del buf[:pos]
        elif pos < end:
            buf += data[pos:]
        self._need = need
        if error is not None:
            self.drop(*error)
            return
        if msgs and not self.closing:
            self.unacked += len(pids)
            stats.messages_received += len(msgs)
            try:
                self._on_batch(msgs, AckToken(self.generation, pids))
            except Exception:
                self._client._log.exception("MQTT on_batch failed; dropping the connection so the broker redelivers")
                self.drop("on_batch raised", _R.UNSPECIFIED_ERROR)
                return
            if self.unacked >= self._receive_max and not self._reading_paused:
                self.update_reading()

    # -- acknowledgements and flow control

    def ack(self, pids: list[int]) -> None:
        held = self._held
        words = []
        for pid in pids:
            count = held.pop(pid)
            if count == 1:
                words.append(_PUBACK_BASE | pid)
            else:
                held[pid] = count - 1
        if words:
            self.write(struct.pack(f">{len(words)}I", *words))
            self._stats.acks_sent += len(words)
        self.unacked -= len(pids)
        if self._reading_paused and self.unacked < self._receive_max:
            self.update_reading()
        if self.unacked == 0 and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def update_reading(self) -> None:
        """Read the socket only while under the Receive Maximum, not paused by the caller and not
        shutting down; the first two bounds apply once the CONNACK is read. Nothing waits for the
        SUBACK: it queues behind all the broker had queued for us (Mosquitto 2.0.11 ignores our
        Receive Maximum), so waiting for it would either stall a reconnect with a backlog (bound
        on) or read the whole backlog into memory (bound off)."""
        if self.closing or self.transport is None:
            return
        client = self._client
        over_quota = self.unacked >= self._receive_max
        pause = (self.is_ready and (over_quota or client._paused)) or client._stopping
        if pause and not self._reading_paused:
            if over_quota:
                self._stats.quota_pauses += 1
            self.transport.pause_reading()
        elif not pause and self._reading_paused:
            self.transport.resume_reading()
            self._last_rx = self._loop.time()  # silence while paused was ours, not the broker's
        else:
            return
        self._reading_paused = pause
        self._stats.paused = int(pause)

    async def wait_drained(self) -> None:
        """Until every delivered QoS 1 message has been acked (or the connection is gone)."""
        if self.unacked and not self.closing:
            self._drained = self._loop.create_future()
            await asyncio.wait((self._drained, self.closed), return_when=asyncio.FIRST_COMPLETED)

    def _count_reused_id(self) -> None:
        self._stats.protocol_violations += 1
        if not self._reuse_logged:
            self._reuse_logged = True
            self._client._log.warning(
                "MQTT broker reused a packet id we have not acknowledged yet (a Mosquitto < 2.0.13 "
                "fault, decisions.md D4); its PUBACK waits for every delivery holding the id. "
                "Counted in protocol_violations, logged once per connection"
            )

    # -- control packets, writing, keepalive, closing

    def _control(self, packet: mqtt5.Packet) -> None:
        client = self._client
        if isinstance(packet, mqtt5.PubAckPacket):
            client._puback(packet.packet_id, packet.reason_code)
        elif isinstance(packet, mqtt5.PingRespPacket):
            pass
        elif isinstance(packet, mqtt5.ConnAckPacket) and not self.connack.done():
            # The bounds apply from here, within this very chunk: a resumed session's backlog
            # follows the CONNACK at once.
            self.is_ready = packet.reason_code == mqtt5.ConnAckReasonCode.SUCCESS
            self.connack.set_result(packet)
        elif isinstance(packet, mqtt5.SubAckPacket) and packet.packet_id == self.suback_pid:
            self.suback_pid = None
            client._suback(packet)
        elif isinstance(packet, mqtt5.DisconnectPacket):
            detail = f": {packet.reason_str}" if packet.reason_str else ""
            self.drop(f"broker sent DISCONNECT {packet.reason_code.name}{detail}")
        else:
            self._stats.protocol_violations += 1
            self.drop(f"unexpected {type(packet).__name__} from the broker", _R.PROTOCOL_ERROR)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)
            self._last_tx = self._loop.time()

    def start_keepalive(self, keepalive_s: int) -> None:
        self._keepalive_s = keepalive_s
        self._last_rx = self._loop.time()
        self._tick_s = min(keepalive_s / 4, 1.0) if keepalive_s else 1.0
        if not self.closing:
            self._keepalive_timer = self._loop.call_later(self._tick_s, self._keepalive_tick)

    def _keepalive_tick(self) -> None:
        """PINGREQ when either direction was quiet for half the keepalive (the broker needs a
        packet from us within 1.5 × keepalive); dead when nothing came for a whole keepalive
        while we were reading. While we are not reading, EOF is invisible to the transport, so
        the socket is polled for the broker's FIN/RST instead (a broker restart during a pause)."""
        if self.closing:
            return
        now = self._loop.time()
        keepalive = self._keepalive_s
        if self._reading_paused:
            if _peer_closed(self.transport):
                self.drop("closed by the broker (seen while not reading)", abort=True)
                return
        elif keepalive and now - self._last_rx > keepalive:
            self.drop(f"no packet from the broker for {keepalive} s (keepalive)", abort=True)
            return
        if keepalive and (now - self._last_tx >= keepalive / 2 or now - self._last_rx >= keepalive / 2):
            self.write(_PINGREQ)
        self._keepalive_timer = self._loop.call_later(self._tick_s, self._keepalive_tick)

    def drop(self, reason: str, disconnect: mqtt5.DisconnectReasonCode | None = None, *, abort: bool = False) -> None:
        """Close this connection (once) for `reason`; with a DISCONNECT reason code first if given.
        A close that cannot flush within 2 s (dead peer) becomes an abort."""
        if self.closing or self.transport is None:
            return
        if disconnect is not None:
            self.write(mqtt5.DisconnectPacket(reason_code=disconnect).write())
        self.closing = True
        self._lost_reason = reason
        if abort:
            self.transport.abort()
        else:
            self.transport.close()
            self._abort_timer = self._loop.call_later(2.0, self.transport.abort)

    def disconnect(self, timeout_s: float = 2.0) -> None:
        """Normal DISCONNECT (the broker discards the will), then let the broker close first.
        Its EOF proves it has read everything we wrote before: Mosquitto 2.0.11 reads one
        packet per loop turn, and a restarted gateway reconnecting with the same client id takes
        the session over at once, discarding PUBACKs still unread on the old socket (observed:
        48 of 50 redelivered). Whatever arrives meanwhile is dropped unread, so it comes back."""
        if self.closing or self.transport is None:
            return
        self.write(_DISCONNECT_NORMAL)
        self.closing = True
        self._lost_reason = "disconnected by us"
        if self._reading_paused:
            self._reading_paused = False
            self._stats.paused = 0
            self.transport.resume_reading()
        self._abort_timer = self._loop.call_later(timeout_s, self._close_after_disconnect)

    def _close_after_disconnect(self) -> None:
        assert self.transport is not None
        self.transport.close()
        self._abort_timer = self._loop.call_later(2.0, self.transport.abort)
