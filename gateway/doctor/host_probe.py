"""Doctor: the machine itself — the clock (synchronised as the gateway decides it, decisions.md D7,
and its skew against the sinks' clocks) and the disk under the durable log (room for its cap)."""

from __future__ import annotations

import os
import shutil

from gateway.clock import MAXERROR_SYNCED_US, clock_for, kernel_maxerror_us
from gateway.config import GatewayConfig
from gateway.doctor.report import Check, failed, passed, skipped

SKEW_LIMIT_S = 10.0


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def check_clock(config: GatewayConfig) -> Check:
    c = config.clock
    reading = clock_for(c.sync_check, str(c.flag_file) if c.flag_file else None)()
    if c.sync_check == "adjtimex":
        maxerror = kernel_maxerror_us()
        how = f"kernel maxerror {maxerror / 1e6:.1f} s" if maxerror is not None else "adjtimex() unavailable"
    elif c.sync_check == "flag-file":
        how = f"flag file {c.flag_file} {'present' if reading.synchronised else 'absent'}"
    else:
        how = "assumed (sync_check = assume-synced)"
    if reading.synchronised:
        return passed("clock: synchronised", how)
    return failed(
        "clock: synchronised",
        f"not synchronised ({how}; synchronised means below {MAXERROR_SYNCED_US / 1e6:.0f} s): records wait in the "
        "log, unsent, until it is",
        "let the Pi reach a time server: timedatectl set-ntp true; timedatectl timesync-status (or chronyc "
        "tracking); the network must allow NTP (UDP 123)",
    )


def check_skew(skews: dict[str, float]) -> Check:
    if not skews:
        return skipped("clock: skew", "no sink answered with a Date header")
    worst_sink, worst = max(skews.items(), key=lambda kv: abs(kv[1]))
    text = ", ".join(f"{name} {s:+.1f} s" for name, s in skews.items())
    if abs(worst) > SKEW_LIMIT_S:
        return failed(
            "clock: skew",
            f"our clock differs from InfluxDB {worst_sink}'s by {worst:+.1f} s ({text})",
            "one of the two clocks is wrong: check NTP on this Pi (timedatectl) and on the InfluxDB host",
        )
    return passed("clock: skew", f"against the sinks' clocks: {text} (limit ±{SKEW_LIMIT_S:g} s)")


def check_disk(config: GatewayConfig) -> Check:
    log_path = config.log_path
    where = log_path.parent
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not where.is_dir():
        return failed(
            "disk: log",
            f"{where} does not exist",
            f"create it for the service user: install -d -o sdgw -g sdgw -m 750 {where} (install.sh does)",
        )
    if not os.access(where, os.W_OK | os.X_OK):
        return failed("disk: log", f"{where} is not writable by this user", f"chown sdgw:sdgw {where}")
    used = sum(p.stat().st_size for p in where.glob(log_path.name + "*") if p.is_file())
    free = shutil.disk_usage(probe).free
    cap = config.log.cap_bytes
    needed = max(0, cap - used)
    detail = f"{where}: {_size(free)} free; log {_size(used)} of its cap {_size(cap)}"
    if free < needed:
        return failed(
            "disk: log",
            detail + f" — the log can grow {_size(needed)} more than the disk holds",
            f"free space on that file system, or lower [log] cap_bytes to at most {int((used + free) * 0.9)}",
        )
    return passed("disk: log", detail)
