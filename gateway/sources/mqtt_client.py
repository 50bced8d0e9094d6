"""The gateway's own MQTT 5 connection: an asyncio.Protocol over the sans-I/O `mqtt5` codec
(decisions.md D3) with the session rules of D4.

Design
- `MqttProtocol` is one TCP/TLS connection. `data_received` parses every whole packet of the chunk
  with `mqtt5.read` and hands all its PUBLISHes (QoS 0 and 1, in order) to `on_batch` in one call.
  The caller commits them and then calls `MqttClient.ack(token)`, which writes all their PUBACKs
  in one `transport.write`. Nothing is acknowledged before that (D1): after a crash the broker
  re-sends what we had not acknowledged, with DUP set.
- `MqttClient` is the session: a fixed client id, clean_start=False and a Session Expiry Interval
  > 0, so the broker keeps our subscriptions and queue across our crashes and its restarts; it
  reconnects forever with capped, jittered backoff and resubscribes every time.
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
- Clean shutdown lets the broker close first after our DISCONNECT (Mosquitto reads one packet per
  loop turn; a quick reconnect with the same client id would otherwise take the session over
  before it read our last PUBACKs).
- Inbound and outbound packet ids are separate spaces (MQTT 5 §2.2.1). Our QoS 1 publishes are
  re-sent (DUP) after a reconnect until their PUBACK arrives or the caller's timeout expires.
- Every method must be called from the event loop's thread (the log's writer thread hands its
  acks back with `loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import select
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import mqtt5

_log = logging.getLogger(__name__)

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
_T = TypeVar("_T")


class MqttError(Exception):
    """Base of this module's errors. A reconnect (which `run()` does by itself) may help."""


class MqttConnectionLost(MqttError):
    """The connection closed while we waited for the broker's answer."""


class MqttRefused(MqttError):
    """The broker answered CONNECT with an error (credentials, client id, …): fix config."""

    def __init__(self, reason: mqtt5.ConnAckReasonCode) -> None:
        super().__init__(f"broker refused the connection: {reason.name}")
        self.reason = reason


class MqttPublishRejected(MqttError):
    """The broker answered our PUBLISH with an error reason code; a retry will not help."""


class MqttClosed(MqttError):
    """The client was shut down."""


