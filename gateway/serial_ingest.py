"""Glue between serial ports and the log: one SerialPort per configured path, frames → the pipeline.

Devices configured on the same `port` share one bus (RS-485): one open port, one framer, and the poll
loop (`gateway/sources/poller.py`) that keeps one request in flight and tells the pipeline whose frame
arrived. A port with a streaming device (RDM6300, M100) has no loop: its frames are that device's.
Every read's frames of one device become one unpausable append (decisions.md D5: serial cannot pause).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from devices.events import Reject
from devices.registry import lookup
from gateway.clock_monitor import ClockMonitor
from gateway.config import DeviceConfig
from gateway.log.store import AppendBatch, AppendResult, DurableLog
from gateway.pipeline import Pipeline
from gateway.sources.poller import BusPoller, PolledDevice
from gateway.sources.serial import SerialPort, SerialPortSpec


class SerialIngest:
    """One serial port and the device(s) on it."""

    def __init__(
        self, devices: list[DeviceConfig], pipeline: Pipeline, durable_log: DurableLog, monitor: ClockMonitor
    ) -> None:
        self.devices = devices
        self.device = devices[0]  # the port's first device (names the port in logs and the status page)
        self.by_id = {d.id: d for d in devices}
        self.pipeline = pipeline
        self.log = durable_log
        self.monitor = monitor
        self.append_errors = 0
        model = lookup(self.device.model)
        assert model.framer is not None and model.serial is not None
        settings = model.serial
        if self.device.baudrate or self.device.parity:
            settings = replace(
                settings,
                baudrate=self.device.baudrate or settings.baudrate,
                parity=self.device.parity or settings.parity,
            )
        name = ",".join(d.id for d in devices)
        self.poller: BusPoller | None = None
        if model.bus is None:
            spec = SerialPortSpec(
                name=name,
                path=str(self.device.port),
                settings=settings,
                start_commands=tuple(model.start_commands() if model.start_commands else ()),
                keepalive_s=model.keepalive_s,
                echo=self.device.echo,
            )
            self.port = SerialPort(spec, model.framer, self._stream_frames)
            return
        spec = SerialPortSpec(name=name, path=str(self.device.port), settings=settings, echo=self.device.echo)
        self.port = SerialPort(spec, model.framer, self._bus_frames)
        polled = [
            PolledDevice(
                d.id,
                tuple(model.poll_requests(d.bus_options)),
                model.bus.match,
                model.bus.interval_s if d.poll_interval_s is None else d.poll_interval_s,
                model.bus.timeout_s if d.poll_timeout_s is None else d.poll_timeout_s,
            )
            for d in devices
        ]
        self.poller = BusPoller(
            name, polled, self.port, gap_s=model.bus.gap_s, deliver=self.deliver, on_timeout=self.poll_timeout
        )

    @property
    def name(self) -> str:
        return self.port.spec.name

    def _stream_frames(self, items: list) -> None:
        self.deliver(self.device.id, items)

    def _bus_frames(self, items: list) -> None:
        assert self.poller is not None
        self.poller.on_frames(items)

    def deliver(self, device_id: str, items: list[bytes | Reject]) -> None:
        batch = self.pipeline.serial_batch(self.by_id[device_id], items, self.monitor.arrival())
        self.log.submit(batch, lambda result: self._committed(result, batch))

    def poll_timeout(self, device_id: str, request: bytes) -> None:
        """A routine poll went unanswered: the pipeline's state machines count it (lockers: offline)."""
        batch: AppendBatch | None = self.pipeline.poll_timeout(
            self.by_id[device_id], self.monitor.arrival(), request=request
        )
        if batch is not None:
            self.log.submit(batch, lambda result: self._committed(result, batch))

    def _committed(self, result: AppendResult | BaseException, batch: AppendBatch) -> None:
        if isinstance(result, BaseException):
            # Serial bytes cannot be re-read: counted, logged once per failure burst by the log.
            self.append_errors += 1
            return
        # the counter state this batch carries is durable: an MQTT batch that fails later rolls the
        # counters back to it, never behind a Modbus total already committed
        self.pipeline.counters_committed(batch)

    async def run(self) -> None:
        if self.poller is None:
            await self.port.run()
            return
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.port.run(), name=f"serial-port-{self.name}")
            tg.create_task(self.poller.run(), name=f"serial-poll-{self.name}")


def serial_ingests(
    devices: list[DeviceConfig], pipeline: Pipeline, durable_log: DurableLog, monitor: ClockMonitor
) -> list[SerialIngest]:
    """One SerialIngest per configured path (config checked that devices sharing one can share it)."""
    by_port: dict[str, list[DeviceConfig]] = {}
    for d in devices:
        if d.transport == "serial" and d.port:
            by_port.setdefault(d.port, []).append(d)
    return [SerialIngest(group, pipeline, durable_log, monitor) for group in by_port.values()]
