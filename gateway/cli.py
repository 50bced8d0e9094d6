"""`sdgw`: the gateway's command line (run, config check, buffer stats, devices, decode)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Annotated

import orjson
import typer

from devices.events import Reject
from devices.registry import MODELS, PayloadKind
from gateway.config import ConfigError, GatewayConfig, load_config

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Smart District Gateway")
config_app = typer.Typer(no_args_is_help=True, help="Configuration tools")
buffer_app = typer.Typer(no_args_is_help=True, help="The durable log")
app.add_typer(config_app, name="config")
app.add_typer(buffer_app, name="buffer")


def _mount_api_commands() -> None:
    from gateway.cli_api import api, keys_app

    app.add_typer(keys_app, name="keys")
    app.command("api")(api)


_mount_api_commands()


def _mount_dashboards_commands() -> None:
    from gateway.dashboards.cli import dashboards_app

    app.add_typer(dashboards_app, name="dashboards")


_mount_dashboards_commands()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="the gateway's TOML file")]


def _load(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        typer.echo(f"{len(exc.problems)} problem(s) in {exc.path}:", err=True)
        for p in exc.problems:
            typer.echo(f"  {p.key}: expected {p.expected}; found {p.found}", err=True)
        raise typer.Exit(2) from None


@app.command()
def run(config: ConfigOpt, log_level: str = "INFO") -> None:
    """Run the gateway: MQTT intake, the durable log and the InfluxDB sinks."""
    from gateway.logsetup import setup_logging
    from gateway.runtime import Gateway

    cfg = _load(config)
    setup_logging(log_level)
    asyncio.run(Gateway(cfg).run())


@config_app.command("check")
def config_check(config: ConfigOpt) -> None:
    """Check a config file: every problem with its key, what was found and what was expected."""
    cfg = _load(config)
    typer.echo(
        f"{config}: OK — gateway {cfg.gateway.id} on {cfg.gateway.street}, {len(cfg.devices)} device(s), "
        f"{len(cfg.sinks)} sink(s)"
    )


@app.command()
def doctor(
    config: ConfigOpt,
    json: bool = typer.Option(False, "--json", help="the checks as JSON"),
    serial_wait_s: Annotated[float, typer.Option(help="how long to listen on each serial port")] = 5.0,
    mosquitto_acl: Annotated[str, typer.Option(help="the broker's ACL file, or none")] = "/etc/mosquitto/sdgw/acl",
) -> None:
    """Check everything the gateway needs (config, serial ports, broker, sinks, clock, disk); a fix per failure."""
    from gateway.doctor import has_failures, render_table, run_doctor

    acl = None if mosquitto_acl == "none" else Path(mosquitto_acl)
    checks = run_doctor(config, serial_wait_s=serial_wait_s, acl_file=acl)
    if json:
        typer.echo(orjson.dumps([c.as_dict() for c in checks], option=orjson.OPT_INDENT_2).decode())
    else:
        typer.echo(render_table(checks))
    if has_failures(checks):
        raise typer.Exit(1)


@buffer_app.command("stats")
def buffer_stats(config: ConfigOpt, json: bool = typer.Option(False, "--json")) -> None:
    """Depth and oldest pending age per sink, dead letters by reason, records waiting for a clock."""
    from gateway.log.inspect import buffer_stats as stats

    cfg = _load(config)
    try:
        doc = stats(cfg.log_path, [s.name for s in cfg.sinks])
    except (FileNotFoundError, RuntimeError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if json:
        typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
        return
    typer.echo(f"log {doc['log']}: {doc['records']} records, {doc['used_bytes']} bytes used")
    for name, s in doc["sinks"].items():
        age = "-" if s["oldest_pending_age_s"] is None else f"{s['oldest_pending_age_s']:.1f} s"
        typer.echo(f"  sink {name}: {s['pending']} pending, oldest {age}")
    typer.echo("  dead letters: " + (", ".join(f"{k}={v}" for k, v in doc["dead_letters"].items()) or "none"))
    for boot, w in doc["waiting_for_clock"].items():
        state = "synchronised later" if w["boot_synchronised"] else "never synchronised: kept, not sent"
        typer.echo(f"  waiting for a clock: {w['records']} from boot {boot} ({state})")
    typer.echo(
        "  compaction/drops: " + (", ".join(f"{k}={v}" for k, v in doc["compaction_and_drops"].items()) or "none")
    )


@app.command("pseudonym-keys")
def pseudonym_keys(
    secret_file: Annotated[Path, typer.Option(help="the district's secret (kept at the district, never on a gateway)")],
    out: Annotated[Path, typer.Option(help="the key file to write for one gateway (mode 0600)")],
    start: Annotated[str, typer.Option(help="first period's start, YYYY-MM-DD (UTC)")],
    periods: Annotated[int, typer.Option(min=1, max=31, help="periods to include (2: current and next)")] = 2,
    period_s: Annotated[int, typer.Option(help="period length in seconds")] = 86400,
) -> None:
    """District side: derive the per-period pseudonym keys a gateway holds (decisions.md D13)."""
    import os
    from datetime import UTC, datetime

    from gateway.privacy import make_key_file

    try:
        begin = datetime.strptime(start, "%Y-%m-%d").replace(tzinfo=UTC)
        secret = secret_file.read_bytes().strip()
    except (ValueError, OSError) as exc:
        typer.echo(f"pseudonym-keys: {exc}", err=True)
        raise typer.Exit(2) from None
    if len(secret) < 16:
        typer.echo("pseudonym-keys: the district secret must be at least 16 bytes", err=True)
        raise typer.Exit(2)
    data = make_key_file(secret, begin, periods, period_s)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    typer.echo(f"wrote {periods} period key(s) from {start} to {out}")


@app.command()
def devices() -> None:
    """List the supported device models."""
    rows = [("MODEL", "TRANSPORT", "PROTOCOL", "EMITS")]
    for m in MODELS.values():
        rows.append((m.name, ",".join(m.transports), m.protocol, m.emits))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        typer.echo("  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3])


def _mask(value: object) -> str:
    text = str(value)
    return "*" * max(len(text) - 2, 1) + text[-2:] if len(text) > 2 else "*" * len(text)


def _event_json(event, *, show_personal: bool = False) -> bytes:
    """An event as JSON. Personal values (a card ID, a pickup code, a phone number, a name) are
    masked to their last two characters unless asked for: what a technician pastes into a ticket
    must not carry them (D13)."""
    doc = {"event": type(event).__name__, **dataclasses.asdict(event)}
    if not show_personal:
        from devices.events import personal_fields

        masked = [name for name in personal_fields(event) if doc.get(name) is not None]
        if getattr(event, "is_personal", False):
            masked.append("tag_hex")
        for name in masked:
            doc[name] = _mask(doc[name])
        if masked:
            doc["masked"] = masked
    return orjson.dumps(doc)


@app.command()
def decode(
    payload: Annotated[str, typer.Argument(help="hex for serial frames, JSON text for MQTT payloads, - for stdin")],
    device: Annotated[str, typer.Option("--device", "-d", help="a model name from `sdgw devices`")],
    show_personal: Annotated[
        bool, typer.Option("--show-personal", help="print card IDs, pickup codes, phones and names in clear")
    ] = False,
) -> None:
    """Decode a captured payload with the gateway's own codec; print its events as JSON lines
    (personal values masked to their last two characters unless --show-personal)."""
    model = MODELS.get(device)
    if model is None:
        typer.echo(f"unknown device model {device!r}; `sdgw devices` lists them", err=True)
        raise typer.Exit(2)
    text = sys.stdin.read() if payload == "-" else payload
    if model.payload is PayloadKind.BINARY:
        try:
            data = bytes.fromhex("".join(text.split()))
        except ValueError:
            typer.echo(f"{device} takes hex (e.g. '02 30 31 …'): not valid hex", err=True)
            raise typer.Exit(2) from None
    else:
        data = text.encode("utf-8", "surrogateescape")
    import time

    result = model.decode(data, received_ns=time.time_ns())
    if isinstance(result, Reject):
        typer.echo(f"rejected: {result.reason.value}: {result.detail}", err=True)
        raise typer.Exit(1)
    for event in result:
        sys.stdout.write(_event_json(event, show_personal=show_personal).decode() + "\n")
    if not result:
        typer.echo("decoded, but the payload holds no events the gateway records", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
