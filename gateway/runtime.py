"""The supervisor: one TaskGroup, start-up and shutdown order.

Start: open the log (recovering a torn tail), start the clock monitor, the sinks, then the MQTT
source. Stop (SIGTERM/SIGINT): stop reading MQTT, let the log commit what is in flight, send those
PUBACKs, DISCONNECT (decisions.md D4), then stop the sinks and close the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from datetime import UTC, datetime

import orjson

from gateway import __version__
from gateway.clock import ClockSource, clock_for
from gateway.clock_monitor import ClockMonitor
from gateway.config import GatewayConfig, MqttConfig, read_secret
from gateway.lockers_control import LockerControl
from gateway.log.schema import RecordClass
from gateway.log.store import AppendBatch, AppendResult, DurableLog, NewRecord
from gateway.pipeline import Pipeline
from gateway.serial_ingest import SerialIngest, serial_ingests
from gateway.sinks.lineproto import encode_head
from gateway.sinks.runner import SinkRunner, runners_for
from gateway.sources.http_push import HttpPushIngest
from gateway.sources.mqtt_client import AckToken, InboundMessage, MqttClient, MqttMessageSpec, MqttOptions
from gateway.watchdog import SystemdNotifier

log = logging.getLogger("sdgw.runtime")


def status_topic(config: GatewayConfig) -> str:
    g = config.gateway
    return f"sdgw/{g.district}/{g.street}/{g.id}/status"


def _rfc3339(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _status(state: str, since_ns: int) -> bytes:
    return orjson.dumps({"state": state, "since": _rfc3339(since_ns), "version": __version__})


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    if not cfg.tls.enabled:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
    if cfg.tls.cert_file:
        ctx.load_cert_chain(str(cfg.tls.cert_file), str(cfg.tls.key_file) if cfg.tls.key_file else None)
    if cfg.tls.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class MqttIngest:
    """Glue between the MQTT client and the log: a chunk's messages → one append → its PUBACKs."""

    def __init__(self, pipeline: Pipeline, durable_log: DurableLog, monitor: ClockMonitor) -> None:
        self.pipeline = pipeline
        self.log = durable_log
        self.monitor = monitor
        self.client: MqttClient | None = None
        self.in_flight = 0
        self.append_errors = 0

    def on_batch(self, messages: list[InboundMessage], token: AckToken) -> None:
        batch = self.pipeline.mqtt_batch(messages, self.monitor.arrival())
        self.in_flight += 1
        self.log.submit(batch, lambda result: self._committed(result, token, batch))

    def _committed(self, result: AppendResult | BaseException, token: AckToken, batch: AppendBatch) -> None:
        self.in_flight -= 1
        if isinstance(result, BaseException):
            # Not committed: no PUBACK, so the broker redelivers after the reconnect we force, and
            # the counter state forgets these reports so that their redelivery counts. (The log
            # fails every batch of the failed group commit; a batch built on this one that commits
            # in a later group would still carry its effects — that needs a write error followed at
            # once by a successful commit, and is left at that.)
            self.append_errors += 1
            self.pipeline.roll_back_counters()
            log.error("append failed, messages left unacknowledged: %s", result)
            if self.client is not None:
                self.client.reconnect("log append failed")
            return
        self.pipeline.counters_committed(batch)
        assert self.client is not None
        self.client.ack(token)


