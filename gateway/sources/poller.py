"""Request/response polling of one serial bus: RS-485 lock boards, Modbus RTU units, Chafon readers.

Design note. A half-duplex bus carries one conversation at a time, and neither Modbus RTU nor the
lock boards carry a transaction id: the only way to know which request a frame answers is to have
ONE request in flight and ask the model's matcher (address, function). So one loop per open port:

- what goes next: a queued command first (a locker "open" goes ahead of the next routine poll), else
  the routine poll due earliest — fair by due time, so a silent device costs its own timeouts and
  never another device's turn;
- wait the model's inter-frame gap after the last byte on the line, write, then wait for the answer's
  LAST frame or the timeout; a PART frame (a Chafon round with more frames to come) restarts the
  timeout. The next routine poll of that request is due `interval_s` after it was sent, so a reply-
  driven reader (Chafon) is asked again as soon as its round is complete;
- frames that answer nothing in flight (a late answer after its timeout, another address) are counted
  as mismatched; they still reach the pipeline under the device they belong to when one of its routine
  requests matches (the data is real), otherwise as an UNSUPPORTED reject (dead-lettered, counted).

Every answer frame, polled or commanded, goes to the pipeline (`deliver`); a routine poll that times
out is reported (`on_timeout`) so state machines can count missed polls. A command that could not be
written within its timeout is never written later (`RequestNotSent`): an unlock the caller gave up on
must not fire afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from devices.events import Answer, Reject, RejectReason

log = logging.getLogger("sdgw.serial")

SILENT_AFTER_TIMEOUTS = 3  # consecutive unanswered requests before a device is logged as silent
# A routine poll that keeps going unanswered is asked less often (its interval doubling, up to this),
# so that a dead board's timeouts do not eat the bus time of the live ones; the first answer restores
# its interval. Missed-poll counting (lockers: offline after N) happens before the backoff starts.
SILENT_POLL_MAX_S = 10.0
CLOSED_RETRY_S = 0.05


class RequestNotSent(TimeoutError):
    """The request was never written (the port was closed or the bus busy until its deadline)."""


class BusPort(Protocol):
    """What the loop needs of the serial port (gateway.sources.serial.SerialPort)."""

    opened: asyncio.Event

    def write(self, data: bytes) -> bool: ...

    def flush_partial(self) -> None: ...

    def last_activity(self) -> float: ...


@dataclass(frozen=True)
class PolledDevice:
    id: str
    polls: tuple[bytes, ...]  # routine requests (one per board or unit), each on its own schedule
    match: Callable[[bytes, bytes], Answer]
    interval_s: float
    timeout_s: float


@dataclass
class PollStats:
    requests: int = 0  # written to the line (routine polls and commands)
    answers: int = 0  # requests answered (their LAST frame)
    timeouts: int = 0
    mismatched: int = 0  # frames that did not answer the request in flight
    commands: int = 0  # of the requests, commands (serial_request)
    answering: bool | None = None  # None until the first answer or the first silence
    consecutive_timeouts: int = 0
    silent_since: float | None = None  # time.monotonic()


@dataclass
class _Job:
    device: PolledDevice
    payload: bytes
    timeout_s: float
    slot: _Slot | None = None  # routine polls
    caller: asyncio.Future[bytes] | None = None  # commands: the serial_request waiting for the answer
    sent: asyncio.Event = field(default_factory=asyncio.Event)
    abandoned: bool = False
    answer: asyncio.Future[bytes] | None = None
    deadline: float = 0.0


@dataclass
class _Slot:
    device: PolledDevice
    payload: bytes
    next_due: float
    misses: int = 0  # this routine request's unanswered polls in a row

    def interval_s(self) -> float:
        base = self.device.interval_s
        over = self.misses - SILENT_AFTER_TIMEOUTS + 1
        if over <= 0 or base >= SILENT_POLL_MAX_S:
            return base
        return min(base * 2.0**over, max(base, SILENT_POLL_MAX_S))


class BusPoller:
    """The poll loop of one bus (one open port, one or more devices on it)."""

    def __init__(
        self,
        name: str,
        devices: list[PolledDevice],
        port: BusPort,
        *,
        gap_s: float,
        deliver: Callable[[str, list[bytes | Reject]], None],
        on_timeout: Callable[[str, bytes], None],
    ) -> None:
        self.name = name
        self.devices = {d.id: d for d in devices}
        self.port = port
        self.gap_s = gap_s
        self.deliver = deliver
        self.on_timeout = on_timeout
        self.stats = {d.id: PollStats() for d in devices}
        now = time.monotonic()
        self._slots = [_Slot(d, p, now) for d in devices for p in d.polls]
        self._commands: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._in_flight: _Job | None = None
        self._last_device = devices[0]

    # --- commands ------------------------------------------------------------------------------------

    async def request(self, device_id: str, payload: bytes, *, timeout_s: float) -> bytes:
        """Send `payload` to `device_id` ahead of the routine polls; the answer's (last) frame.

        It waits for the request in flight to end (answer or timeout: a bus carries one conversation),
        so `timeout_s` should exceed the bus's longest poll timeout. TimeoutError when no answer came
        within `timeout_s` of writing it; RequestNotSent (a TimeoutError) when it could not be written
        within `timeout_s` — then it never will be."""
        device = self.devices.get(device_id)
        if device is None:
            raise LookupError(f"{device_id!r} is not on bus {self.name}")
        job = _Job(device, payload, timeout_s, caller=asyncio.get_running_loop().create_future())
        self._commands.append(job)
        self._wake.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.sent.wait(), timeout_s)
            if not job.sent.is_set():
                raise RequestNotSent(f"{device_id}: request not sent within {timeout_s} s (port closed or bus busy)")
            return await job.caller
        finally:
            if not job.sent.is_set():
                job.abandoned = True
                with contextlib.suppress(ValueError):
                    self._commands.remove(job)

    # --- frames from the port (called from the protocol's data_received) ------------------------------

    def on_frames(self, items: list[bytes | Reject]) -> None:
        routed: list[tuple[str, bytes | Reject]] = []
        for item in items:
            job = self._in_flight
            if isinstance(item, Reject):
                routed.append(((job.device if job else self._last_device).id, item))
                continue
            if job is not None and job.answer is not None and not job.answer.done():
                verdict = job.device.match(job.payload, item)
                if verdict is not Answer.NONE:
                    routed.append((job.device.id, item))
                    if verdict is Answer.LAST:
                        job.answer.set_result(item)
                    else:
                        job.deadline = time.monotonic() + job.timeout_s
                    continue
            owner = self._owner_of(item)
            counted = job.device if job is not None else (owner or self._last_device)
            self.stats[counted.id].mismatched += 1
            if owner is not None:
                routed.append((owner.id, item))  # a late answer: its data is still real
            else:
                reject = Reject(RejectReason.UNSUPPORTED, "a frame that answers no request on this bus", item)
                routed.append((counted.id, reject))
        start = 0
        for i in range(1, len(routed) + 1):  # consecutive items of one device → one hand-over
            if i == len(routed) or routed[i][0] != routed[start][0]:
                self.deliver(routed[start][0], [it for _, it in routed[start:i]])
                start = i

    def _owner_of(self, frame: bytes) -> PolledDevice | None:
        for slot in self._slots:
            if slot.device.match(slot.payload, frame) is not Answer.NONE:
                return slot.device
        return None

    # --- the loop --------------------------------------------------------------------------------------

    def _next_job(self, now: float) -> _Job | None:
        while self._commands:
            job = self._commands.popleft()
            if not job.abandoned:
                return job
        due = [s for s in self._slots if s.next_due <= now]
        if not due:
            return None
        slot = min(due, key=lambda s: s.next_due)
        return _Job(slot.device, slot.payload, slot.device.timeout_s, slot=slot)

    async def _idle(self, now: float) -> None:
        """Sleep until the next routine poll is due or a command arrives."""
        wait_s = min((s.next_due for s in self._slots), default=now + 60.0) - now
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, wait_s))

    async def run(self) -> None:
        try:
            await self._loop()
        finally:  # stopping: queued commands fail at once instead of at their deadline
            for job in self._commands:
                if job.caller is not None and not job.caller.done():
                    job.caller.set_exception(RequestNotSent(f"{job.device.id}: bus {self.name} stopped"))
            self._commands.clear()

    async def _loop(self) -> None:
        while True:
            if not self.port.opened.is_set():
                await self.port.opened.wait()
            job = self._next_job(time.monotonic())
            if job is None:
                await self._idle(time.monotonic())
                continue
            quiet_at = self.port.last_activity() + self.gap_s
            if (wait_s := quiet_at - time.monotonic()) > 0:
                await asyncio.sleep(wait_s)
            if job.abandoned:
                continue
            if job.caller is not None and job.caller.done():  # the caller was cancelled meanwhile
                continue
            self.port.flush_partial()  # the previous exchange is over: a partial frame is garbage
            if not self.port.write(job.payload):
                if job.slot is None:
                    self._commands.appendleft(job)  # the port closed: wait for it, within the deadline
                await asyncio.sleep(CLOSED_RETRY_S)  # until the port's task notices the loss
                continue
            await self._exchange(job)

    async def _exchange(self, job: _Job) -> None:
        sent_at = time.monotonic()
        st = self.stats[job.device.id]
        st.requests += 1
        if job.slot is None:
            st.commands += 1
        job.answer = asyncio.get_running_loop().create_future()
        job.deadline = sent_at + job.timeout_s
        job.sent.set()
        self._in_flight = job
        self._last_device = job.device
        try:
            while not job.answer.done() and (remaining := job.deadline - time.monotonic()) > 0:
                await asyncio.wait([job.answer], timeout=remaining)
        except asyncio.CancelledError:  # stopping with a command on the line: its caller must not hang
            if job.caller is not None and not job.caller.done():
                job.caller.set_exception(TimeoutError(f"{job.device.id}: bus {self.name} stopped before the answer"))
            raise
        finally:
            self._in_flight = None
            if job.slot is not None:
                answered = job.answer.done() and not job.answer.cancelled()
                job.slot.misses = 0 if answered else job.slot.misses + 1
                job.slot.next_due = sent_at + job.slot.interval_s()
        if job.answer.done():
            frame = job.answer.result()
            st.answers += 1
            self._answered(job.device, st)
            if job.caller is not None and not job.caller.done():
                job.caller.set_result(frame)
            return
        job.answer.cancel()
        st.timeouts += 1
        self._unanswered(job.device, st)
        if job.caller is not None:
            if not job.caller.done():
                job.caller.set_exception(TimeoutError(f"{job.device.id}: no answer within {job.timeout_s} s"))
        else:
            self.on_timeout(job.device.id, job.payload)

    def _answered(self, device: PolledDevice, st: PollStats) -> None:
        st.consecutive_timeouts = 0
        if st.answering is True:
            return
        if st.answering is False and st.silent_since is not None:
            log.warning(
                "serial %s: %s answering again after %.1f s", self.name, device.id, time.monotonic() - st.silent_since
            )
        else:
            log.info("serial %s: %s answering", self.name, device.id)
        st.answering, st.silent_since = True, None

    def _unanswered(self, device: PolledDevice, st: PollStats) -> None:
        st.consecutive_timeouts += 1
        if st.consecutive_timeouts == 1:
            st.silent_since = time.monotonic() - device.timeout_s
        if st.consecutive_timeouts >= SILENT_AFTER_TIMEOUTS and st.answering is not False:
            st.answering = False
            log.warning("serial %s: %s silent (%d requests unanswered)", self.name, device.id, st.consecutive_timeouts)
