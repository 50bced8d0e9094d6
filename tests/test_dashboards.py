"""Dashboards as code (issue 6 point 1): the committed JSON is the builder's output, every dashboard
carries what Grafana requires, every panel and variable query — substituted as Grafana does — runs on
a real InfluxDB filled by a real gateway from the emulators and returns rows, and `sdgw dashboards
push` speaks Grafana's documented HTTP API (decisions.md D17: no Grafana package here, so a recording
responder stands in for it)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from gateway.dashboards.boards import DEFAULT_DATASOURCE_UID, FOLDER_TITLE, FOLDER_UID, build_all
from gateway.dashboards.build import render
from gateway.dashboards.interpolate import (
    ALL,
    builtins,
    interval_ms,
    panel_range,
    resolve_range,
    substitute,
    time_filter,
    variable_text,
)
from gateway.dashboards.querycheck import check, resolve_variables
from gateway.localservers import free_port
from tests.dashboard_data import (
    StreetGateway,
    drive_locker_bank,
    publish_street,
    street_config,
    street_data_landed,
)
from tests.harness import ROOT, GatewayProcess, pseudonym_key_file, wait_for

BOARDS = build_all()
DASHBOARDS = ROOT / "dashboards"
GRID = 24
NOW_MS = 1_764_000_000_000  # a fixed "now" for the pure tests: 2025-11-24T16:00:00Z


# --- the committed files -------------------------------------------------------------------------


def test_committed_files_are_the_builders_output():
    files = render()
    for rel, text in files.items():
        path = DASHBOARDS / rel
        assert path.exists(), f"{path} missing: run `sdgw dashboards build`"
        assert path.read_text() == text, f"{path} differs from the builder: run `sdgw dashboards build`"
    generated = [*DASHBOARDS.glob("json/*.json"), *DASHBOARDS.glob("provisioning/**/*.yaml")]
    assert {p.relative_to(DASHBOARDS).as_posix() for p in generated} == set(files), "stray dashboard files"


def test_build_check_cli_flags_a_stale_copy(tmp_path):
    def sdgw(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", "dashboards", *args], capture_output=True, text=True, cwd=ROOT
        )

    assert sdgw("build", "--dir", str(tmp_path)).returncode == 0
    assert sdgw("build", "--dir", str(tmp_path), "--check").returncode == 0
    (tmp_path / "json" / "sdgw-street.json").write_text("{}\n")
    stale = sdgw("build", "--dir", str(tmp_path), "--check")
    assert stale.returncode == 1 and "sdgw-street.json" in stale.stderr
    bad = sdgw("build", "--dir", str(tmp_path), "--online-within", "three minutes")
    assert bad.returncode == 2 and "--online-within" in bad.stderr


# --- what Grafana requires -----------------------------------------------------------------------


def _provisioned_datasource_uids() -> set[str]:
    doc = yaml.safe_load((DASHBOARDS / "provisioning/datasources/sdgw-influxdb.yaml").read_text())
    assert doc["apiVersion"] == 1
    sources = doc["datasources"]
    assert all(s["type"] == "influxdb" and s["jsonData"]["version"] == "InfluxQL" for s in sources)
    return {s["uid"] for s in sources}


def test_provisioning_files_are_grafanas_format():
    assert _provisioned_datasource_uids() == {DEFAULT_DATASOURCE_UID}
    doc = yaml.safe_load((DASHBOARDS / "provisioning/dashboards/sdgw.yaml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["folderUid"] == FOLDER_UID and provider["folder"] == FOLDER_TITLE
    assert provider["options"]["path"].startswith("/")


def _overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
    )


def test_every_dashboard_carries_what_grafana_requires():
    ds_uids = _provisioned_datasource_uids()
    assert len(BOARDS) == 5
    assert len({b["title"] for b in BOARDS.values()}) == 5
    builtin = {"timeFilter", "__interval", "__interval_ms", "__from", "__to"}
    for uid, board in BOARDS.items():
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid), uid
        assert board["title"] and isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
        assert board["tags"] and board["time"]["to"] == "now" and board["id"] is None
        variables = board["templating"]["list"]
        names = [v["name"] for v in variables]
        assert len(names) == len(set(names)), uid
        assert {"district", "street"} <= set(names), uid
        for v in variables:
            if v["type"] == "query":
                assert v["datasource"]["uid"] in ds_uids and v["query"].startswith("SHOW TAG VALUES"), (uid, v)
        panels = board["panels"]
        assert panels, uid
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{uid}: panel ids not unique"
        for p in panels:
            g = p["gridPos"]
            assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), (uid, p["title"])
            assert g["x"] >= 0 and g["w"] >= 1 and g["x"] + g["w"] <= GRID and g["h"] >= 1 and g["y"] >= 0
            assert p["datasource"] == {"type": "influxdb", "uid": DEFAULT_DATASOURCE_UID}, (uid, p["title"])
            assert p["type"] in {"timeseries", "stat", "table", "bargauge"} and p["title"]
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs)), (uid, p["title"])
            for t in p["targets"]:
                assert t["rawQuery"] is True and t["datasource"]["uid"] in ds_uids
                query = t["query"]
                # the time picker's range, or a fixed window by design ("online" = heard within 3 min)
                assert "$timeFilter" in query or "time > now() - " in query, (uid, p["title"], "no time filter")
                assert not re.search(r"FROM\s+[^\s\"(]", query), f"unquoted measurement: {query}"
                used = set(re.findall(r"\$(\w+)", query))
                assert used <= set(names) | builtin, (uid, p["title"], used - set(names) - builtin)
                group_by = query.partition("GROUP BY")[2]
                for tag in re.findall(r"\$tag_(\w+)", t.get("alias", "")):
                    assert f'"{tag}"' in group_by, (uid, p["title"], f"alias uses $tag_{tag}, not grouped by")
                if "$__interval" in query:
                    assert p["type"] == "timeseries" and p.get("interval"), (uid, p["title"])
        for a, b in ((a, b) for i, a in enumerate(panels) for b in panels[i + 1 :]):
            assert not _overlap(a["gridPos"], b["gridPos"]), (uid, a["title"], b["title"])


# --- Grafana's substitution, as simulated -------------------------------------------------------


def test_time_filter_and_interval_as_grafana_renders_them():
    rng = resolve_range("now-6h", "now", NOW_MS)
    assert time_filter(rng, style="browser") == "time >= now() - 6h"
    assert time_filter(rng, style="server") == f"time >= {NOW_MS - 6 * 3_600_000}ms and time <= {NOW_MS}ms"
    day_start = NOW_MS - NOW_MS % 86_400_000
    today = panel_range(rng, {"timeFrom": "now/d"}, NOW_MS)
    assert time_filter(today, style="browser") == f"time >= {day_start}ms"
    week_ago = panel_range(rng, {"timeFrom": "now/d", "timeShift": "7d"}, NOW_MS)
    week = 7 * 86_400_000
    assert time_filter(week_ago, style="browser") == f"time >= {day_start - week}ms and time <= {NOW_MS - week}ms"
    east = panel_range(rng, {"timeFrom": "now/d"}, NOW_MS, tz_offset_ms=2 * 3_600_000)
    assert east.from_ms == day_start - 2 * 3_600_000  # 18:00 at UTC+2: its day began at 22:00 UTC
    # range / max data points, at least the panel's minimum, rounded to Grafana's steps
    assert interval_ms(rng, {"maxDataPoints": 500}) == 30_000  # 43.2 s → 30 s
    assert interval_ms(rng, {"maxDataPoints": 500, "interval": "1m"}) == 60_000
    assert interval_ms(resolve_range("now-7d", "now", NOW_MS), {"maxDataPoints": 500}) == 1_200_000  # 20m
    assert interval_ms(resolve_range("now-24h", "now", NOW_MS), {}) == 60_000  # 86.4 s → 1m
    values = builtins(rng, {"maxDataPoints": 500}, style="browser")
    assert (values["__interval"], values["__interval_ms"]) == ("30s", "30000")
    assert substitute("time($__interval) $__interval_ms ${__interval} [[__interval]]", values) == (
        "time(30s) 30000 30s 30s"
    )


def test_variables_become_regexes_as_grafana_writes_them():
    var = {"multi": True, "includeAll": True, "allValue": ".*"}
    assert variable_text(var, ALL, ["a", "b"]) == ".*"
    assert variable_text({"multi": True, "includeAll": True}, ALL, ["a.b", "c"]) == r"(a\.b|c)"
    assert variable_text(var, ["old-town"], []) == "old-town"
    assert variable_text(var, ["a(1)", "b/2"], []) == r"(a\(1\)|b\/2)"
    assert variable_text({"type": "textbox"}, "0614141", []) == "0614141"
    assert substitute('"street" =~ /^$street$/ AND "x" = $streets', {"street": "s1"}) == (
        '"street" =~ /^s1$/ AND "x" = $streets'
    )


# --- every query on real data --------------------------------------------------------------------


@pytest.fixture
def street_data(tmp_path, mosquitto, influxdb):
    """One street gateway (`sdgw run`) fed by its emulators: counters, sensor, RFID reader, locker bank."""
    gw = StreetGateway("gw-dash", "market-st")
    api_port = free_port()
    cfg = street_config(
        tmp_path / "gw",
        gw,
        broker_port=mosquitto.port,
        influx_url=influxdb.url,
        database=influxdb.db,
        key_file=pseudonym_key_file(tmp_path / "keys"),
        api_port=api_port,
    )
    with GatewayProcess(tmp_path / "gw", cfg) as proc:
        operator = proc.cli("keys", "create", "--role", "operator").stdout.strip()
        wait_for(lambda: "connected" in proc.log_text().lower(), timeout_s=30, what="gateway connected")
        published = publish_street(mosquitto.port, gw)
        drive_locker_bank(mosquitto.port, gw, api_port, operator)
        wait_for(lambda: street_data_landed(influxdb, gw, published), timeout_s=60, interval_s=0.5, what="street data")
    return influxdb, gw, published


def _failures(outcomes) -> list[str]:
    return [
        f"{o.query.dashboard} / {o.query.panel} / {o.query.ref_id} ({o.query.style}): {o.error or 'no rows'}\n"
        f"    {o.query.text}"
        for o in outcomes
        if o.error or o.rows == 0
    ]


@pytest.mark.integration
def test_every_panel_and_variable_query_returns_rows(street_data):
    influx, gw, _ = street_data

    def run(q: str) -> list[dict]:
        return influx.rows(q, influx.db)

    now_ms = time.time_ns() // 1_000_000
    for uid, board in BOARDS.items():
        _, options = resolve_variables(board, run)
        for name, values in options.items():
            assert values, f"{uid}: variable {name} offers no value"
        assert options["street"] == [gw.street]
        outcomes = check(board, run, now_ms)
        assert len(outcomes) == 2 * sum(len(p["targets"]) for p in board["panels"])
        assert not _failures(outcomes), "\n".join(_failures(outcomes))
        # one street picked explicitly works alike; a street with no data empties the panels
        picked = check(board, run, now_ms, selection={"street": [gw.street]}, styles=("server",))
        assert not _failures(picked), "\n".join(_failures(picked))
        elsewhere = check(board, run, now_ms, selection={"street": ["no-such-st"]}, styles=("server",))
        assert all(o.error is None and o.rows == 0 for o in elsewhere), uid


@pytest.mark.integration
def test_panels_show_what_the_devices_sent(street_data):
    """Spot checks of values: today against last week from the counters' own truth, GTIN filtering."""
    influx, _, published = street_data
    overview = BOARDS["sdgw-district-overview"]

    def run(q: str) -> list[dict]:
        return influx.rows(q, influx.db)

    def stat(board: dict, title: str, **kw) -> list[dict]:
        (pq,) = [
            o
            for o in check(board, run, time.time_ns() // 1_000_000, styles=("browser",), **kw)
            if o.query.panel == title
        ]
        assert pq.error is None, pq.error
        return run(pq.query.text)

    truth = influx.rows('SELECT sum("entries") AS n FROM "footfall" WHERE time > now() - 2d', influx.db)[0]["n"]
    assert stat(overview, "Entries today")[0]["entries"] == truth == published.entries_today
    assert stat(overview, "Same weekday last week, to this time")[0]["entries"] == published.entries_last_week
    assert stat(overview, "Gateways online")[0]["online"] == 1

    trace = BOARDS["sdgw-traceability"]
    gtins = sorted({r["value"] for r in run('SHOW TAG VALUES FROM "rfid_presence" WITH KEY = "gtin"')})
    assert gtins
    everything = stat(trace, "Sightings")
    one = stat(trace, "Sightings", selection={"gtin": gtins[0]})
    assert one and all(r["gtin"] == gtins[0] for r in one)
    assert len(one) < len(everything) or len(gtins) == 1
    assert stat(trace, "Sightings", selection={"gtin": "99999999999999"}) == []


# --- push: a recording stand-in for Grafana's documented HTTP API ---------------------------------


class GrafanaStandIn(ThreadingHTTPServer):
    """Just enough of Grafana's HTTP API (GET /api/health, GET/POST /api/folders, POST
    /api/dashboards/db) with its documented answers; every request is recorded."""

    daemon_threads = True

    def __init__(self, token: str) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.token = token
        self.requests: list[dict] = []
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: GrafanaStandIn

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "content_type": self.headers.get("Content-Type"),
                "body": body,
            }
        )
        return body

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.server.token}":
            return True
        self._answer(401, {"message": "invalid API key"})
        return False

    def do_GET(self) -> None:
        self._record()
        if self.path == "/api/health":
            self._answer(200, {"commit": "0000000", "database": "ok", "version": "11.3.0"})
            return
        if not self._authorised():
            return
        m = re.fullmatch(r"/api/folders/([A-Za-z0-9_-]+)", self.path)
        if m and m.group(1) in self.server.folders:
            self._answer(200, self.server.folders[m.group(1)])
        elif m:
            self._answer(404, {"message": "folder not found", "status": "not-found"})
        else:
            self._answer(404, {"message": "Not found"})

    def do_POST(self) -> None:
        body = self._record()
        if not self._authorised():
            return
        if self.path == "/api/folders":
            uid, title = body.get("uid"), body.get("title")
            if not title:
                self._answer(400, {"message": "folder title cannot be empty"})
            elif uid in self.server.folders:
                self._answer(409, {"message": "a folder with the same uid already exists"})
            else:
                folder = {"id": len(self.server.folders) + 1, "uid": uid, "title": title, "version": 1}
                folder["url"] = f"/dashboards/f/{uid}/"
                self.server.folders[uid] = folder
                self._answer(200, folder)
        elif self.path == "/api/dashboards/db":
            board = body.get("dashboard") if isinstance(body, dict) else None
            if not isinstance(board, dict) or not board.get("title"):
                self._answer(400, {"message": "Dashboard title cannot be empty"})
                return
            if body.get("folderUid") and body["folderUid"] not in self.server.folders:
                self._answer(400, {"message": "folder not found"})
                return
            uid = board.get("uid")
            old = self.server.dashboards.get(uid)
            if old is not None and not body.get("overwrite"):
                self._answer(412, {"message": "A dashboard with the same uid already exists", "status": "name-exists"})
                return
            version = 1 if old is None else old["version"] + 1
            self.server.dashboards[uid] = {"board": board, "version": version, "folderUid": body.get("folderUid")}
            slug = re.sub(r"[^a-z0-9]+", "-", board["title"].lower()).strip("-")
            self._answer(
                200,
                {
                    "id": list(self.server.dashboards).index(uid) + 1,
                    "uid": uid,
                    "url": f"/d/{uid}/{slug}",
                    "status": "success",
                    "version": version,
                    "slug": slug,
                },
            )
        else:
            self._answer(404, {"message": "Not found"})


