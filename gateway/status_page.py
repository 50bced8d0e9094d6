"""The technician's status page (`GET /status`) and its JSON (`GET /status.json`), served by
`sdgw run`: devices with last seen, message rates and decode errors; serial ports; the broker; the
sinks; the log's depth; the clock.

Open without a key, like `/v1/health`, and for the same reason: a technician on a ladder with a
phone has no API key at hand, and nothing here is secret or personal — counters, device and site
ids, port paths, the gateway's own verdict. Never a payload, a card or tag id, a topic's data, a
credential or a sink URL. Who can reach it is decided by `api.host` (loopback by default).

The page is rendered on the server (it reads well without JavaScript) and a small inline script
re-renders it from `/status.json` every few seconds; no build step, no asset from elsewhere.
"""

from __future__ import annotations

import html
import time
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from gateway import __version__
from gateway.api.problems import Problem, documented
from gateway.status_assets import PAGE, POLL_INTERVAL_MS

if TYPE_CHECKING:
    from gateway.runtime import Gateway

RATE_WINDOW_S = 60.0  # message rates are averaged over the last minute of samples
STALE_AFTER_S = 600.0  # a device unheard for 10 minutes is shown as "silent"


def _ago_s(wall_ns: int, now_ns: int) -> float | None:
    return None if not wall_ns else round(max(0.0, (now_ns - wall_ns) / 1e9), 1)


class RateTracker:
    """Messages per minute from cumulative counters sampled at each request (no timer of its own)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def per_min(self, key: str, count: int, now_mono: float) -> float | None:
        q = self._samples.setdefault(key, deque())
        q.append((now_mono, count))
        while len(q) > 2 and now_mono - q[1][0] >= self.window_s:
            q.popleft()
        t0, c0 = q[0]
        if now_mono - t0 < 1.0:
            return None  # not enough history yet: say so rather than guess
        return round((count - c0) * 60.0 / (now_mono - t0), 1)


class StatusSource:
    """The live state of one running gateway, as the status page shows it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.rates = RateTracker()

    def document(self) -> dict[str, Any]:
        gw = self.gw
        now_ns = time.time_ns()
        now_mono = time.monotonic()
        health = gw.health()
        devices = []
        for d in gw.config.devices:
            st = gw.pipeline.stats[d.id]
            seen = _ago_s(st.last_seen_wall_ns, now_ns)
            state = "never" if seen is None else ("silent" if seen > STALE_AFTER_S else "ok")
            devices.append(
                {
                    "id": d.id,
                    "model": d.model,
                    "transport": d.transport,
                    "site": d.site,
                    "state": state,
                    "last_seen_s_ago": seen,
                    "messages": st.messages,
                    "records": st.records,
                    "messages_per_min": self.rates.per_min(d.id, st.messages, now_mono),
                    "decode_errors": sum(st.rejects.values()),
                    "decode_errors_by_reason": dict(st.rejects),
                }
            )
        serial = []
        for ingest in gw.serial:
            ps = ingest.port.stats
            serial.append(
                {
                    "device": ingest.device.id,
                    "path": ingest.port.spec.path,
                    "open": ps.is_open,
                    "bytes_in": ps.bytes_in,
                    "frames": ps.frames,
                    "framing_errors": ps.rejects,
                    "reopens": ps.reconnects,
                    "last_byte_s_ago": _ago_s(ps.last_byte_wall_ns, now_ns),
                }
            )
        broker = None
        if gw.mqtt is not None and gw.config.mqtt is not None:
            ms = gw.mqtt.stats
            broker = {
                "address": f"{gw.config.mqtt.host}:{gw.config.mqtt.port}",
                "connected": gw.mqtt.connected,
                "paused": gw.log.paused,
                "messages_received": ms.messages_received,
                "reconnects": ms.reconnects,
                "subscribe_failures": ms.subscribe_failures,
            }
        sinks = [
            {
                "name": s.name,
                "healthy": s.stats.healthy,
                "pending": gw.log.pending_count(s.name),
                "records_sent": s.stats.records_sent,
                "last_success_s_ago": _ago_s(s.stats.last_success_wall_ns, now_ns),
                "last_error": s.stats.last_error,
            }
            for s in gw.sinks
        ]
        used, cap = gw.log.stats.used_bytes, gw.log.cap_bytes
        g = gw.config.gateway
        return {
            "gateway": {"id": g.id, "district": g.district, "street": g.street, "version": __version__},
            "generated_at": datetime.fromtimestamp(now_ns / 1e9, UTC).isoformat(timespec="seconds"),
            "uptime_s": health["uptime_s"],
            "healthy": health["healthy"],
            "reasons": health["reasons"],
            "devices": devices,
            "serial": serial,
            "broker": broker,
            "sinks": sinks,
            "log": {
                "used_bytes": used,
                "cap_bytes": cap,
                "used_percent": round(100.0 * used / cap, 1) if cap else None,
                "paused": gw.log.paused,
                "dead_letters": gw.log.stats.dead_letters,
            },
            "clock": health["clock"],
        }


