"""`sdgw dashboards build | push`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from gateway import __version__
from gateway.dashboards.boards import DEFAULT_DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID

REPO_DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
TOKEN_ENV = "SDGW_GRAFANA_TOKEN"

dashboards_app = typer.Typer(no_args_is_help=True, help="Grafana dashboards as code")

OutOpt = Annotated[Path, typer.Option("--dir", help="the dashboards directory (JSON in json/, provisioning/)")]
DsOpt = Annotated[str, typer.Option("--datasource-uid", help="uid of Grafana's InfluxDB data source")]


@dashboards_app.command("build")
def build(
    out: OutOpt = REPO_DASHBOARDS,
    datasource_uid: DsOpt = DEFAULT_DATASOURCE_UID,
    online_within: Annotated[
        str, typer.Option(help="'online' = last heartbeat at most this old (3 × status.heartbeat_s)")
    ] = "3m",
    check: Annotated[bool, typer.Option("--check", help="write nothing; exit 1 if the files are out of date")] = False,
) -> None:
    """Write the dashboards' JSON and the provisioning files."""
    from gateway.dashboards.build import render, write
    from gateway.dashboards.interpolate import duration_ms

    try:
        duration_ms(online_within)
    except ValueError as exc:
        typer.echo(f"--online-within: {exc} (e.g. 3m)", err=True)
        raise typer.Exit(2) from None
    files = render(datasource_uid, online_within)
    if check:
        stale = [rel for rel, text in files.items() if not (out / rel).exists() or (out / rel).read_text() != text]
        for rel in stale:
            typer.echo(f"out of date: {out / rel}", err=True)
        if stale:
            raise typer.Exit(1)
        typer.echo(f"{len(files)} file(s) in {out} up to date")
        return
    changed = write(out, files)
    typer.echo(f"wrote {len(files)} file(s) to {out} ({len(changed)} changed)")


def _token(token: str | None, token_file: Path | None) -> str:
    if token:
        return token
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            typer.echo(f"--token-file {token_file}: {exc.strerror or exc}", err=True)
            raise typer.Exit(2) from None
        if not text:
            typer.echo(f"--token-file {token_file}: the file is empty", err=True)
            raise typer.Exit(2)
        return text
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    typer.echo(f"no Grafana token: pass --token-file FILE (or --token, or set {TOKEN_ENV})", err=True)
    raise typer.Exit(2)


def _with_datasource(node: object, uid: str) -> object:
    """Every InfluxDB data source reference pointed at `uid`."""
    if isinstance(node, dict):
        if node.get("type") == "influxdb" and "uid" in node and set(node) <= {"type", "uid"}:
            return {"type": "influxdb", "uid": uid}
        return {k: _with_datasource(v, uid) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_datasource(v, uid) for v in node]
    return node


@dashboards_app.command("push")
def push(
    url: Annotated[str, typer.Option(help="Grafana's base URL, e.g. https://grafana.example.org")],
    token: Annotated[
        str | None, typer.Option(help=f"service account token (prefer --token-file or {TOKEN_ENV})")
    ] = None,
    token_file: Annotated[Path | None, typer.Option(help="a file holding the token")] = None,
    source: OutOpt = REPO_DASHBOARDS,
    folder_uid: Annotated[str, typer.Option(help="the folder to put them in (created if missing)")] = FOLDER_UID,
    folder_title: Annotated[str, typer.Option(help="the folder's title when it is created")] = FOLDER_TITLE,
    message: Annotated[str | None, typer.Option(help="the version message Grafana keeps")] = None,
    datasource_uid: Annotated[
        str | None, typer.Option("--datasource-uid", help="point the panels at this data source uid instead")
    ] = None,
    timeout_s: Annotated[float, typer.Option(help="per request")] = 10.0,
) -> None:
    """Upload every dashboard (overwrite, with a version message) into a folder of a Grafana."""
    from gateway.dashboards.build import load_dashboards
    from gateway.dashboards.push import PushError
    from gateway.dashboards.push import push as do_push

    if not url.startswith(("http://", "https://")):
        typer.echo(f"--url {url!r}: expected an http:// or https:// URL", err=True)
        raise typer.Exit(2)
    secret = _token(token, token_file)
    try:
        boards = load_dashboards(source)
    except (OSError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    if not boards:
        typer.echo(f"no dashboards in {source}/json (run `sdgw dashboards build`)", err=True)
        raise typer.Exit(2)
    if datasource_uid:
        boards = {uid: _with_datasource(b, datasource_uid) for uid, b in boards.items()}  # type: ignore[misc]
    try:
        report = do_push(
            url.rstrip("/"),
            secret,
            boards,
            folder_uid=folder_uid,
            folder_title=folder_title,
            message=message or f"sdgw {__version__}: dashboards as code",
            timeout_s=timeout_s,
        )
    except PushError as exc:
        typer.echo(f"push failed: {exc}", err=True)
        raise typer.Exit(1) from None
    state = "created" if report.folder_created else "exists"
    typer.echo(f"Grafana {report.grafana_version}: folder {report.folder_uid} ({state})")
    for d in report.dashboards:
        typer.echo(f"  {d.uid}: {d.title!r} → version {d.version} {d.url}")
    typer.echo(f"uploaded {len(report.dashboards)} dashboard(s)")
