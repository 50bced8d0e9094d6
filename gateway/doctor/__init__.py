"""`sdgw doctor -c FILE`: a technician's pass/fail list of everything the gateway depends on, each
failure with its fix — the config, each serial port, the broker, each InfluxDB sink, the clock and
the disk under the log. The probes run concurrently, so the whole run takes about as long as the
slowest serial port's wait for bytes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.doctor.broker_probe import DEFAULT_ACL_FILE
from gateway.doctor.report import Check, Status, failed, passed, render_table

__all__ = ["Check", "Status", "render_table", "run_doctor"]


def check_config(path: Path) -> tuple[Check, GatewayConfig | None]:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        problems = "; ".join(f"{p.key}: expected {p.expected}; found {p.found}" for p in exc.problems)
        return failed("config", f"{len(exc.problems)} problem(s) in {exc.path}: {problems}", f"edit {exc.path}"), None
    serial = sum(1 for d in cfg.devices if d.transport == "serial")
    detail = (
        f"{path}: gateway {cfg.gateway.id} on {cfg.gateway.street}, {len(cfg.devices)} device(s) "
        f"({serial} serial), {len(cfg.sinks)} sink(s)"
    )
    return passed("config", detail), cfg


async def _probes(cfg: GatewayConfig, serial_wait_s: float, acl_file: Path | None) -> list[Check]:
    from gateway.doctor.broker_probe import probe_broker
    from gateway.doctor.host_probe import check_clock, check_disk, check_skew
    from gateway.doctor.influx_probe import probe_sink
    from gateway.doctor.serial_probe import probe_serial

    serial = [probe_serial(d, serial_wait_s) for d in cfg.devices if d.transport == "serial"]
    sinks = [probe_sink(s) for s in cfg.sinks]
    results = await asyncio.gather(probe_broker(cfg, acl_file), *serial, *sinks)
    broker, serial_results, sink_results = results[0], results[1 : 1 + len(serial)], results[1 + len(serial) :]
    checks: list[Check] = [c for group in serial_results for c in group]
    checks += broker
    skews: dict[str, float] = {}
    for sink, (sink_checks, skew) in zip(cfg.sinks, sink_results, strict=True):
        checks += sink_checks
        if skew is not None:
            skews[sink.name] = skew
    checks += [check_clock(cfg), check_skew(skews), check_disk(cfg)]
    return checks


def run_doctor(path: Path, *, serial_wait_s: float = 5.0, acl_file: Path | None = DEFAULT_ACL_FILE) -> list[Check]:
    """Every check, in order: config first (nothing else runs without it), then the probes."""
    first, cfg = check_config(path)
    if cfg is None:
        return [first]
    return [first, *asyncio.run(_probes(cfg, serial_wait_s, acl_file))]


def has_failures(checks: list[Check]) -> bool:
    return any(c.status is Status.FAIL for c in checks)