class Gateway:
    def __init__(self, config: GatewayConfig, *, clock_source: ClockSource | None = None) -> None:
        self.config = config
        c = config.log
        self.log = DurableLog(
            config.log_path,
            sinks=[s.name for s in config.sinks],
            cap_bytes=c.cap_bytes,
            pause_ratio=c.pause_ratio,
            resume_ratio=c.resume_ratio,
            batch_max_records=c.batch_max_records,
            commit_interval_s=c.commit_interval_s,
            dead_letter_cap=c.dead_letter_cap,
            prune_interval_s=c.prune_interval_s,
        )
        self.clock_source = clock_source or clock_for(
            config.clock.sync_check, str(config.clock.flag_file) if config.clock.flag_file else None
        )
        self.pipeline = Pipeline(config)
        self.sinks: list[SinkRunner] = []
        self.mqtt: MqttClient | None = None
        self.monitor: ClockMonitor | None = None
        self.ingest: MqttIngest | None = None
        self.serial: list[SerialIngest] = []
        self.push: HttpPushIngest | None = None  # devices pushing over HTTP (served by the API)
        self.started_mono = time.monotonic()
        self._stop = asyncio.Event()
        self.notifier = SystemdNotifier()
        self.lockers: LockerControl | None = None  # remote open of this gateway's locker banks

    def request_stop(self) -> None:
        self._stop.set()

    async def serial_request(self, device_id: str, request: bytes, *, timeout_s: float) -> bytes:
        """Send `request` to a polled serial device ahead of its routine polls and return the frame
        that answers it (its model's matcher decides); the frame also goes through the pipeline like
        a polled answer. It goes out as soon as the request in flight on its bus has ended. TimeoutError
        when no answer came within `timeout_s` of writing it; gateway.sources.poller.RequestNotSent (a
        TimeoutError) when it could not be written within `timeout_s` (port closed, bus busy): then it
        never is. LookupError: not a polled serial device of this gateway."""
        for ingest in self.serial:
            if ingest.poller is not None and device_id in ingest.poller.devices:
                return await ingest.poller.request(device_id, request, timeout_s=timeout_s)
        raise LookupError(f"{device_id!r} is not a polled serial device of this gateway")

    def _mqtt_client(self) -> MqttClient:
        cfg = self.config.mqtt
        assert cfg is not None and self.ingest is not None
        now = time.time_ns()
        topic = status_topic(self.config)
        options = MqttOptions(
            host=cfg.host,
            port=cfg.port,
            client_id=self.config.mqtt_client_id,
            username=cfg.username,
            password=read_secret(file=cfg.password_file, env="SDGW_MQTT_PASSWORD", what="mqtt.password_file"),
            ssl=tls_context(cfg),
            keepalive_s=cfg.keepalive_s,
            session_expiry_s=cfg.session_expiry_s,
            receive_max=cfg.receive_max,
            max_packet_bytes=cfg.max_packet_bytes,
            subscriptions=tuple((t, 1) for t in self.pipeline.router.subscriptions()),
            will=MqttMessageSpec(topic, _status("offline", now), qos=1, retain=True),
            birth=MqttMessageSpec(topic, _status("online", now), qos=1, retain=True),
            reconnect_max_s=cfg.reconnect_max_s,
        )
        return MqttClient(options, self.ingest.on_batch, logger=logging.getLogger("sdgw.mqtt"))

    async def _heartbeat(self) -> None:
        g = self.config.gateway
        tags = {"district": g.district, "street": g.street, "gateway": g.id}
        assert self.monitor is not None
        while True:  # one at start (the district sees the gateway at once), then every heartbeat_s
            arrival = self.monitor.arrival()
            fields: dict = {
                "uptime_s": int(time.monotonic() - self.started_mono),
                "log_bytes": self.log.stats.used_bytes,
                "clock_synchronised": self.monitor.synchronised,
                "dead_letters": self.log.stats.dead_letters,
            }
            for sink in self.sinks:
                fields[f"pending_{sink.name}"] = self.log.pending_count(sink.name)
            rec = NewRecord(
                "gateway_health", encode_head("gateway_health", tags, fields), None, None, RecordClass.HEALTH
            )
            if arrival.wall_trusted:
                rec.ts_ns = arrival.wall_ns
            else:
                rec.mono_ns = arrival.mono_ns
            await self.log.append(AppendBatch(records=[rec], boot_id=arrival.boot_id))
            await asyncio.sleep(self.config.status.heartbeat_s)

    def health(self) -> dict:
        """The gateway's own state for /v1/health (no key needed: no secrets, no identifiers)."""
        reasons: list[str] = []
        sinks = {}
        for sink in self.sinks:
            st = sink.stats
            sinks[sink.name] = {
                "healthy": st.healthy,
                "pending": self.log.pending_count(sink.name),
                "last_error": st.last_error,
            }
            if not st.healthy:
                reasons.append(f"sink {sink.name}: {st.last_error}")
        sources = {}
        if self.mqtt is not None:
            sources["mqtt"] = {"connected": self.mqtt.connected, "paused": self.log.paused}
            if not self.mqtt.connected:
                reasons.append("MQTT broker not connected")
        for ingest in self.serial:
            ps = ingest.port.stats
            for device in ingest.devices:
                source: dict = {"open": ps.is_open, "frames": ps.frames, "rejects": ps.rejects}
                if ingest.poller is not None:
                    poll = ingest.poller.stats[device.id]
                    source["poll"] = {
                        "answering": poll.answering,
                        "requests": poll.requests,
                        "answers": poll.answers,
                        "timeouts": poll.timeouts,
                        "mismatched": poll.mismatched,
                    }
                    if poll.answering is False:
                        reasons.append(f"serial device {device.id} not answering")
                sources[f"serial:{device.id}"] = source
            if not ps.is_open:
                reasons.append(f"serial port of {ingest.name} not open")
        if self.push is not None:
            for device_id, st in self.push.stats.items():
                sources[f"http:{device_id}"] = {
                    "accepted": st.accepted,
                    "rejected": st.rejected,
                    "refused": st.refused,
                    "auth_failures": st.auth_failures,
                    "last_seen": _rfc3339(st.last_seen_wall_ns) if st.last_seen_wall_ns else None,
                }
        if self.log.paused:
            reasons.append("log at its cap: MQTT intake paused")
        clock = {
            "synchronised": self.monitor.synchronised if self.monitor else False,
            "wall_time_trusted": self.monitor.wall_trusted if self.monitor else False,
        }
        if not clock["wall_time_trusted"]:
            reasons.append("clock not yet synchronised: records are held")
        return {
            "healthy": not reasons,
            "reasons": reasons,
            "gateway": self.config.gateway.id,
            "uptime_s": int(time.monotonic() - self.started_mono),
            "sources": sources,
            "sinks": sinks,
            "log": {
                "used_bytes": self.log.stats.used_bytes,
                "cap_bytes": self.log.cap_bytes,
                "paused": self.log.paused,
            },
            "clock": clock,
        }

    async def _processor_ticks(self) -> None:
        """Timers of the state machines (RFID departures and dwell summaries)."""
        assert self.monitor is not None
        while True:
            await asyncio.sleep(1.0)
            batch = self.pipeline.rfid_tick(self.monitor.arrival())
            if batch is not None:
                await self.log.append(batch)
            batch = self.pipeline.locker_tick(self.monitor.arrival())  # door left open, open unconfirmed
            if batch is not None:
                await self.log.append(batch)

    def _on_pressure(self, paused: bool) -> None:
        if self.mqtt is not None:
            (self.mqtt.pause if paused else self.mqtt.resume)()

    async def _serve_api(self) -> None:
        from gateway.api.app import build_context, create_app
        from gateway.api.server import serve
        from gateway.metrics import gateway_registry

        ctx = build_context(
            self.config,
            mode="gateway",
            local_health=self.health,
            registry=gateway_registry(self),
            lockers=self.lockers,
            push=self.push,
        )
        from gateway.status_page import StatusSource

        api = self.config.api
        app = create_app(ctx)
        app.state.status_source = StatusSource(self)  # GET /status, the technician's page
        log.warning("API listening on http://%s:%d", api.host, api.port)
        await serve(app, api.host, api.port)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        self.log.open(loop)
        c = self.config.clock
        self.monitor = ClockMonitor(self.clock_source, self.log, poll_s=c.poll_s, jump_threshold_s=c.jump_threshold_s)
        self.pipeline.restore_state(self.log.initial_state, self.monitor.boot_id, self.monitor.arrival().mono_ns)
        self.sinks = [*runners_for(self.config, self.log)]
        self.ingest = MqttIngest(self.pipeline, self.log, self.monitor)
        if self.config.mqtt is not None:
            self.mqtt = self._mqtt_client()
            self.ingest.client = self.mqtt
            self.log.on_pressure(self._on_pressure)
            if self.log.paused:
                self.mqtt.pause()
        self.serial = serial_ingests(self.config.devices, self.pipeline, self.log, self.monitor)
        if any(d.transport == "http" for d in self.config.devices):
            self.push = HttpPushIngest.for_devices(self.config.devices, self.pipeline, self.log, self.monitor)
        if self.pipeline.lockers.banks:
            mqtt = self.mqtt
            self.lockers = LockerControl(
                self.config,
                self.pipeline,
                self.log,
                self.monitor.arrival,
                publish=(lambda topic, payload: mqtt.publish(topic, payload, qos=1)) if mqtt is not None else None,
                serial_request=getattr(self, "serial_request", None),  # the serial poll loop's request path
            )
            self.lockers.restore(self.log.initial_state)
        log.warning("gateway %s starting (log %s)", self.config.gateway.id, self.config.log_path)
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self.monitor.run(), name="clock-monitor")]
                tasks += [tg.create_task(s.run(), name=f"sink-{s.name}") for s in self.sinks]
                tasks.append(tg.create_task(self._heartbeat(), name="heartbeat"))
                tasks.append(tg.create_task(self._processor_ticks(), name="processor-ticks"))
                if self.mqtt is not None:
                    tasks.append(tg.create_task(self.mqtt.run(), name="mqtt"))
                tasks += [tg.create_task(s.run(), name=f"serial-{s.name}") for s in self.serial]
                if self.config.api.enabled:
                    tasks.append(tg.create_task(self._serve_api(), name="api"))
                # systemd (Type=notify, WatchdogSec=): ready once every task exists; the keep-alive
                # is an asyncio task, so a stuck event loop stops feeding it (gateway/watchdog.py)
                tasks.append(tg.create_task(self.notifier.feed(), name="watchdog"))
                self.notifier.ready(f"gateway {self.config.gateway.id} running")
                await self._stop.wait()
                log.warning("gateway stopping")
                self.notifier.stopping()
                if self.mqtt is not None:
                    await self.mqtt.shutdown(timeout_s=5.0)
                for t in tasks:
                    t.cancel()
        finally:
            await self.log.aclose()
            log.warning("gateway stopped")
