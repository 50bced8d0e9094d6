"""The status page's one HTML document: inline CSS (phone first: below 640 px every table row becomes
a card, cells labelled from `data-label`) and an inline script that re-renders `<main>` from
`/status.json`. Kept in Python so that the page ships inside the package with no build step and no
package-data configuration. `render()` below mirrors `status_page.render_body` markup for markup."""

POLL_INTERVAL_MS = 3000

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --line: #8884; }
body { font: 16px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 0.75rem; }
h1 { margin: 0; font-size: 1.5rem; } h2 { font-size: 1.1rem; margin: 1.2rem 0 0.4rem; }
header p { margin: 0.2rem 0; } small { opacity: 0.75; }
.badge { display: inline-block; padding: 0.05rem 0.5rem; border-radius: 1rem; color: #fff; font-weight: 600; }
.badge.ok { background: var(--ok); } .badge.bad { background: var(--bad); }
.reasons { color: var(--bad); margin: 0.3rem 0; padding-left: 1.2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.35rem 0.5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
tr.bad td:first-child { border-left: 4px solid var(--bad); }
tr.warn td:first-child { border-left: 4px solid var(--warn); }
tr.ok td:first-child { border-left: 4px solid var(--ok); }
.updated, .empty { opacity: 0.75; } #stale { color: var(--bad); font-weight: 600; }
@media (max-width: 640px) {
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; box-sizing: border-box; }
  tr { border: 1px solid var(--line); border-radius: 0.5rem; margin-bottom: 0.6rem; padding: 0.3rem 0; }
  td { border: 0; padding: 0.15rem 0.6rem; }
  td:first-child { border-left: 0 !important; }
  tr.bad { border-left: 6px solid var(--bad); } tr.warn { border-left: 6px solid var(--warn); }
  tr.ok { border-left: 6px solid var(--ok); }
  td[data-label]:not(:first-child)::before { content: attr(data-label) ": "; opacity: 0.7; }
}
</style>
</head>
<body data-polls="0">
<main id="status">{{body}}</main>
<p id="stale" hidden>the gateway does not answer: the figures above are old</p>
<script>
"use strict";
const POLL_MS = {{poll_ms}};
const esc = (v) => String(v === null || v === undefined || v === "" ? "\\u2014" : v)
  .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const age = (s) => s === null ? "never" : s < 90 ? `${Math.round(s)} s ago`
  : s < 5400 ? `${Math.round(s / 60)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
const badge = (ok, yes, no) => `<span class="badge ${ok ? "ok" : "bad"}">${esc(ok ? yes : no)}</span>`;
const table = (cls, head, rows, empty) => rows.length === 0 ? `<p class="empty">${esc(empty)}</p>`
  : `<table class="${cls}"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead>`
    + `<tbody>${rows.join("")}</tbody></table>`;
const num = (n) => n.toLocaleString("en-US");

function render(doc) {
  const g = doc.gateway;
  let out = `<header><h1>${esc(g.id)}</h1><p>${esc(g.street)} · ${esc(g.district)} · v${esc(g.version)}</p>`
    + `<p id="verdict">${badge(doc.healthy, "healthy", "needs attention")}</p>`;
  if (doc.reasons.length) out += `<ul class="reasons">${doc.reasons.map((r) => `<li>${esc(r)}</li>`).join("")}</ul>`;
  out += `<p class="updated">updated <span id="updated">${esc(doc.generated_at)}</span></p></header>`;
  const devRows = doc.devices.map((d) => {
    const state = {ok: "ok", silent: "warn", never: "bad"}[d.state];
    const errors = Object.keys(d.decode_errors_by_reason).sort()
      .map((k) => `${k} ${d.decode_errors_by_reason[k]}`).join(", ");
    const rate = d.messages_per_min === null ? "\\u2014" : `${d.messages_per_min}/min`;
    return `<tr class="device ${state}" data-device="${esc(d.id)}" data-state="${esc(d.state)}">`
      + `<td data-label="device"><b>${esc(d.id)}</b><br><small>${esc(d.model)} · ${esc(d.site)}</small></td>`
      + `<td data-label="last seen">${esc(age(d.last_seen_s_ago))}</td><td data-label="rate">${esc(rate)}</td>`
      + `<td data-label="messages">${d.messages}</td>`
      + `<td data-label="decode errors" class="errors">${d.decode_errors}`
      + `${errors ? `<br><small>${esc(errors)}</small>` : ""}</td></tr>`;
  });
  out += `<section id="devices"><h2>Devices</h2>`
    + table("devices", ["device", "last seen", "rate", "messages", "decode errors"], devRows, "no devices")
    + `</section>`;
  const serRows = doc.serial.map((p) => `<tr class="serial ${p.open ? "ok" : "bad"}" data-port="${esc(p.device)}">`
    + `<td data-label="device"><b>${esc(p.device)}</b><br><small>${esc(p.path)}</small></td>`
    + `<td data-label="port">${badge(p.open, "open", "not open")}</td>`
    + `<td data-label="last byte">${esc(age(p.last_byte_s_ago))}</td>`
    + `<td data-label="frames">${p.frames}</td><td data-label="framing errors">${p.framing_errors}</td></tr>`);
  out += `<section id="serial"><h2>Serial ports</h2>`
    + table("serial", ["device", "port", "last byte", "frames", "framing errors"], serRows, "no serial ports")
    + `</section>`;
  const b = doc.broker;
  out += `<section id="broker"><h2>Broker</h2>` + (b === null ? `<p class="empty">no MQTT broker configured</p>`
    : `<p data-broker="${b.connected ? "connected" : "disconnected"}">`
      + `${badge(b.connected, "connected", "not connected")}`
      + ` ${esc(b.address)} · ${b.messages_received} messages · ${b.reconnects} reconnects`
      + `${b.paused ? " · <b>intake paused (log at its cap)</b>" : ""}</p>`) + `</section>`;
  const sinkRows = doc.sinks.map((s) => `<tr class="sink ${s.healthy ? "ok" : "bad"}" data-sink="${esc(s.name)}">`
    + `<td data-label="sink"><b>${esc(s.name)}</b></td>`
    + `<td data-label="state">${badge(s.healthy, "healthy", "unhealthy")}`
    + `${s.last_error ? `<br><small>${esc(s.last_error)}</small>` : ""}</td>`
    + `<td data-label="pending">${s.pending}</td><td data-label="sent">${s.records_sent}</td>`
    + `<td data-label="last write">${esc(age(s.last_success_s_ago))}</td></tr>`);
  out += `<section id="sinks"><h2>InfluxDB sinks</h2>`
    + table("sinks", ["sink", "state", "pending", "sent", "last write"], sinkRows, "no sinks") + `</section>`;
  const lg = doc.log;
  out += `<section id="log"><h2>Log and clock</h2><p data-log-percent="${esc(lg.used_percent)}">`
    + `log ${esc(lg.used_percent)} % of its cap (${num(lg.used_bytes)} of ${num(lg.cap_bytes)} bytes)`
    + ` · ${lg.dead_letters} dead letters${lg.paused ? " · <b>paused</b>" : ""}</p>`
    + `<p>clock ${badge(doc.clock.synchronised, "synchronised", "not synchronised")}</p></section>`;
  return out;
}

async function poll() {
  try {
    const r = await fetch("status.json", {cache: "no-store"});
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    document.getElementById("status").innerHTML = render(await r.json());
    document.body.dataset.polls = String(Number(document.body.dataset.polls) + 1);
    document.getElementById("stale").hidden = true;
  } catch (e) {
    document.getElementById("stale").hidden = false;
  }
  setTimeout(poll, POLL_MS);
}
poll();
</script>
</body>
</html>
"""