router = APIRouter(tags=["status page"])
# The handlers are `async` so that they run on the event loop, where the counters they read change
# (a plain `def` would run in a worker thread and could see a dict mid-update).


def _source(request: Request) -> StatusSource:
    source = getattr(request.app.state, "status_source", None)
    if source is None:
        raise Problem(404, "the status page is served by a gateway (`sdgw run`), not by `sdgw api`")
    return source


_NOT_HERE = documented(404, descriptions={404: "`sdgw api` has no live state: only `sdgw run` serves this"})


@router.get(
    "/status.json", summary="The gateway's live state for the technician's status page (no key)", responses=_NOT_HERE
)
async def status_json(request: Request) -> Response:
    return Response(orjson.dumps(_source(request).document()), media_type="application/json")


@router.get(
    "/status", summary="The technician's status page (HTML, no key)", response_class=HTMLResponse, responses=_NOT_HERE
)
async def status_page(request: Request) -> HTMLResponse:
    doc = _source(request).document()
    body = render_body(doc)
    page = PAGE.replace("{{title}}", html.escape(f"sdgw {doc['gateway']['id']}"))
    page = page.replace("{{poll_ms}}", str(POLL_INTERVAL_MS)).replace("{{body}}", body)
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


# -- server-side rendering (the inline script renders the same markup from /status.json)


def _e(value: Any) -> str:
    return html.escape("—" if value is None or value == "" else str(value))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _badge(ok: bool | None, yes: str, no: str) -> str:
    cls = "ok" if ok else "bad"
    return f'<span class="badge {cls}">{_e(yes if ok else no)}</span>'


