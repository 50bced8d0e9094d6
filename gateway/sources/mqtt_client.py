"""The gateway's MQTT 5 session (decisions.md D4) over `MqttProtocol` connections (the wire side,
`mqtt_protocol.py`, decisions.md D3).

Design
- `MqttClient` is the session: a fixed client id, clean_start=False and a Session Expiry Interval
  > 0, so the broker keeps our subscriptions and queue across our crashes and its restarts; it
  reconnects forever with capped, jittered backoff and resubscribes every time.
- Each connection is one `MqttProtocol`; a batch it delivers is acknowledged through
  `MqttClient.ack(token)` once committed, never before (D1).
- The connection counts as up from the CONNACK: nothing waits for the SUBACK, which queues behind
  everything the broker had queued for us (see `mqtt_protocol.py`).
- Clean shutdown lets the broker close first after our DISCONNECT (Mosquitto reads one packet per
  loop turn; a quick reconnect with the same client id would otherwise take the session over
  before it read our last PUBACKs).
- Inbound and outbound packet ids are separate spaces (MQTT 5 §2.2.1). Our QoS 1 publishes are
  re-sent (DUP) after a reconnect until their PUBACK arrives or the caller's timeout expires.
- Every method must be called from the event loop's thread (the log's writer thread hands its
  acks back with `loop.call_soon_threadsafe`).

The errors live in `gateway.errors` and the wire-side types in `mqtt_protocol.py`; both are
re-exported here, the one import the rest of the gateway uses.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import mqtt5

from gateway.errors import MqttClosed, MqttConnectionLost, MqttError, MqttPublishRejected, MqttRefused
from gateway.sources.mqtt_protocol import AckToken, InboundMessage, MqttProtocol, MqttStats

__all__ = [
    "AckToken",
    "InboundMessage",
    "MqttClient",
    "MqttClosed",
    "MqttConnectionLost",
    "MqttError",
    "MqttMessageSpec",
    "MqttOptions",
    "MqttProtocol",
    "MqttPublishRejected",
    "MqttRefused",
    "MqttStats",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")


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


async def _closed(conn: MqttProtocol) -> str:
    """Why `conn` closed, once it has. Shared futures are awaited through asyncio.wait, which
    leaves them alone when the waiting task is cancelled (a plain await would cancel them)."""
    await asyncio.wait((conn.closed,))
    return conn.closed.result()


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
        self._stopped = asyncio.Event()  # set when a shutdown starts: publishers waiting stop waiting
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
                await self._until_ready()
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
                if self._stopping:
                    raise MqttClosed("the MQTT client is shut down")
            waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            pid, entry = self._queue_publish(topic, payload, retain, waiter)
            try:
                reason = await waiter
            finally:
                if self._outgoing.get(pid) is entry:
                    self._release(pid)
        if reason >= 0x80:
            raise MqttPublishRejected(f"broker rejected PUBLISH to {topic!r}: {mqtt5.PubAckReasonCode(reason).name}")

    async def _until_ready(self) -> None:
        """Until connected; MqttClosed as soon as a shutdown starts (not at the caller's timeout)."""
        if self._ready.is_set():
            return
        ready = asyncio.ensure_future(self._ready.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            await asyncio.wait((ready, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            stopped.cancel()
        if self._stopping:
            raise MqttClosed("the MQTT client is shut down")

    async def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop reading, wait (up to `timeout_s`) until every delivered message is acked and our
        QoS 1 publishes are answered, then DISCONNECT normally (the broker drops the will) and
        close; `run()` then returns. PUBACKs after a DISCONNECT would be ignored (D4)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self._stopping = True
        self._stopped.set()
        self._ready.clear()
        for slot in self._slot_waiters:  # publishers waiting for a free packet id: fail them now
            if not slot.done():
                slot.set_result(None)
        self._slot_waiters.clear()
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
        if int(reason) >= 0x80:
            self.stats.publish_rejected += 1
        else:
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
