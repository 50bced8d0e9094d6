"""`sdgw keys …` and `sdgw api`, as pieces gateway/cli.py mounts:

    from gateway.cli_api import api, keys_app
    app.add_typer(keys_app, name="keys")
    app.command("api")(api)

`python -m gateway.cli_api keys|api …` runs the same commands on their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer

from gateway.config import GatewayConfig
from gateway.keys import KeyFileError, KeyNotFound, KeyStore, KeyStoreError, Role, UnknownSite

keys_app = typer.Typer(no_args_is_help=True, help="API keys: the key file holds hashes only")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="the gateway's TOML file")]


def _load(path: Path) -> GatewayConfig:
    from gateway.cli import _load as load  # imported here: cli.py imports this module to mount it

    return load(path)


def _store(config: Path) -> KeyStore:
    cfg = _load(config)
    return KeyStore(cfg.api_key_file, sites=[s.id for s in cfg.sites])


@keys_app.command("create")
def create(
    config: ConfigOpt,
    role: Annotated[Role, typer.Option("--role", help="operator: the whole district; merchant: its sites")],
    site: Annotated[
        list[str] | None, typer.Option("--site", help="a site id from the config's sites; repeat for more")
    ] = None,
    label: Annotated[str, typer.Option("--label", help="who or what holds the key")] = "",
) -> None:
    """Create a key and print its secret, once: only its hash is stored."""
    store = _store(config)
    try:
        record, secret = store.create(role, site or [], label)
    except UnknownSite as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except KeyStoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1 if isinstance(exc, KeyFileError) else 2) from None
    scope = "every site" if record.role is Role.OPERATOR else "sites " + ", ".join(record.sites)
    typer.echo(f"created {record.role} key {record.id} ({scope}) in {store.path}", err=True)
    typer.echo(secret)
    typer.echo("This secret is shown only once: store it now; the key file keeps only its hash.", err=True)


@keys_app.command("list")
def list_keys(config: ConfigOpt, json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every key with its role, sites, label and state; never a secret or a hash."""
    store = _store(config)
    try:
        records = store.list()
    except KeyFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if json:
        typer.echo(orjson.dumps([r.public() for r in records], option=orjson.OPT_INDENT_2).decode())
        return
    if not records:
        typer.echo(f"no keys in {store.path}", err=True)
        return
    rows = [("ID", "ROLE", "STATE", "CREATED", "SITES", "LABEL")]
    for r in records:
        state = f"revoked {r.revoked_at}" if r.revoked else "active"
        rows.append((r.id, r.role.value, state, r.created, ",".join(r.sites) or "*", r.label))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        typer.echo("  ".join(row[i].ljust(widths[i]) for i in range(5)) + "  " + row[5])


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id, from `sdgw keys list`")], config: ConfigOpt
) -> None:
    """Revoke a key; running API servers refuse it within a second."""
    store = _store(config)
    try:
        record = store.revoke(key_id)
    except KeyNotFound as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except KeyStoreError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"key {record.id} revoked at {record.revoked_at}")


def api(config: ConfigOpt, log_level: str = "INFO") -> None:
    """Run the API alone (no ingestion) over the district's InfluxDB, until SIGTERM or SIGINT."""
    import asyncio

    from gateway.api.server import ApiServerError, run_api_only
    from gateway.config import ConfigError
    from gateway.logsetup import setup_logging

    cfg = _load(config)
    if cfg.query_sink is None:
        typer.echo(f"{config}: no [[sinks]] to query: the API answers from InfluxDB", err=True)
        raise typer.Exit(2)
    setup_logging(log_level)
    try:
        asyncio.run(run_api_only(cfg))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    except ApiServerError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _standalone() -> typer.Typer:
    app = typer.Typer(no_args_is_help=True, add_completion=False, help="sdgw API pieces")
    app.add_typer(keys_app, name="keys")
    app.command("api")(api)
    return app


if __name__ == "__main__":
    _standalone()(prog_name="sdgw")
