"""The durable log's tables and the record classes they hold.

One SQLite file in WAL mode (decisions.md D2). `records` ids come from AUTOINCREMENT so an id is
never reused after pruning: a sink's cursor is simply the last id it delivered.
"""

from __future__ import annotations

import enum

SCHEMA_VERSION = 1


class RecordClass(enum.IntEnum):
    """What the cap policy may do with a record (D5)."""

    TELEMETRY = 0  # may be compacted, then dropped (oldest first) at the cap
    HEALTH = 1  # the gateway's own heartbeat: telemetry for the cap's purposes
    ALARM = 2  # never compacted or dropped
    COMMAND = 3  # never compacted or dropped
    AUDIT = 4  # never compacted or dropped


DROPPABLE = (RecordClass.TELEMETRY, RecordClass.HEALTH)

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT UNIQUE,          -- (device, device time[, index]); NULL = at-least-once
    class INTEGER NOT NULL,
    measurement TEXT NOT NULL,
    head BLOB NOT NULL,            -- line protocol without the timestamp
    ts_ns INTEGER NOT NULL
);
-- Records made before the clock was synchronised in their boot (D8): resolved into `records`
-- once that boot commits its clock offset; kept and counted otherwise.
CREATE TABLE IF NOT EXISTS waiting_clock (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    identity TEXT UNIQUE,
    class INTEGER NOT NULL,
    measurement TEXT NOT NULL,
    head BLOB NOT NULL,
    boot_id TEXT NOT NULL,
    mono_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS waiting_clock_boot ON waiting_clock (boot_id);
CREATE TABLE IF NOT EXISTS clock_offsets (
    boot_id TEXT PRIMARY KEY,
    offset_ns INTEGER NOT NULL,    -- wall = mono + offset, fixed at the boot's first synchronisation
    at_wall_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, last_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns INTEGER NOT NULL,
    origin TEXT NOT NULL,          -- "device:<id>" or "sink:<name>"
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
