"""Doctor: one InfluxDB sink — reachable (/ping), the database or bucket exists, and our
credentials may write to it; plus the clock's skew against the server's `Date` header.

The write check is an empty write: InfluxDB answers 204 only after it has checked the credentials,
the database (v1) or bucket (v2) and the retention policy, and nothing is stored. InfluxDB 1.6.7
answers 404 "database not found" and 500 "retention policy not found" (measured here).
"""

from __future__ import annotations

import base64
import email.utils
import time

import httpx

from gateway.config import ConfigError, SinkConfig
from gateway.doctor.report import Check, failed, passed, secret_fix
from gateway.sinks.influx_http import Dialect
from gateway.sinks.runner import target_for


def _message(r: httpx.Response) -> str:
    try:
        doc = r.json()
    except ValueError:
        return r.text[:200]
    return str(doc.get("error") or doc.get("message") or doc)[:200] if isinstance(doc, dict) else r.text[:200]


async def probe_sink(sink: SinkConfig) -> tuple[list[Check], float | None]:
    """The sink's checks, and the clock's skew against it in seconds (None when it did not answer)."""
    name = f"sink {sink.name}"
    try:
        target = target_for(sink)
    except ConfigError as exc:
        p = exc.problems[0]
        return [failed(f"{name}: credentials", f"{p.key}: {p.found}", secret_fix(exc.path))], None
    headers = {}
    if target.token is not None:
        headers["Authorization"] = f"Token {target.token}"
    elif target.username is not None:
        pair = f"{target.username}:{target.password or ''}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    async with httpx.AsyncClient(base_url=target.url, timeout=sink.timeout_s, trust_env=False, headers=headers) as http:
        try:
            sent = time.time()
            ping = await http.get("/ping")
            received = time.time()
        except httpx.HTTPError as exc:
            return [
                failed(
                    f"{name}: reachable",
                    f"{sink.url}: {type(exc).__name__}: {exc}",
                    "is InfluxDB running (systemctl status influxdb)? check the sink's `url`",
                )
            ], None
        if not ping.is_success:
            return [failed(f"{name}: reachable", f"/ping answered HTTP {ping.status_code}", "is this InfluxDB?")], None
        version = ping.headers.get("x-influxdb-version", "unknown version")
        checks = [passed(f"{name}: reachable", f"{sink.url} answers (InfluxDB {version})")]
        skew = None
        date = ping.headers.get("date")
        if date:
            server = email.utils.parsedate_to_datetime(date).timestamp()
            skew = (sent + received) / 2 - server

        if target.dialect is Dialect.V1:
            where = f"database {sink.database!r}" + (
                f", policy {sink.retention_policy!r}" if sink.retention_policy else ""
            )
            params = {"db": sink.database or "", "precision": "ns"}
            if sink.retention_policy:
                params["rp"] = sink.retention_policy
            r = await http.post("/write", params=params, content=b"")
        else:
            where = f"bucket {sink.bucket!r} of org {sink.org!r}"
            r = await http.post(
                "/api/v2/write", params={"org": sink.org or "", "bucket": sink.bucket or ""}, content=b""
            )
        message = _message(r)
        if r.is_success:
            checks.append(passed(f"{name}: write", f"{where} exists and accepts our writes"))
        elif r.status_code in (401, 403):
            checks.append(
                failed(
                    f"{name}: write",
                    f"{where}: credentials refused (HTTP {r.status_code}: {message})",
                    "check the sink's username + password_file (v1) or token_file, and that this user or token "
                    "may write there",
                )
            )
        elif r.status_code == 404 or "not found" in message:
            create = (
                f"sdgw-influx-retention --url {sink.url} --database {sink.database}"
                if target.dialect is Dialect.V1
                else f"influx bucket create --org {sink.org} --name {sink.bucket}"
            )
            checks.append(failed(f"{name}: write", f"{where}: {message}", f"create it: {create}"))
        else:
            checks.append(failed(f"{name}: write", f"{where}: HTTP {r.status_code}: {message}", "see InfluxDB's log"))
    return checks, skew
