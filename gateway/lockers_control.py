"""Remote open of a locker compartment, served by the gateway that owns the bank (decisions.md D10, D15).

One open, step by step:
  1. Idempotency: a request whose (API key, Idempotency-Key) was answered before gets that first
     answer again — same status, same body — and nothing is sent. A request with the same key still in
     flight waits for it. A key reused for a different request (other bank, compartment, force or
     reason) is refused. Answers are kept `idempotency_ttl_s` in the log's committed state, so a
     retry after a gateway restart is still recognised.
  2. The state machine decides (`LockerBank.on_command`): refused while an earlier open of the
     compartment is pending or unconfirmed (unless forced: audited) or while it is out of service. The
     "requested" command record and the pending state are committed to the log *before* anything goes
     on the wire, so a crash mid-open leaves the compartment "unconfirmed" after the restart, not free
     for a second open.
  3. The command goes out — a serial bank: the board's unlock frame through `serial_request` (never
     re-sent: the boards have no transaction id); an MQTT bank: the §5.3 `open_compartment` message on
     the bank's command topic, with a fresh transaction id.
  4. The answer is the state machine's own resolution of that open: confirmed (the controller reports
     the door open), failed (it reports the door still shut, or a command error), or — when nothing
     comes within `open_confirm_timeout_s` — unconfirmed: never a guessed "opened".
  5. An AUDIT record (key id, reason, outcome, status) and the idempotency entry are committed together
     before the answer leaves.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from devices import kerong, lock8a
from devices.events import LockStatus
from gateway.config import GatewayConfig
from gateway.log.schema import RecordClass
from gateway.log.store import DurableLog
from gateway.pipeline import Arrival, Pipeline
from gateway.processors.locker_stage import BankSpec, Resolution
from gateway.processors.lockers import CommandKind, CommandStatus
from gateway.records import RecordDraft

log = logging.getLogger("sdgw.lockers")

IDEMPOTENCY_STATE_KEY = "lockers/idempotency"
MAX_REMEMBERED = 10_000  # answers kept at most (oldest forgotten first)

Publish = Callable[[str, bytes], Awaitable[None]]
SerialRequest = Callable[..., Awaitable[bytes]]  # (device_id, request, *, timeout_s) → response frame
Render = Callable[["OpenResult"], tuple[int, dict]]


@dataclass(frozen=True)
class OpenRequest:
    bank: str
    compartment: int
    reason: str
    force: bool
    actor: str  # the API key's id
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        text = f"{self.bank}|{self.compartment}|{self.force}|{self.reason}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class OpenResult:
    """How an open ended. `outcome`: opened | failed | unconfirmed | refused_pending |
    refused_out_of_service | unknown_bank | unknown_compartment."""

    outcome: str
    bank: str
    compartment: int
    transaction_id: str = ""
    latency_ms: int | None = None
    detail: str = ""
    forced: bool = False


@dataclass
class Remembered:
    fingerprint: str
    status: int
    body: dict
    expires_wall_ns: int


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before for a different request."""