def _push(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "SDGW_GRAFANA_TOKEN"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "dashboards", "push", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=60,
    )


def test_push_creates_the_folder_and_uploads_every_dashboard_with_overwrite(tmp_path):
    token_file = tmp_path / "grafana-token"
    token_file.write_text("glsa_test_token\n")
    with GrafanaStandIn("glsa_test_token") as grafana:
        first = _push("--url", grafana.url, "--token-file", str(token_file), "--message", "release 1")
        assert first.returncode == 0, first.stderr
        reqs = grafana.requests
        assert [(r["method"], r["path"]) for r in reqs[:3]] == [
            ("GET", "/api/health"),
            ("GET", f"/api/folders/{FOLDER_UID}"),
            ("POST", "/api/folders"),
        ]
        assert reqs[2]["body"] == {"title": FOLDER_TITLE, "uid": FOLDER_UID}
        uploads = [r for r in reqs if r["path"] == "/api/dashboards/db"]
        assert [r["method"] for r in uploads] == ["POST"] * len(BOARDS)
        for r in reqs[1:]:
            assert r["authorization"] == "Bearer glsa_test_token"
        for r in uploads:
            assert r["content_type"].split(";")[0] == "application/json"
            body = r["body"]
            assert set(body) == {"dashboard", "folderUid", "overwrite", "message"}
            assert body["folderUid"] == FOLDER_UID and body["overwrite"] is True and body["message"] == "release 1"
            board = body["dashboard"]
            assert board["id"] is None
            assert {k: v for k, v in board.items() if k != "id"} == {
                k: v for k, v in BOARDS[board["uid"]].items() if k != "id"
            }
        assert {uid: d["version"] for uid, d in grafana.dashboards.items()} == dict.fromkeys(BOARDS, 1)
        assert "folder sdgw (created)" in first.stdout and f"uploaded {len(BOARDS)} dashboard(s)" in first.stdout
        for uid in BOARDS:
            assert f"{uid}:" in first.stdout and f"/d/{uid}/" in first.stdout

        # again, token from the environment: the folder is found, every dashboard overwritten
        grafana.requests.clear()
        second = _push("--url", grafana.url, env={"SDGW_GRAFANA_TOKEN": "glsa_test_token"})
        assert second.returncode == 0, second.stderr
        assert ("POST", "/api/folders") not in [(r["method"], r["path"]) for r in grafana.requests]
        assert {uid: d["version"] for uid, d in grafana.dashboards.items()} == dict.fromkeys(BOARDS, 2)
        assert "folder sdgw (exists)" in second.stdout and "version 2" in second.stdout