@dataclass(frozen=True)
class MqttMessageSpec:
    """A message the client publishes by itself: the will, the birth."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True)
class MqttOptions:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: ssl.SSLContext | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86400
    receive_max: int = 4096
    max_packet_bytes: int = 1 << 20
    subscriptions: tuple[tuple[str, int], ...] = ()
    will: MqttMessageSpec | None = None
    birth: MqttMessageSpec | None = None
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 10.0  # TCP + TLS + CONNACK

    def __post_init__(self) -> None:
        problems = []
        if not self.client_id:
            problems.append("client_id is empty (a persistent session needs a fixed id)")
        if not 0 <= self.keepalive_s <= 0xFFFF:
            problems.append(f"keepalive_s must be 0..65535, got {self.keepalive_s}")
        if not 1 <= self.session_expiry_s <= 0xFFFFFFFF:
            problems.append(f"session_expiry_s must be > 0 (decisions.md D4), got {self.session_expiry_s}")
        if not 1 <= self.receive_max <= 0xFFFF:
            problems.append(f"receive_max must be 1..65535, got {self.receive_max}")
        if not 64 <= self.max_packet_bytes <= 268_435_455:
            problems.append(f"max_packet_bytes must be 64..268435455, got {self.max_packet_bytes}")
        if any(qos not in (0, 1) for _, qos in self.subscriptions):
            problems.append("subscription max QoS must be 0 or 1")
        if any(m is not None and m.qos not in (0, 1) for m in (self.will, self.birth)):
            problems.append("will/birth QoS must be 0 or 1")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            problems.append("need 0 < reconnect_min_s <= reconnect_max_s")
        if problems:
            raise ValueError("; ".join(problems))


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
    the socket is not read), published (our publishes, QoS 1 once acked), subscribe_failures.
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


async def _closed(conn: MqttProtocol) -> str:
    """Why `conn` closed, once it has. Shared futures are awaited through asyncio.wait, which
    leaves them alone when the waiting task is cancelled (a plain await would cancel them)."""
    await asyncio.wait((conn.closed,))
    return conn.closed.result()


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


class _Outgoing:
    """One of our QoS 1 publishes awaiting its PUBACK (waiter None: the birth, re-made on connect)."""

    __slots__ = ("data", "sent", "waiter")

    def __init__(self, data: bytes, waiter: asyncio.Future[int] | None) -> None:
        self.data = data
        self.waiter = waiter
        self.sent = False


class MqttClient:
    """The gateway's MQTT 5 session. `run()` keeps it connected until `shutdown()` or cancel."""

    def __init__(
        self,
        options: MqttOptions,
        on_batch: Callable[[list[InboundMessage], AckToken], None],
        *,
        logger: logging.Logger | None = None,
        stats: MqttStats | None = None,
    ) -> None:
        self.options = options
        self._on_batch = on_batch
        self.stats = stats if stats is not None else MqttStats()
        self._log = logger if logger is not None else _log
        self._connect_packet = self._make_connect()
        self._generation = 0
        self._conn: MqttProtocol | None = None
        self._ready = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._paused = False
        self._stopping = False
        self._running = False
        self._run_done: asyncio.Future[None] | None = None
        self._wake: asyncio.Future[None] | None = None
        self._outgoing: dict[int, _Outgoing] = {}
        self._out_limit = 0xFFFF  # the broker's Receive Maximum, for our QoS 1 publishes
        self._out_max_bytes: int | None = None  # the broker's Maximum Packet Size
        self._slot_waiters: list[asyncio.Future[None]] = []
        self._next_pid = 0
        self._had_session = False

    def _make_connect(self) -> bytes:
        o = self.options
        will = None
        if o.will is not None:
            will = mqtt5.Will(o.will.topic, payload=o.will.payload, qos=mqtt5.QoS(o.will.qos), retain=o.will.retain)
        return mqtt5.ConnectPacket(
            o.client_id,
            username=o.username,
            password=o.password.encode() if o.password is not None else None,
            clean_start=False,
            will=will,
            keep_alive=o.keepalive_s,
            session_expiry_interval=o.session_expiry_s,
            receive_max=o.receive_max,
            max_packet_size=o.max_packet_bytes,
        ).write()

    # -- public surface

    @property
    def connected(self) -> bool:
        """CONNACK accepted, SUBSCRIBE and birth sent, connection up."""
        return self._ready.is_set()

    @property
    def unacked(self) -> int:
        """QoS 1 messages delivered on the current connection and not yet acked."""
        return self._conn.unacked if self._conn is not None else 0

    async def wait_connected(self, timeout_s: float) -> None:
        """Until `connected`; TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    async def wait_subscribed(self, timeout_s: float) -> None:
        """Until the current connection's SUBACK has been read (on a new session: until messages
        published from now on are routed to us). TimeoutError after `timeout_s`."""
        async with asyncio.timeout(timeout_s):
            await self._subscribed.wait()

    def ack(self, token: AckToken) -> None:
        """Acknowledge a delivered batch once it is durably committed. A token of an earlier
        connection is ignored (its messages come back with DUP); a second ack is a no-op."""
        if not token._pending:
            return
        token._pending = False
        conn = self._conn
        if conn is None or conn.generation != token._generation or conn.closing:
            self.stats.stale_acks += 1
            return
        conn.ack(token._packet_ids)

    def pause(self) -> None:
        """Stop reading the socket (e.g. the log is full) until `resume()`."""
        self._paused = True
        if self._conn is not None:
            self._conn.update_reading()

    def resume(self) -> None:
        self._paused = False
        if self._conn is not None:
            self._conn.update_reading()

    def reconnect(self, reason: str) -> None:
        """Drop the current connection (normal DISCONNECT: no will) so that `run()` reconnects
        and the broker redelivers everything unacked, e.g. after a failed commit whose tokens
        will never be acked (they would otherwise hold the Receive Maximum forever)."""
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.closing:
            conn.disconnect(timeout_s=1.0)
            conn._lost_reason = reason  # run() logs the loss with it

    def new_protocol(self) -> MqttProtocol:
        """The protocol for a new connection, which becomes the current one (`run` uses it;
        tests drive it with a recording transport)."""
        self._generation += 1
        self._conn = MqttProtocol(self, self._generation)
        return self._conn

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False, timeout_s: float = 10
    ) -> None:
        """Publish; QoS 1 returns once the broker's PUBACK came (re-sent after a reconnect).
        Waits for a connection within `timeout_s`; TimeoutError after it."""
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if self._stopping:
            raise MqttClosed("the MQTT client is shut down")
        async with asyncio.timeout(timeout_s):
            if qos == 0:
                await self._ready.wait()
                assert self._conn is not None
                data = mqtt5.PublishPacket(topic, payload, retain=retain).write()
                if self._out_max_bytes is not None and len(data) > self._out_max_bytes:
                    raise MqttPublishRejected(f"{len(data)} bytes > the broker's maximum packet size")
                self._conn.write(data)
                self.stats.published += 1
                return
            while len(self._outgoing) >= self._out_limit:
                slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._slot_waiters.append(slot)
                await slot
            waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            pid, entry = self._queue_publish(topic, payload, retain, waiter)
            try:
                reason = await waiter
            finally:
                if self._outgoing.get(pid) is entry:
                    self._release(pid)
        if reason >= 0x80:
            raise MqttPublishRejected(f"broker rejected PUBLISH to {topic!r}: {mqtt5.PubAckReasonCode(reason).name}")

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop reading, wait (up to `timeout_s`) until every delivered message is acked and our
        QoS 1 publishes are answered, then DISCONNECT normally (the broker drops the will) and
        close; `run()` then returns. PUBACKs after a DISCONNECT would be ignored (D4)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._stopping = True
        self._ready.clear()
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        conn = self._conn
        if conn is not None and conn.transport is not None and not conn.closing:
            conn.update_reading()
            try:
                async with asyncio.timeout_at(deadline):
                    await conn.wait_drained()
                    while not conn.closing:
                        waiters = [e.waiter for e in self._outgoing.values() if e.waiter and not e.waiter.done()]
                        if not waiters:
                            break
                        await asyncio.wait((*waiters, conn.closed), return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                self._log.warning(
                    "MQTT shutdown: %d messages still unacknowledged after %.1f s; the broker will redeliver them",
                    conn.unacked,
                    timeout_s,
                )
            if not conn.closing:
                conn.disconnect(timeout_s=max(0.5, deadline - loop.time()))
                self._log.info("MQTT disconnected from %s:%d (shutdown)", self.options.host, self.options.port)
            await asyncio.wait((conn.closed,), timeout=max(0.5, deadline - loop.time()) + 0.5)
        if self._run_done is not None and not self._run_done.done():
            await asyncio.wait((self._run_done,), timeout=max(0.1, deadline - loop.time()))
        self._fail_outgoing(MqttClosed("the MQTT client is shut down"))

    # -- the reconnect loop

    async def run(self) -> None:
        """Connect, subscribe, read; reconnect with capped, jittered backoff until `shutdown()`
        (then returns) or cancellation (closes the socket without DISCONNECT, like a crash: the
        broker publishes the will and keeps what we had not acked)."""
        if self._running:
            raise RuntimeError("MqttClient.run() is already running")
        loop = asyncio.get_running_loop()
        self._running = True
        self._run_done = loop.create_future()
        try:
            await self._reconnect_loop(loop)
        finally:
            self._ready.clear()
            conn = self._conn
            if conn is not None and conn.transport is not None and not conn.closed.done():
                conn.drop("MQTT client stopped")  # no DISCONNECT: the broker publishes the will
                await asyncio.wait((conn.closed,), timeout=1.0)
                if not conn.closed.done():
                    conn.transport.abort()
                    await asyncio.wait((conn.closed,), timeout=0.1)
            self._fail_outgoing(MqttClosed("the MQTT client is not running"))
            self._running = False
            self._run_done.set_result(None)

    async def _reconnect_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        o = self.options
        log = self._log
        where = f"{o.host}:{o.port}"
        attempt = 0
        ever_connected = False
        down_since = loop.time()
        last_failure: str | None = None
        while not self._stopping:
            try:
                conn = await self._connect()
            except (OSError, TimeoutError, MqttError) as exc:
                if self._stopping:
                    break
                self.stats.connect_failures += 1
                if isinstance(exc, TimeoutError):
                    failure = f"no connection and CONNACK within {o.connect_timeout_s} s"
                else:
                    failure = str(exc) or type(exc).__name__
                if failure != last_failure:  # one line per kind of failure, not per retry
                    level = logging.ERROR if isinstance(exc, MqttRefused) else logging.WARNING
                    log.log(
                        level,
                        "MQTT connect to %s as %r failed: %s; retrying with backoff",
                        where,
                        o.client_id,
                        failure,
                    )
                    last_failure = failure
            else:
                if self._stopping:
                    conn.disconnect()
                    await _closed(conn)
                    break
                last_failure = None
                up_since = loop.time()
                if ever_connected:
                    self.stats.reconnects += 1
                    log.info("MQTT reconnected to %s after %.1f s outage", where, up_since - down_since)
                else:
                    log.info("MQTT connected to %s as %r", where, o.client_id)
                ever_connected = True
                reason = await _closed(conn)
                self._ready.clear()
                if self._stopping:
                    break
                log.warning("MQTT connection to %s lost: %s; reconnecting", where, reason)
                down_since = loop.time()
                if down_since - up_since >= o.reconnect_max_s:
                    attempt = 0
            await self._sleep(self._backoff_s(attempt))
            attempt += 1

    def _backoff_s(self, attempt: int) -> float:
        """Full jitter in the upper half of min·2^attempt, capped at reconnect_max_s."""
        o = self.options
        cap = min(o.reconnect_max_s, o.reconnect_min_s * 2 ** min(attempt, 30))
        return random.uniform(cap / 2, cap)

    async def _sleep(self, delay_s: float) -> None:
        """A backoff that `shutdown()` cuts short."""
        self._wake = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait((self._wake,), timeout=delay_s)
        finally:
            self._wake = None

    async def _connect(self) -> MqttProtocol:
        """TCP (+TLS), CONNECT/CONNACK, re-send our unanswered publishes, SUBSCRIBE, birth."""
        loop = asyncio.get_running_loop()
        o = self.options
        conn = self.new_protocol()
        try:
            async with asyncio.timeout(o.connect_timeout_s):
                await loop.create_connection(
                    lambda: conn, o.host, o.port, ssl=o.ssl, server_hostname=o.host if o.ssl else None
                )
                conn.write(self._connect_packet)
                connack = await self._answer(conn, conn.connack)
                if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
                    raise MqttRefused(connack.reason_code)
                self.stats.connects += 1
                conn.start_keepalive(connack.server_keep_alive or o.keepalive_s)
                self._out_limit = max(1, connack.receive_max)
                self._out_max_bytes = connack.max_packet_size
                if self._had_session and not connack.session_present:
                    self._log.warning(
                        "MQTT broker had no session for %r: what was queued for us while we were "
                        "away is lost (broker restarted without persistence, or the session expired)",
                        o.client_id,
                    )
                self._had_session = True
            if conn.closing:  # e.g. a protocol violation in the CONNACK's chunk
                raise MqttConnectionLost(conn._lost_reason)
            self._resend(conn, duplicate=connack.session_present)
            conn.can_publish = True
            self._subscribe(conn)
            if o.birth is not None:
                b = o.birth
                if b.qos:
                    self._queue_publish(b.topic, b.payload, b.retain, None)
                else:
                    conn.write(mqtt5.PublishPacket(b.topic, b.payload, retain=b.retain).write())
            conn.update_reading()
            self._ready.set()
            return conn
        except BaseException:
            if conn.transport is not None:
                conn.drop("connect failed", abort=True)
            raise

    async def _answer(self, conn: MqttProtocol, future: asyncio.Future[_T]) -> _T:
        """The broker's answer, or MqttConnectionLost if the connection closes first."""
        await asyncio.wait((future, conn.closed), return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        raise MqttConnectionLost(conn.closed.result())

    def _subscribe(self, conn: MqttProtocol) -> None:
        """Subscribe to every filter, also on a resumed session (harmless there). Retained
        messages come only for a subscription the session did not have yet, and `retain` on a
        delivered message means "from the retained store" (retain-as-published off)."""
        o = self.options
        self._subscribed.clear()
        if not o.subscriptions:
            self._subscribed.set()
            return
        filters = [
            mqtt5.TopicFilter(
                topic,
                max_qos=mqtt5.QoS(qos),
                retain_as_published=False,
                retain_handling=mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS,
            )
            for topic, qos in o.subscriptions
        ]
        conn.suback_pid = pid = self._allocate_pid()
        conn.write(mqtt5.SubscribePacket(pid, filters).write())

    def _suback(self, suback: mqtt5.SubAckPacket) -> None:
        for (topic, qos), code in zip(self.options.subscriptions, suback.reason_codes, strict=False):
            if int(code) >= 0x80:
                self.stats.subscribe_failures += 1
                self._log.error("MQTT subscription to %r refused by the broker: %s", topic, code.name)
            elif int(code) < qos:
                self._log.warning("MQTT subscription to %r granted only QoS %d", topic, int(code))
        self._subscribed.set()

    # -- our publishes

    def _allocate_pid(self) -> int:
        for _ in range(0xFFFF):
            self._next_pid = self._next_pid % 0xFFFF + 1
            if self._next_pid not in self._outgoing:
                return self._next_pid
        raise MqttError("no free packet id")

    def _queue_publish(
        self, topic: str, payload: bytes, retain: bool, waiter: asyncio.Future[int] | None
    ) -> tuple[int, _Outgoing]:
        pid = self._allocate_pid()
        data = mqtt5.PublishPacket(topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=retain, packet_id=pid).write()
        if self._out_max_bytes is not None and len(data) > self._out_max_bytes:
            raise MqttPublishRejected(f"{len(data)} bytes > the broker's maximum packet size")
        entry = _Outgoing(data, waiter)
        self._outgoing[pid] = entry
        conn = self._conn
        if conn is not None and conn.can_publish and not conn.closing:
            conn.write(data)
            entry.sent = True
        return pid, entry

    def _resend(self, conn: MqttProtocol, *, duplicate: bool) -> None:
        """After CONNACK: our unanswered publishes again, in order (MQTT 5 §4.4)."""
        for entry in self._outgoing.values():
            if entry.waiter is not None and entry.waiter.done():
                continue  # answered; its publisher has not resumed yet
            data = entry.data
            if entry.sent and duplicate:
                data = bytes((data[0] | 0x08,)) + data[1:]
            conn.write(data)
            entry.sent = True

    def _puback(self, pid: int, reason: int) -> None:
        entry = self._outgoing.get(pid)
        if entry is None:
            return  # the publisher timed out and let the id go
        self.stats.published += 1
        if entry.waiter is None:
            self._release(pid)
        elif not entry.waiter.done():
            entry.waiter.set_result(int(reason))

    def _release(self, pid: int) -> None:
        del self._outgoing[pid]
        while self._slot_waiters:
            slot = self._slot_waiters.pop(0)
            if not slot.done():
                slot.set_result(None)
                break

    def _fail_outgoing(self, exc: MqttError) -> None:
        for pid, entry in list(self._outgoing.items()):
            if entry.waiter is None:
                del self._outgoing[pid]
            elif not entry.waiter.done():
                entry.waiter.set_exception(exc)

    def _connection_lost(self, conn: MqttProtocol) -> None:
        if conn is self._conn:
            self._ready.clear()
            self._subscribed.clear()
            for pid in [pid for pid, e in self._outgoing.items() if e.waiter is None]:
                self._release(pid)  # a stale birth: the next connect publishes a fresh one