class LockerControl:
    def __init__(
        self,
        config: GatewayConfig,
        pipeline: Pipeline,
        durable_log: DurableLog,
        arrival: Callable[[], Arrival],
        *,
        publish: Publish | None = None,
        serial_request: SerialRequest | None = None,
    ) -> None:
        self.config = config
        self.pipeline = pipeline
        self.stage = pipeline.lockers
        self.log = durable_log
        self.arrival = arrival
        self.publish = publish
        self.serial_request = serial_request
        self.confirm_timeout_s = config.lockers.open_confirm_timeout_s
        self.ttl_ns = int(config.lockers.idempotency_ttl_s * 1e9)
        self.remembered: dict[str, Remembered] = {}
        self.in_flight: dict[str, asyncio.Future[tuple[int, dict]]] = {}
        self.tasks: set[asyncio.Task] = set()

    # --- state ---------------------------------------------------------------------------------------

    def restore(self, state: dict[str, bytes]) -> None:
        data = state.get(IDEMPOTENCY_STATE_KEY)
        if data is None:
            return
        now = time.time_ns()
        for key, r in orjson.loads(data).items():
            if r["expires_wall_ns"] > now:
                self.remembered[key] = Remembered(r["fingerprint"], r["status"], r["body"], r["expires_wall_ns"])

    def _state(self, now_wall_ns: int) -> bytes:
        live = {k: r for k, r in self.remembered.items() if r.expires_wall_ns > now_wall_ns}
        if len(live) > MAX_REMEMBERED:
            live = dict(sorted(live.items(), key=lambda kv: kv[1].expires_wall_ns)[-MAX_REMEMBERED:])
        self.remembered = live
        return orjson.dumps({k: r.__dict__ for k, r in live.items()})

    # --- the open ------------------------------------------------------------------------------------

    def banks(self) -> dict[str, BankSpec]:
        return {s.bank: s for s in self.stage.specs.values()}

    async def open(self, req: OpenRequest, render: Render) -> tuple[int, dict]:
        """The HTTP answer (status, body) to an open request; `render` maps a result to it. The work
        runs as its own task: a caller that goes away does not stop an open already under way from
        being confirmed, audited and remembered."""
        slot = f"{req.actor}|{req.idempotency_key}" if req.idempotency_key else None
        if slot is None:
            return await asyncio.shield(self._start(self._run(req, render, None)))
        seen = self.remembered.get(slot)
        if seen is not None and seen.expires_wall_ns > time.time_ns():
            if seen.fingerprint != req.fingerprint():
                raise IdempotencyConflict(req.idempotency_key)
            return seen.status, seen.body
        running = self.in_flight.get(slot)
        if running is not None:
            status, body = await asyncio.shield(running)
            if self.remembered[slot].fingerprint != req.fingerprint():
                raise IdempotencyConflict(req.idempotency_key)
            return status, body
        task = self._start(self._run(req, render, slot))
        self.in_flight[slot] = task
        task.add_done_callback(lambda _t: self.in_flight.pop(slot, None))
        return await asyncio.shield(task)

    def _start(self, work: Coroutine[Any, Any, tuple[int, dict]]) -> asyncio.Task[tuple[int, dict]]:
        """A task that outlives its caller, held here until done (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _run(self, req: OpenRequest, render: Render, slot: str | None) -> tuple[int, dict]:
        result = await self._open(req)
        status, body = render(result)
        await self._record(req, result, status, body, slot)
        return status, body

    async def _open(self, req: OpenRequest) -> OpenResult:
        spec = self.banks().get(req.bank)
        if spec is None:
            return OpenResult("unknown_bank", req.bank, req.compartment)
        where = spec.locate(req.compartment)
        if where is None:
            return OpenResult("unknown_compartment", req.bank, req.compartment)
        board, lock = where
        txn = uuid.uuid4().hex
        arrival = self.arrival()
        outcome = self.stage.command(
            spec.device_id,
            CommandKind.OPEN,
            board,
            lock,
            arrival.mono_ns,
            req.actor,
            force=req.force,
            transaction_id=txn,
        )
        if outcome.status is not CommandStatus.ACCEPTED:
            await self._commit(outcome.drafts, arrival)
            refused = {
                CommandStatus.REFUSED_PENDING: "refused_pending",
                CommandStatus.REFUSED_OUT_OF_SERVICE: "refused_out_of_service",
            }.get(outcome.status, "unknown_compartment")
            return OpenResult(refused, req.bank, req.compartment)
        resolved: asyncio.Future[Resolution] = asyncio.get_running_loop().create_future()
        unwatch = self.stage.watch(txn, lambda r: resolved.done() or resolved.set_result(r))
        deadline = time.monotonic() + self.confirm_timeout_s  # the bank's own timer started at `arrival`
        try:
            # D1/D10: "requested" and the pending state are durable before the command is sent
            await self._commit(outcome.drafts, arrival)
            await self._send(spec, board, lock, req.compartment, txn, deadline)
            remaining = max(0.0, deadline - time.monotonic())
            try:
                resolution = await asyncio.wait_for(asyncio.shield(resolved), remaining)
            except TimeoutError:
                now = self.arrival()
                await self._commit(self.stage.give_up_waiting(spec.device_id, board, lock, txn, now.mono_ns), now)
                resolution = resolved.result() if resolved.done() else Resolution("unconfirmed", "", None)
        finally:
            unwatch()
        name = {"confirmed": "opened", "failed": "failed", "not_opened": "failed"}.get(
            resolution.outcome, "unconfirmed"
        )
        return OpenResult(
            name, req.bank, req.compartment, txn, resolution.latency_ms, resolution.detail, forced=req.force
        )

    async def _send(self, spec: BankSpec, board: int, lock: int, number: int, txn: str, deadline: float) -> None:
        """Put the open on the wire. A failure to send is not retried (a second pulse could open the
        door twice): the wait that follows then ends unconfirmed."""
        timeout = max(0.05, deadline - time.monotonic())
        try:
            if spec.transport == "mqtt":
                if self.publish is None or spec.command_topic is None:
                    raise RuntimeError("no MQTT connection to send the open command on")
                stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
                doc = {
                    "message_id": f"sdgw-{txn}",
                    "transaction_id": txn,
                    "action": "open_compartment",
                    "timestamp": stamp,
                    "data": {"compartment_number": number},
                }
                await asyncio.wait_for(self.publish(spec.command_topic, orjson.dumps(doc)), timeout)
                return
            if self.serial_request is None:
                raise RuntimeError("the serial request path is not available")
            frame = (lock8a.encode_unlock if spec.family == "lock8a" else kerong.encode_unlock)(board, lock)
            reply = await self.serial_request(spec.device_id, frame, timeout_s=timeout)
            self._kerong_reply(spec, board, lock, txn, reply)
        except (TimeoutError, OSError, RuntimeError, LookupError) as exc:
            log.warning("open of %s/%d: command not confirmed sent: %s", spec.bank, number, exc or type(exc).__name__)

    def _kerong_reply(self, spec: BankSpec, board: int, lock: int, txn: str, reply: bytes) -> None:
        """A Kerong board answers an unlock with its status after the lock reacted: a door still shut
        there is a definite failure (the pipeline's own pass over the frame already confirms an open one)."""
        if spec.family != "kerong":
            return
        events = kerong.decode(reply, received_ns=0, feedback=spec.feedback)
        if isinstance(events, list):
            for ev in events:
                if isinstance(ev, LockStatus) and (ev.board, ev.lock) == (board, lock) and not ev.door_open:
                    now = self.arrival()
                    drafts = self.stage.unlock_failed(spec.device_id, board, lock, txn, now.mono_ns)
                    batch = self.pipeline.locker_batch(drafts, now)
                    if batch is not None:
                        self.log.submit(batch, lambda _result: None)

    async def _commit(self, drafts: list[RecordDraft], arrival: Arrival) -> None:
        batch = self.pipeline.locker_batch(drafts, arrival)
        if batch is not None:
            await self.log.append(batch)

    async def _record(self, req: OpenRequest, result: OpenResult, status: int, body: dict, slot: str | None) -> None:
        """The audit record and the idempotency entry, committed before the answer leaves."""
        arrival = self.arrival()
        spec = self.banks().get(req.bank)
        drafts = []
        if spec is not None:
            bank = self.stage.banks[spec.device_id]
            tags = {**bank.base_tags, "bank": spec.bank, "compartment": str(req.compartment)}
            fields = {
                "action": "remote_open",
                "actor": req.actor,
                "reason": req.reason,
                "outcome": result.outcome,
                "http_status": status,
                "is_forced": req.force,
            }
            if result.transaction_id:
                fields["transaction_id"] = result.transaction_id
            drafts.append(
                RecordDraft("locker_audit", tags, fields, None, mono_ns=arrival.mono_ns, klass=RecordClass.AUDIT)
            )
        batch = self.pipeline.locker_batch(drafts, arrival, always=True)
        assert batch is not None
        if slot is not None:
            wall = time.time_ns()
            self.remembered[slot] = Remembered(req.fingerprint(), status, body, wall + self.ttl_ns)
            batch.state[IDEMPOTENCY_STATE_KEY] = self._state(wall)
        await self.log.append(batch)