def test_push_points_panels_at_another_datasource_uid(tmp_path):
    with GrafanaStandIn("t") as grafana:
        r = _push("--url", grafana.url, "--token", "t", "--datasource-uid", "central-influx")
        assert r.returncode == 0, r.stderr
        text = json.dumps([d["board"] for d in grafana.dashboards.values()])
        assert '"uid": "central-influx"' in text and DEFAULT_DATASOURCE_UID not in text


def test_push_says_clearly_when_the_token_is_refused_or_grafana_unreachable(tmp_path):
    with GrafanaStandIn("right") as grafana:
        refused = _push("--url", grafana.url, "--token", "wrong")
        assert refused.returncode == 1
        assert "refused the token (401 Unauthorized)" in refused.stderr and "Traceback" not in refused.stderr
        assert grafana.dashboards == {} and grafana.folders == {}
    unreachable = _push("--url", f"http://127.0.0.1:{free_port()}", "--token", "t", "--timeout-s", "3")
    assert unreachable.returncode == 1
    assert "cannot reach Grafana at http://127.0.0.1:" in unreachable.stderr and "Traceback" not in unreachable.stderr
    missing = _push("--url", "http://127.0.0.1:9", "--token-file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--token-file" in missing.stderr
    none = _push("--url", "http://127.0.0.1:9")
    assert none.returncode == 2 and "SDGW_GRAFANA_TOKEN" in none.stderr
