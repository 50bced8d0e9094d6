"""One sink: read what its cursor has not passed, write it to InfluxDB, advance after a 2xx.

Each sink has its own cursor and task, so one InfluxDB being down never holds another back. A batch
goes out when `batch_size` records are pending or the oldest pending has waited `flush_interval_s`.
The answer is classified once (influx_http.classify); lines the server rejects go to dead letters
with its message, and only then does the cursor move past them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from gateway.config import GatewayConfig, SinkConfig, read_secret, sink_env_name
from gateway.log.store import DeadLetter, DurableLog
from gateway.sinks.influx_http import Backoff, Dialect, InfluxTarget, InfluxWriter, deliver
from gateway.sinks.lineproto import LineProtocolError, encode_line

log = logging.getLogger("sdgw.sink")


@dataclass
class SinkStats:
    records_sent: int = 0
    records_rejected: int = 0
    batches: int = 0
    healthy: bool = True
    last_error: str = ""
    unhealthy_since: float | None = None
    last_success_wall_ns: int = 0


def target_for(cfg: SinkConfig) -> InfluxTarget:
    return InfluxTarget(
        name=cfg.name,
        url=cfg.url.rstrip("/"),
        dialect=Dialect(cfg.dialect),
        database=cfg.database,
        retention_policy=cfg.retention_policy,
        org=cfg.org,
        bucket=cfg.bucket,
        username=cfg.username,
        password=read_secret(file=cfg.password_file, env=sink_env_name(cfg.name, "PASSWORD"), what="password_file"),
        token=read_secret(file=cfg.token_file, env=sink_env_name(cfg.name, "TOKEN"), what="token_file"),
        gzip=cfg.gzip,
        timeout_s=cfg.timeout_s,
    )


class SinkRunner:
    def __init__(self, cfg: SinkConfig, durable_log: DurableLog, writer: InfluxWriter | None = None) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.log = durable_log
        self.writer = writer or InfluxWriter(target_for(cfg))
        self.stats = SinkStats()
        self._backoff = Backoff(cap_s=cfg.retry_max_s)
        self._wake = asyncio.Event()
        durable_log.on_commit(self._wake.set)

    def _on_health(self, healthy: bool, reason: str) -> None:
        st = self.stats
        if healthy and not st.healthy:
            outage = time.monotonic() - (st.unhealthy_since or time.monotonic())
            log.warning("sink %s: InfluxDB reachable again after %.1f s", self.name, outage)
            st.unhealthy_since = None
        elif not healthy and st.healthy:
            log.warning("sink %s: InfluxDB unavailable: %s", self.name, reason)
            st.unhealthy_since = time.monotonic()
        st.healthy = healthy
        st.last_error = "" if healthy else reason

    async def _wait_for_batch(self) -> None:
        loop = asyncio.get_running_loop()
        while self.log.pending_count(self.name) == 0:
            self._wake.clear()
            await self._wake.wait()
        deadline = loop.time() + self.cfg.flush_interval_s
        while self.log.pending_count(self.name) < self.cfg.batch_size:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _prepare(self, conn, after_id: int | None) -> tuple[list, list[bytes], list[DeadLetter]]:
        """Read a batch and encode it (in a worker thread: keeps the event loop for intake)."""
        rows = self.log.read_pending(conn, self.name, self.cfg.batch_size, after_id)
        lines: list[bytes] = []
        rejected: list[DeadLetter] = []
        for r in rows:
            try:
                lines.append(encode_line(r.head, r.ts_ns))
            except LineProtocolError as exc:  # a time InfluxDB cannot hold: never sent
                rejected.append(DeadLetter(f"sink:{self.name}", "unencodable", str(exc), r.head))
        return rows, lines, rejected

    async def run(self) -> None:
        conn = self.log.reader()
        prefetched = None
        # The cursor's advance for the batch just sent is committed while the next batch is already
        # on the wire: an advance waits for the log's group-commit window (D2), which would otherwise
        # stall every cycle of a backlog drain. Advances still commit strictly in order, each only
        # after its batch's 2xx.
        advancing: asyncio.Task | None = None
        try:
            while True:
                if prefetched is None:
                    if advancing is not None:  # the cursor must be where the next read starts
                        await advancing
                        advancing = None
                    await self._wait_for_batch()
                    committed_before_read = self.log.stats.last_id
                    rows, lines, rejected = await asyncio.to_thread(self._prepare, conn, None)
                    if not rows:
                        # pending_count counts ids, and compaction leaves gaps: nothing up to what
                        # was committed before the read is left, so the cursor may skip the gap.
                        await self.log.advance(self.name, committed_before_read)
                        continue
                else:
                    rows, lines, rejected = prefetched
                    prefetched = None
                post = (
                    asyncio.create_task(deliver(self.writer, lines, backoff=self._backoff, on_health=self._on_health))
                    if lines
                    else None
                )
                # Draining a backlog: read and encode the next full batch while this one is in
                # flight (the cursor still moves strictly in order, after each 2xx).
                if post is not None and self.log.stats.last_id - rows[-1].id >= self.cfg.batch_size:
                    try:
                        nxt = await asyncio.to_thread(self._prepare, conn, rows[-1].id)
                    except BaseException:
                        post.cancel()
                        raise
                    prefetched = nxt if nxt[0] else None
                report = await post if post is not None else None
                if report is not None:
                    rejected += [
                        DeadLetter(f"sink:{self.name}", "influx_rejected", message, lines[index])
                        for index, message in report.rejected
                    ]
                if advancing is not None:
                    await advancing
                advancing = asyncio.create_task(self.log.advance(self.name, rows[-1].id, rejected))
                st = self.stats
                st.batches += 1
                st.records_sent += report.accepted if report else 0
                st.records_rejected += len(rejected)
                st.last_success_wall_ns = time.time_ns()
        finally:
            if advancing is not None:
                if not advancing.done():
                    advancing.cancel()  # not committed: its batch is sent again, and overwrites itself
                elif not advancing.cancelled():
                    advancing.exception()  # retrieved: a failure here is the log's, reported by it
            conn.close()
            await self.writer.aclose()


def runners_for(config: GatewayConfig, durable_log: DurableLog) -> list[SinkRunner]:
    return [SinkRunner(cfg, durable_log) for cfg in config.sinks]
