"""Watches the clock seam (decisions.md D7–D8) and tells the pipeline whether wall time may be used.

At the first synchronisation of this boot it commits the boot's (boot id, offset) so that records
held with monotonic time are released with their true time. After that, wall time stays in use if
synchronisation is lost (drift is seconds per hour), reported in health and metrics. A jump of the
clock (wall − monotonic moving by more than the threshold) is logged and counted, never hidden.
"""

from __future__ import annotations

import asyncio
import logging

from gateway.clock import ClockReading, ClockSource
from gateway.log.store import DurableLog
from gateway.pipeline import Arrival

log = logging.getLogger("sdgw.clock")


class ClockMonitor:
    def __init__(self, source: ClockSource, durable_log: DurableLog, *, poll_s: float, jump_threshold_s: float):
        self.source = source
        self.log = durable_log
        self.poll_s = poll_s
        self.jump_threshold_ns = int(jump_threshold_s * 1e9)
        first = source()
        self.boot_id = first.boot_id
        self.synchronised = first.synchronised
        # Already synchronised earlier in this boot (a restart of the gateway)? Then wall time is good.
        self.offset_ns: int | None = durable_log.clock_offset(first.boot_id)
        self.wall_trusted = self.offset_ns is not None
        self.jumps = 0
        self.sync_losses = 0

    def arrival(self) -> Arrival:
        r: ClockReading = self.source()
        return Arrival(r.wall_ns, r.mono_ns, r.boot_id, self.wall_trusted)

    async def check(self) -> None:
        r = self.source()
        if r.synchronised and not self.wall_trusted:
            offset = r.wall_ns - r.mono_ns
            released = await self.log.resolve_clock(r.boot_id, offset, r.wall_ns)
            self.offset_ns = offset
            self.wall_trusted = True
            log.warning("clock synchronised: %d held records released with their true time", released)
        elif self.wall_trusted and self.offset_ns is not None:
            drift = (r.wall_ns - r.mono_ns) - self.offset_ns
            if abs(drift) > self.jump_threshold_ns:
                self.jumps += 1
                log.warning("wall clock jumped by %.3f s against monotonic time", drift / 1e9)
                self.offset_ns = r.wall_ns - r.mono_ns
        if self.synchronised and not r.synchronised:
            self.sync_losses += 1
            log.warning("clock synchronisation lost; keeping wall time (drift is small)")
        elif not self.synchronised and r.synchronised and self.sync_losses:
            log.warning("clock synchronisation back")
        self.synchronised = r.synchronised

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self.poll_s)
