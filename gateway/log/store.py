"""The durable log: every record the gateway made, until every sink has delivered it.

Design (decisions.md D1, D2, D5, D6):
- One writer thread owns the write connection. The event loop hands it operations; it takes
  everything queued (up to `batch_max_records`) into ONE transaction, commits with
  `synchronous=FULL`, then reports back to the loop. This is group commit without a timer: while
  one fsync runs, the next batch gathers, so the batch grows with the load and an idle gateway
  commits a lone message at once. An fsync never blocks the event loop.
- Records, processor state and dead letters of one source batch commit together; the MQTT source
  acknowledges only from the completion callback.
- A record's identity is UNIQUE and appends are INSERT OR IGNORE: a redelivered message does not
  make a second record (counted as a duplicate).
- Recovery of a torn tail is SQLite's own WAL recovery: frames after the last commit frame, or with
  a bad checksum, are ignored on open. We add nothing that could refuse to start.
- The cap (D5) counts used pages plus the WAL. Pausable sources (MQTT) are paused above
  `pause_ratio × cap` and resumed below `resume_ratio × cap`; when an unpausable append (serial)
  takes the log past the cap, room is made by compaction, then by dropping the oldest telemetry,
  then the oldest dead letters — never alarms, commands or audit records. All counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gateway.errors import LogClosed  # defined there, raised and re-exported here
from gateway.log import compaction
from gateway.log.schema import DDL, DROPPABLE, SCHEMA_VERSION, RecordClass

log = logging.getLogger("sdgw.log")


@dataclass(slots=True)
class NewRecord:
    """A record ready for the log: line protocol without timestamp, plus its time.

    Exactly one of `ts_ns` (wall time, ns) or `mono_ns` (monotonic ns of this boot, while the clock
    is not yet trusted) is set."""

    measurement: str
    head: bytes
    ts_ns: int | None
    identity: str | None = None
    klass: RecordClass = RecordClass.TELEMETRY
    mono_ns: int | None = None


@dataclass(slots=True)
class DeadLetter:
    origin: str
    reason: str
    detail: str
    raw: bytes
    at_ns: int = 0


@dataclass(slots=True)
class AppendBatch:
    records: list[NewRecord] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    boot_id: str = ""  # for records with mono_ns
    pausable: bool = True  # False for sources that cannot stop (serial): the cap makes room


@dataclass(slots=True)
class AppendResult:
    appended: int
    duplicates: int
    waiting_clock: int


@dataclass(slots=True)
class PendingRecord:
    id: int
    head: bytes
    ts_ns: int


@dataclass
class LogStats:
    """Counters the metrics layer reads; the per-class compaction/drop counts are also persisted."""

    commits: int = 0
    records_appended: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    commit_batch_sizes: list[int] = field(default_factory=list)  # drained by the metrics layer
    commit_seconds: list[float] = field(default_factory=list)
    used_bytes: int = 0
    paused: bool = False
    last_id: int = 0
    cursors: dict[str, int] = field(default_factory=dict)


_STOP = object()


class _Op:
    __slots__ = ("callback", "kind", "payload", "size")

    def __init__(self, kind: str, payload, callback: Callable | None, size: int = 1) -> None:
        self.kind = kind
        self.payload = payload
        self.callback = callback
        self.size = size


def used_bytes(conn: sqlite3.Connection, path: Path) -> int:
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    try:
        wal = os.stat(f"{path}-wal").st_size
    except FileNotFoundError:
        wal = 0
    return (pages - free) * page_size + wal


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


class DurableLog:
    def __init__(
        self,
        path: Path | str,
        *,
        sinks: Iterable[str] = (),
        cap_bytes: int = 1 << 30,
        pause_ratio: float = 0.9,
        resume_ratio: float = 0.8,
        batch_max_records: int = 2000,
        commit_interval_s: float = 0.02,
        dead_letter_cap: int = 10_000,
        prune_interval_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.sinks = list(sinks)
        self.cap_bytes = cap_bytes
        self.pause_bytes = int(cap_bytes * pause_ratio)
        self.resume_bytes = int(cap_bytes * resume_ratio)
        self.batch_max_records = batch_max_records
        self.commit_interval_s = commit_interval_s
        self._used_checked = 0.0
        self.dead_letter_cap = dead_letter_cap
        self.prune_interval_s = prune_interval_s
        self.stats = LogStats()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None
        self._offsets: dict[str, int] = {}
        self._closed = False
        self._pressure_listeners: list[Callable[[bool], None]] = []
        self._commit_listeners: list[Callable[[], None]] = []
        self._last_prune = 0.0
        self._prune_owed = True
        self._wal_limit = 1 << 24
        self._fatal: BaseException | None = None

    # -- life cycle -------------------------------------------------------------------------------

    def open(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Open (creating or recovering) the file and start the writer thread."""
        self._loop = loop or asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")  # D2: only FULL keeps a commit across power loss
        # Keep the WAL small next to the cap: it counts towards it (D5), and a WAL file keeps its
        # size after a checkpoint unless journal_size_limit truncates it.
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        checkpoint_pages = max(16, min(1000, self.cap_bytes // page_size // 20))
        conn.execute(f"PRAGMA wal_autocheckpoint = {checkpoint_pages}")
        self._wal_limit = 2 * checkpoint_pages * page_size
        conn.execute(f"PRAGMA journal_size_limit = {self._wal_limit}")
        conn.executescript(DDL)
        conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        for sink in self.sinks:
            conn.execute("INSERT OR IGNORE INTO cursors VALUES (?, 0)", (sink,))
        self._offsets = dict(conn.execute("SELECT boot_id, offset_ns FROM clock_offsets"))
        self.stats.last_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0]
        self.stats.cursors = dict(conn.execute("SELECT sink, last_id FROM cursors"))
        self.initial_state: dict[str, bytes] = dict(conn.execute("SELECT key, value FROM state"))
        self.stats.used_bytes = used_bytes(conn, self.path)
        self.stats.paused = self.stats.used_bytes >= self.pause_bytes
        self._conn = conn
        self._thread = threading.Thread(target=self._run, name="sdgw-log-writer", daemon=True)
        self._thread.start()

    async def aclose(self) -> None:
        if self._closed or self._thread is None:
            return
        self._closed = True
        self._q.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def on_pressure(self, listener: Callable[[bool], None]) -> None:
        """listener(True) when pausable sources must stop, (False) when they may resume."""
        self._pressure_listeners.append(listener)

    def on_commit(self, listener: Callable[[], None]) -> None:
        self._commit_listeners.append(listener)

    def clock_offset(self, boot_id: str) -> int | None:
        """The committed (wall − monotonic) offset of `boot_id`, if that boot was ever synchronised."""
        return self._offsets.get(boot_id)

    @property
    def paused(self) -> bool:
        return self.stats.paused

    # -- the loop-side API ------------------------------------------------------------------------

    def submit(self, batch: AppendBatch, callback: Callable[[AppendResult | BaseException], None]) -> None:
        """Queue an append; `callback` runs on the loop after the COMMIT (or with the exception)."""
        if self._closed or self._fatal is not None:
            raise LogClosed(str(self._fatal or "log closed"))
        self._q.put(_Op("append", batch, callback, max(1, len(batch.records))))

    async def append(self, batch: AppendBatch) -> AppendResult:
        return await self._call("append", batch, max(1, len(batch.records)))

    async def advance(self, sink: str, upto_id: int, rejected: list[DeadLetter] | None = None) -> None:
        """Move `sink`'s cursor to `upto_id` (after a 2xx), dead-lettering its rejected lines."""
        await self._call("advance", (sink, upto_id, rejected or []))

    async def resolve_clock(self, boot_id: str, offset_ns: int, at_wall_ns: int) -> int:
        """First synchronisation of `boot_id`: commit its offset and release its waiting records."""
        return await self._call("clock", (boot_id, offset_ns, at_wall_ns))

    async def prune(self) -> int:
        return await self._call("prune", None)

    async def _call(self, kind: str, payload, size: int = 1):
        if self._closed or self._fatal is not None:
            raise LogClosed(str(self._fatal or "log closed"))
        fut = asyncio.get_running_loop().create_future()

        def done(result) -> None:
            if fut.done():
                return
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)

        self._q.put(_Op(kind, payload, done, size))
        return await fut

    def read_pending(
        self, conn: sqlite3.Connection, sink: str, limit: int, after_id: int | None = None
    ) -> list[PendingRecord]:
        """Records after `sink`'s cursor (or after `after_id`), oldest first (call from a worker
        thread, with a connection of its own)."""
        cursor = self.stats.cursors.get(sink, 0) if after_id is None else after_id
        rows = conn.execute(
            "SELECT id, head, ts_ns FROM records WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
        ).fetchall()
        return [PendingRecord(*row) for row in rows]

    def reader(self) -> sqlite3.Connection:
        return connect(self.path, readonly=True)

    def pending_count(self, sink: str) -> int:
        return max(0, self.stats.last_id - self.stats.cursors.get(sink, 0))

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        assert self._conn is not None
        conn = self._conn
        stop = False
        while not stop:
            # A cursor that moved owes a prune: wake for it even when nothing else arrives (with
            # MQTT paused at the cap, the sinks' progress is the only thing that can free room).
            timeout = None
            if self._prune_owed:
                timeout = max(0.0, self._last_prune + self.prune_interval_s - time.monotonic())
            try:
                item = self._q.get(timeout=timeout)
            except queue.Empty:
                item = None
            ops: list[_Op] = []
            size = 0
            # D2's timer: after the first operation, gather for up to `commit_interval_s` (or until
            # the batch is full). Measured by `make bench`: at 1,000 msg/s a commit per message
            # costs ~480 µs of CPU per message, a 20 ms window ~80 µs.
            deadline = time.monotonic() + self.commit_interval_s
            while item is not None:
                if item is _STOP:
                    stop = True
                else:
                    ops.append(item)
                    size += item.size
                if stop or size >= self.batch_max_records:
                    break
                try:
                    remaining = deadline - time.monotonic()
                    item = self._q.get(timeout=remaining) if remaining > 0 else self._q.get_nowait()
                except queue.Empty:
                    break
            if ops:
                try:
                    self._execute(conn, ops)
                except Exception as exc:  # never leave waiters hanging on a dead writer
                    log.exception("log writer failed")
                    self._fatal = exc
                    self._deliver([(op.callback, exc) for op in ops])
            now = time.monotonic()
            if self._prune_owed and now - self._last_prune >= self.prune_interval_s:
                self._last_prune = now
                self._prune_owed = False
                try:
                    self._prune(conn)
                except sqlite3.Error:
                    log.exception("log pruning failed")
        with _suppress_sqlite():
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

    def _execute(self, conn: sqlite3.Connection, ops: list[_Op]) -> None:
        results: list = []
        t0 = time.perf_counter()
        unpausable = False
        appended = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                if op.kind == "append":
                    res = self._apply_append(conn, op.payload)
                    appended += res.appended
                    unpausable |= not op.payload.pausable
                elif op.kind == "advance":
                    res = self._apply_advance(conn, *op.payload)
                elif op.kind == "clock":
                    res = self._apply_clock(conn, *op.payload)
                elif op.kind == "prune":
                    res = self._prune_rows(conn)
                else:  # pragma: no cover - programming error
                    raise ValueError(op.kind)
                results.append(res)
            conn.execute("COMMIT")
        except BaseException as exc:
            with _suppress_sqlite():
                conn.execute("ROLLBACK")
            log.error("log commit failed: %s", exc)
            self._deliver([(op.callback, exc) for op in ops])
            if not isinstance(exc, sqlite3.Error):
                self._fatal = exc
                raise
            return
        elapsed = time.perf_counter() - t0
        st = self.stats
        st.commits += 1
        st.records_appended += appended
        if len(st.commit_batch_sizes) < 10_000:
            st.commit_batch_sizes.append(sum(op.size for op in ops if op.kind == "append"))
            st.commit_seconds.append(elapsed)
        if any(op.kind in ("append", "clock") for op in ops):
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
            st.last_id = row[0] if row else 0
        # the size check costs three PRAGMAs and a stat: at most every 50 ms, and always when an
        # unpausable append may have crossed the cap
        now = time.monotonic()
        if not unpausable and now - self._used_checked < 0.05:
            self._deliver([(op.callback, res) for op, res in zip(ops, results, strict=True)], commit=True)
            return
        self._used_checked = now
        used = used_bytes(conn, self.path)
        if unpausable and used > self.cap_bytes:
            used = self._make_room(conn, used)
        st.used_bytes = used
        self._update_pressure(used)
        self._deliver([(op.callback, res) for op, res in zip(ops, results, strict=True)], commit=True)

    def _deliver(self, pairs: list, commit: bool = False) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        listeners = self._commit_listeners if commit else []

        def run() -> None:
            for cb, res in pairs:
                if cb is not None:
                    cb(res)
            for listener in listeners:
                listener()

        with contextlib.suppress(RuntimeError):  # loop closed during shutdown
            loop.call_soon_threadsafe(run)

    def _apply_append(self, conn: sqlite3.Connection, batch: AppendBatch) -> AppendResult:
        ready = []
        waiting = []
        offset = self._offsets.get(batch.boot_id)
        for r in batch.records:
            if r.ts_ns is not None:
                ready.append((r.identity, int(r.klass), r.measurement, r.head, r.ts_ns))
            elif offset is not None:  # the clock got synchronised while this batch was in flight
                ready.append((r.identity, int(r.klass), r.measurement, r.head, r.mono_ns + offset))
            else:
                waiting.append((r.identity, int(r.klass), r.measurement, r.head, batch.boot_id, r.mono_ns))
        before = conn.total_changes
        if ready:
            conn.executemany(
                "INSERT OR IGNORE INTO records (identity, class, measurement, head, ts_ns) VALUES (?,?,?,?,?)",
                ready,
            )
        if waiting:
            conn.executemany(
                "INSERT OR IGNORE INTO waiting_clock (identity, class, measurement, head, boot_id, mono_ns) "
                "VALUES (?,?,?,?,?,?)",
                waiting,
            )
        appended = conn.total_changes - before
        if batch.state:
            conn.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", batch.state.items())
        if batch.dead_letters:
            self._insert_dead(conn, batch.dead_letters)
        dups = len(ready) + len(waiting) - appended
        self.stats.duplicates += dups
        return AppendResult(appended=appended, duplicates=dups, waiting_clock=len(waiting))

    def _insert_dead(self, conn: sqlite3.Connection, letters: list[DeadLetter]) -> None:
        now = time.time_ns()
        conn.executemany(
            "INSERT INTO dead_letters (at_ns, origin, reason, detail, raw) VALUES (?,?,?,?,?)",
            [(d.at_ns or now, d.origin, d.reason, d.detail[:500], d.raw[:4096]) for d in letters],
        )
        self.stats.dead_letters += len(letters)
        (count,) = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        excess = count - self.dead_letter_cap
        if excess > 0:  # bounded: the oldest go first, counted
            conn.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters ORDER BY id LIMIT ?)",
                (excess,),
            )
            _bump(conn, "dead_letters_dropped_over_cap", excess)

    def _apply_advance(self, conn: sqlite3.Connection, sink: str, upto_id: int, rejected: list[DeadLetter]) -> None:
        conn.execute(
            "INSERT INTO cursors (sink, last_id) VALUES (?, ?) "
            "ON CONFLICT(sink) DO UPDATE SET last_id = MAX(last_id, excluded.last_id)",
            (sink, upto_id),
        )
        if rejected:
            self._insert_dead(conn, rejected)
        self.stats.cursors[sink] = max(self.stats.cursors.get(sink, 0), upto_id)
        self._prune_owed = True

    def _apply_clock(self, conn: sqlite3.Connection, boot_id: str, offset_ns: int, at_wall_ns: int) -> int:
        if boot_id in self._offsets:
            return 0
        conn.execute("INSERT OR IGNORE INTO clock_offsets VALUES (?, ?, ?)", (boot_id, offset_ns, at_wall_ns))
        before = conn.total_changes
        conn.execute(
            "INSERT OR IGNORE INTO records (identity, class, measurement, head, ts_ns) "
            "SELECT identity, class, measurement, head, mono_ns + ? FROM waiting_clock "
            "WHERE boot_id = ? ORDER BY id",
            (offset_ns, boot_id),
        )
        moved = conn.total_changes - before
        conn.execute("DELETE FROM waiting_clock WHERE boot_id = ?", (boot_id,))
        self._offsets[boot_id] = offset_ns
        return moved

    def _prune_rows(self, conn: sqlite3.Connection) -> int:
        if not self.sinks:
            return 0
        placeholders = ",".join("?" * len(self.sinks))
        (low,) = conn.execute(f"SELECT MIN(last_id) FROM cursors WHERE sink IN ({placeholders})", self.sinks).fetchone()
        if not low:
            return 0
        before = conn.total_changes
        conn.execute("DELETE FROM records WHERE id <= ?", (low,))
        return conn.total_changes - before

    def _prune(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._prune_rows(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._shrink_wal(conn)
        used = used_bytes(conn, self.path)
        self.stats.used_bytes = used
        self._update_pressure(used)

    def _shrink_wal(self, conn: sqlite3.Connection) -> None:
        """A WAL file keeps its size after a checkpoint until the next write resets it; the cap
        counts it, so truncate it when it has grown past its limit (a reader may make this a no-op
        until later: harmless)."""
        try:
            wal = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return
        if wal > self._wal_limit:
            # never wait for readers here: the writer thread must not stall on a checkpoint
            conn.execute("PRAGMA busy_timeout = 0")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.execute("PRAGMA busy_timeout = 10000")

    def _update_pressure(self, used: int) -> None:
        st = self.stats
        if not st.paused and used >= self.pause_bytes:
            st.paused = True
            log.warning("log at %d of %d bytes: pausing MQTT intake", used, self.cap_bytes)
            self._notify_pressure(True)
        elif st.paused and used < self.resume_bytes:
            st.paused = False
            log.warning("log down to %d bytes: resuming MQTT intake", used)
            self._notify_pressure(False)

    def _notify_pressure(self, paused: bool) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for listener in self._pressure_listeners:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(listener, paused)

    def _make_room(self, conn: sqlite3.Connection, used: int) -> int:
        """D5 at the cap, for unpausable intake: compact, then drop telemetry, then dead letters."""
        passed = max(self.stats.cursors.get(s, 0) for s in self.sinks) if self.sinks else 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for name, merged in compaction.compact(conn, after_id=passed).items():
                _bump(conn, f"compacted_{name}", merged)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._shrink_wal(conn)
        used = used_bytes(conn, self.path)
        target = self.resume_bytes + (self.cap_bytes - self.resume_bytes) // 2
        step = 500
        while used > target:
            conn.execute("BEGIN IMMEDIATE")
            classes = ",".join(str(int(c)) for c in DROPPABLE)
            ids = [
                r[0]
                for r in conn.execute(f"SELECT id FROM records WHERE class IN ({classes}) ORDER BY id LIMIT ?", (step,))
            ]
            if ids:
                conn.execute(f"DELETE FROM records WHERE id IN ({','.join('?' * len(ids))})", ids)
                _bump(conn, "dropped_telemetry", len(ids))
            else:
                dl = [r[0] for r in conn.execute("SELECT id FROM dead_letters ORDER BY id LIMIT ?", (step,))]
                if not dl:
                    conn.execute("COMMIT")
                    log.error("log over its cap with only protected records left (%d bytes)", used)
                    break
                conn.execute(f"DELETE FROM dead_letters WHERE id IN ({','.join('?' * len(dl))})", dl)
                _bump(conn, "dropped_dead_letters", len(dl))
            conn.execute("COMMIT")
            self._shrink_wal(conn)  # deletions grow the WAL, which counts
            used = used_bytes(conn, self.path)
        return used


def _bump(conn: sqlite3.Connection, name: str, by: int) -> None:
    if by:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )


class _suppress_sqlite:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, sqlite3.Error)
