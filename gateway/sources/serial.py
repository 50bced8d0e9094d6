"""Serial ports: one task per port, bytes → framer → the caller's frame handler.

The port is opened by its configured path — on a Pi a stable `/dev/serial/by-id/…` name from udev —
with serialx (Home Assistant's maintained asyncio serial layer) on an `asyncio.Protocol`, like the
MQTT source. A port missing at start is retried, not fatal; an unplugged one (EIO, the path gone)
is reopened with capped, jittered backoff. One log line per state change (opened, lost with the
reason, back with the outage length) and counters for everything else.

Serial intake cannot be paused (the device keeps talking), so its appends are marked unpausable:
at the log's cap, room is made by compaction instead (decisions.md D5).

Devices that only answer when asked (RS-485 lock boards, Modbus units, Chafon readers) are driven by
the bus poll loop (`gateway/sources/poller.py`) over one `SerialPort` per path; devices that stream
(RDM6300, M100 multi-poll) get their start commands here on every open and a keepalive re-send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import serialx

from devices.events import Reject
from devices.registry import Framer, SerialSettings

log = logging.getLogger("sdgw.serial")

FrameHandler = Callable[[list[bytes | Reject]], None]


@dataclass
class SerialStats:
    opens: int = 0
    reconnects: int = 0
    open_failures: int = 0
    bytes_in: int = 0
    frames: int = 0
    rejects: int = 0
    writes: int = 0
    is_open: bool = False
    echo_bytes: int = 0  # our own bytes taken off the input (spec.echo)
    echo_mismatches: int = 0  # input that should have been our echo and was not
    last_byte_wall_ns: int = 0
    last_rx_mono: float = 0.0  # time.monotonic() of the last byte read / written: the bus's
    last_tx_mono: float = 0.0  # inter-frame gap is counted from the later of the two


@dataclass(frozen=True)
class SerialPortSpec:
    name: str  # the device id, for logs and metrics
    path: str
    settings: SerialSettings
    start_commands: tuple[bytes, ...] = ()
    keepalive_s: float = 0.0
    keepalive_commands: tuple[bytes, ...] = ()
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    # After this much silence a framer with `flush()` gives up on a partial frame: a frame cut
    # short must not wait for the next frame's bytes (which could glue into a valid-looking one).
    silence_flush_s: float = 0.05
    # The adapter echoes what we send (RS-485 without echo suppression): those exact bytes are taken
    # off the front of what comes back before the framer sees it (an echoed 8A/80 unlock is
    # byte-identical to a "door closed" reply, device-protocols §5.1).
    echo: bool = False


class _PortProtocol(asyncio.Protocol):
    def __init__(self, port: SerialPort) -> None:
        self.port = port
        self.framer: Framer = port.framer_factory()
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._flush = getattr(self.framer, "flush", None)
        self._silence: asyncio.TimerHandle | None = None
        self.echo_due = bytearray()  # bytes written that the adapter has not echoed yet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        st = self.port.stats
        st.bytes_in += len(data)
        st.last_byte_wall_ns = time.time_ns()
        st.last_rx_mono = time.monotonic()
        if self.echo_due:
            data = self._strip_echo(data)
            if not data:
                return
        self._hand_over(self.framer.feed(data))
        if self._flush is not None:
            if self._silence is not None:
                self._silence.cancel()
            self._silence = asyncio.get_running_loop().call_later(self.port.spec.silence_flush_s, self._on_silence)

    def _strip_echo(self, data: bytes) -> bytes:
        due, n = self.echo_due, 0
        while n < len(data) and n < len(due) and data[n] == due[n]:
            n += 1
        self.port.stats.echo_bytes += n
        if n < len(data) and n < len(due):  # not our echo after all: stop expecting it
            self.port.stats.echo_mismatches += 1
            due.clear()
        else:
            del due[:n]
        return data[n:]

    def flush_partial(self) -> None:
        """Give up a partial frame now (the poll loop: the exchange it belonged to is over)."""
        if self._flush is not None:
            if self._silence is not None:
                self._silence.cancel()
                self._silence = None
            self._hand_over(self._flush())

    def _on_silence(self) -> None:
        self._silence = None
        self._hand_over(self._flush())

    def _hand_over(self, items: list) -> None:
        if not items:
            return
        st = self.port.stats
        for item in items:
            if isinstance(item, Reject):
                st.rejects += 1
            else:
                st.frames += 1
        self.port.on_frames(items)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._silence is not None:
            self._silence.cancel()
        if not self.lost.done():
            self.lost.set_result(str(exc) if exc else "closed")


class SerialPort:
    """A serial device's port for the gateway's lifetime: open, read, reopen."""

    def __init__(self, spec: SerialPortSpec, framer_factory: Callable[[], Framer], on_frames: FrameHandler) -> None:
        self.spec = spec
        self.framer_factory = framer_factory
        self.on_frames = on_frames
        self.stats = SerialStats()
        self.opened = asyncio.Event()  # set while the port is open (the poll loop waits on it)
        self._protocol: _PortProtocol | None = None

    def write(self, data: bytes) -> bool:
        """Send a command; False when the port is not open (the caller decides what that means)."""
        proto = self._protocol
        if proto is None or proto.transport is None or proto.lost.done():
            return False
        if self.spec.echo:
            proto.echo_due += data
        proto.transport.write(data)
        self.stats.writes += 1
        self.stats.last_tx_mono = time.monotonic()
        return True

    def flush_partial(self) -> None:
        """A partial frame in the framer is given up (as its reject) before the next request goes out."""
        if self._protocol is not None:
            self._protocol.flush_partial()

    def last_activity(self) -> float:
        """time.monotonic() of the last byte in or out (the bus's inter-frame gap counts from it)."""
        return max(self.stats.last_rx_mono, self.stats.last_tx_mono)

    async def _open(self) -> _PortProtocol:
        s = self.spec.settings
        loop = asyncio.get_running_loop()
        _, proto = await serialx.create_serial_connection(
            loop,
            lambda: _PortProtocol(self),
            self.spec.path,
            baudrate=s.baudrate,
            parity={"N": serialx.Parity.NONE, "E": serialx.Parity.EVEN, "O": serialx.Parity.ODD}[s.parity],
            stopbits=serialx.StopBits.TWO if s.stopbits == 2 else serialx.StopBits.ONE,
            byte_size=s.bytesize,
        )
        return proto  # type: ignore[return-value]

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self.spec.keepalive_s)
            for cmd in self.spec.keepalive_commands or self.spec.start_commands:
                self.write(cmd)

    async def run(self) -> None:
        spec = self.spec
        attempt = 0
        down_since: float | None = None
        reported_missing = False
        while True:
            try:
                proto = await self._open()
            except (OSError, serialx.SerialException) as exc:
                self.stats.open_failures += 1
                if not reported_missing:
                    log.warning("serial %s: cannot open %s: %s; retrying", spec.name, spec.path, exc)
                    reported_missing = True
                    down_since = down_since or time.monotonic()
                attempt += 1
                delay = min(spec.reconnect_max_s, spec.reconnect_min_s * 2 ** min(attempt, 10))
                await asyncio.sleep(random.uniform(spec.reconnect_min_s, max(spec.reconnect_min_s, delay)))
                continue
            self._protocol = proto
            self.stats.opens += 1
            self.stats.is_open = True
            self.opened.set()
            waited = time.monotonic() - down_since if down_since is not None else 0.0
            if self.stats.opens > 1:
                self.stats.reconnects += 1
                log.warning("serial %s: %s open again after %.1f s", spec.name, spec.path, waited)
            else:
                log.info("serial %s: %s open (after %.1f s waiting)", spec.name, spec.path, waited)
            down_since = None
            attempt = 0
            reported_missing = False
            for cmd in spec.start_commands:
                self.write(cmd)
            keepalive = (
                asyncio.create_task(self._keepalive(), name=f"serial-keepalive-{spec.name}")
                if (spec.keepalive_s > 0)
                else None
            )
            try:
                reason = await proto.lost
            finally:
                if keepalive is not None:
                    keepalive.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keepalive
                self.stats.is_open = False
                self.opened.clear()
                self._protocol = None
                if proto.transport is not None:
                    proto.transport.close()
            down_since = time.monotonic()
            log.warning("serial %s: %s lost: %s; reopening", spec.name, spec.path, reason)
            await asyncio.sleep(random.uniform(0, spec.reconnect_min_s))