def _table(cls: str, head: list[str], rows: list[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    ths = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def render_body(doc: dict[str, Any]) -> str:
    g = doc["gateway"]
    parts = [
        f"<header><h1>{_e(g['id'])}</h1><p>{_e(g['street'])} · {_e(g['district'])} · v{_e(g['version'])}</p>",
        f'<p id="verdict">{_badge(doc["healthy"], "healthy", "needs attention")}</p>',
    ]
    if doc["reasons"]:
        parts.append('<ul class="reasons">' + "".join(f"<li>{_e(r)}</li>" for r in doc["reasons"]) + "</ul>")
    parts.append(f'<p class="updated">updated <span id="updated">{_e(doc["generated_at"])}</span></p></header>')
    dev_rows = []
    for d in doc["devices"]:
        state = {"ok": "ok", "silent": "warn", "never": "bad"}[d["state"]]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(d["decode_errors_by_reason"].items()))
        rate = "—" if d["messages_per_min"] is None else f"{d['messages_per_min']}/min"
        why = f"<br><small>{_e(errors)}</small>" if errors else ""
        dev_rows.append(
            f'<tr class="device {state}" data-device="{_e(d["id"])}" data-state="{_e(d["state"])}">'
            f'<td data-label="device"><b>{_e(d["id"])}</b><br><small>{_e(d["model"])} · {_e(d["site"])}</small></td>'
            f'<td data-label="last seen">{_e(_age(d["last_seen_s_ago"]))}</td>'
            f'<td data-label="rate">{_e(rate)}</td>'
            f'<td data-label="messages">{d["messages"]}</td>'
            f'<td data-label="decode errors" class="errors">{d["decode_errors"]}{why}</td></tr>'
        )
    parts.append('<section id="devices"><h2>Devices</h2>')
    parts.append(
        _table("devices", ["device", "last seen", "rate", "messages", "decode errors"], dev_rows, "no devices")
    )
    parts.append("</section>")
    ser_rows = [
        f'<tr class="serial {"ok" if p["open"] else "bad"}" data-port="{_e(p["device"])}">'
        f'<td data-label="device"><b>{_e(p["device"])}</b><br><small>{_e(p["path"])}</small></td>'
        f'<td data-label="port">{_badge(p["open"], "open", "not open")}</td>'
        f'<td data-label="last byte">{_e(_age(p["last_byte_s_ago"]))}</td>'
        f'<td data-label="frames">{p["frames"]}</td><td data-label="framing errors">{p["framing_errors"]}</td></tr>'
        for p in doc["serial"]
    ]
    parts.append('<section id="serial"><h2>Serial ports</h2>')
    parts.append(
        _table("serial", ["device", "port", "last byte", "frames", "framing errors"], ser_rows, "no serial ports")
    )
    parts.append("</section>")
    b = doc["broker"]
    parts.append('<section id="broker"><h2>Broker</h2>')
    if b is None:
        parts.append('<p class="empty">no MQTT broker configured</p>')
    else:
        parts.append(
            f'<p data-broker="{"connected" if b["connected"] else "disconnected"}">'
            f"{_badge(b['connected'], 'connected', 'not connected')} {_e(b['address'])} · "
            f"{b['messages_received']} messages · {b['reconnects']} reconnects"
            f"{' · <b>intake paused (log at its cap)</b>' if b['paused'] else ''}</p>"
        )
    parts.append("</section>")
    sink_rows = []
    for s in doc["sinks"]:
        why = f"<br><small>{_e(s['last_error'])}</small>" if s["last_error"] else ""
        sink_rows.append(
            f'<tr class="sink {"ok" if s["healthy"] else "bad"}" data-sink="{_e(s["name"])}">'
            f'<td data-label="sink"><b>{_e(s["name"])}</b></td>'
            f'<td data-label="state">{_badge(s["healthy"], "healthy", "unhealthy")}{why}</td>'
            f'<td data-label="pending">{s["pending"]}</td><td data-label="sent">{s["records_sent"]}</td>'
            f'<td data-label="last write">{_e(_age(s["last_success_s_ago"]))}</td></tr>'
        )
    parts.append('<section id="sinks"><h2>InfluxDB sinks</h2>')
    parts.append(_table("sinks", ["sink", "state", "pending", "sent", "last write"], sink_rows, "no sinks"))
    parts.append("</section>")
    lg, clock = doc["log"], doc["clock"]
    parts.append(
        '<section id="log"><h2>Log and clock</h2>'
        f'<p data-log-percent="{_e(lg["used_percent"])}">log {_e(lg["used_percent"])} % of its cap '
        f"({lg['used_bytes']:,} of {lg['cap_bytes']:,} bytes) · {lg['dead_letters']} dead letters"
        f"{' · <b>paused</b>' if lg['paused'] else ''}</p>"
        f"<p>clock {_badge(clock['synchronised'], 'synchronised', 'not synchronised')}</p></section>"
    )
    return "".join(parts)
