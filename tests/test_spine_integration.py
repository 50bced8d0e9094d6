"""The durable spine end to end, against real Mosquitto and InfluxDB processes: counter emulator →
MQTT → gateway (a real `sdgw run` process) → log → InfluxDB, with the faults that must lose nothing.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter

import httpx
import pytest
from vivotek_counter import Street, publish_all

from gateway.localservers import InfluxDB1
from tests.harness import GatewayProcess, gateway_config, wait_for

pytestmark = pytest.mark.integration


def v1_sink(server: InfluxDB1, name: str = "edge", **kw) -> dict:
    return {
        "name": name,
        "url": server.url,
        "dialect": "v1",
        "database": server.db,
        "flush_interval_s": 0.1,
        **kw,
    }


def points(server: InfluxDB1, db: str | None = None) -> int:
    try:
        rows = server.rows('SELECT count("entries") FROM footfall', db or server.db)
    except (httpx.HTTPError, RuntimeError):
        return -1
    return rows[0]["count"] if rows else 0


def totals(server: InfluxDB1, db: str | None = None) -> Counter:
    rows = server.rows(
        'SELECT sum("entries") AS i, sum("exits") AS o FROM footfall GROUP BY device, line', db or server.db
    )
    out: Counter = Counter()
    for r in rows:
        out[(r["device"], r["line"], "in")] += r["i"]
        out[(r["device"], r["line"], "out")] += r["o"]
    return out


def street(n_cameras: int, **kw) -> Street:
    return Street(cameras=[f"cam-{i:02d}" for i in range(n_cameras)], **kw)


def start_publisher(broker_port: int, st: Street, count: int, rate: float = 0.0) -> tuple[threading.Thread, list]:
    acked: list[int] = []

    def run() -> None:
        acked.append(publish_all("127.0.0.1", broker_port, st.messages(count), rate=rate))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, acked


def test_spine_report_lands_in_influxdb_with_tags(tmp_path, mosquitto, influxdb):
    """One VIVOTEK report → one `footfall` point per rule: D12's tags, integer fields, StartTime."""
    st = street(1, rules=("Counting1", "Counting2"))
    cfg = gateway_config(tmp_path, broker_port=mosquitto.port, sinks=[v1_sink(influxdb)], cameras=st.cameras)
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        assert publish_all("127.0.0.1", mosquitto.port, st.messages(3)) == 3
        wait_for(lambda: points(influxdb) == 6, timeout_s=20, what="6 points")
    rows = influxdb.rows("SELECT * FROM footfall", influxdb.db)
    first = rows[0]
    assert first["time"] == st.start_s * 10**9
    assert {k: first[k] for k in ("district", "street", "gateway", "site", "device", "line")} == {
        "district": "test-district",
        "street": "test-st",
        "gateway": "gw-test",
        "site": "shop-1",
        "device": "cam-00",
        "line": "Counting1",
    }
    assert first["interval_s"] == 900
    field_types = influxdb.rows("SHOW FIELD KEYS FROM footfall", influxdb.db)
    assert {r["fieldKey"]: r["fieldType"] for r in field_types} == {
        "entries": "integer",
        "exits": "integer",
        "interval_s": "integer",
    }
    assert totals(influxdb) == st.truth


def test_spine_sigkill_twice_exactly_once(tmp_path, mosquitto, influxdb):
    """10,000 QoS 1 reports while the gateway is SIGKILLed and restarted twice: exactly 10,000 points,
    totals equal to the emulator's ground truth (redeliveries overwrite, never add)."""
    st = street(10)
    cfg = gateway_config(tmp_path, broker_port=mosquitto.port, sinks=[v1_sink(influxdb)], cameras=st.cameras)
    gw = GatewayProcess(tmp_path, cfg)
    gw.start()
    try:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        pub, acked = start_publisher(mosquitto.port, st, 10_000, rate=2500)
        for _ in range(2):
            time.sleep(1.2)
            gw.kill()
            time.sleep(0.3)
            gw.start()
        pub.join(60)
        assert acked == [10_000]
        wait_for(lambda: points(influxdb) == 10_000, timeout_s=60, what="10,000 points")
        time.sleep(1.0)  # anything redelivered late would show up as a change now
        assert points(influxdb) == 10_000
        assert totals(influxdb) == st.truth
    finally:
        gw.stop()


def test_spine_influxdb_outage_under_load(tmp_path, mosquitto, own_influxdb):
    """InfluxDB stopped for a while under steady load, then restarted: every point arrives and the
    log drains to zero pending."""
    st = street(5)
    cfg = gateway_config(tmp_path, broker_port=mosquitto.port, sinks=[v1_sink(own_influxdb)], cameras=st.cameras)
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        pub, _acked = start_publisher(mosquitto.port, st, 3000, rate=600)
        time.sleep(1.0)
        own_influxdb.stop()
        time.sleep(2.5)
        own_influxdb.start()
        pub.join(60)
        wait_for(lambda: points(own_influxdb) == 3000, timeout_s=60, what="3000 points after the outage")
        assert totals(own_influxdb) == st.truth
        stats = wait_for(
            lambda: (
                (r := gw.cli("buffer", "stats", "--json")).returncode == 0 and '"pending": 0' in r.stdout and r.stdout
            ),
            timeout_s=10,
            what="log drained",
        )
        assert '"pending": 0' in stats
        assert "unavailable" in gw.log_text() and "reachable again" in gw.log_text()


def test_spine_broker_restart_midstream(tmp_path, mosquitto, influxdb):
    """Mosquitto restarted (SIGTERM) while the gateway drains a backlog: nothing lost."""
    st = street(4)
    cfg = gateway_config(
        tmp_path, broker_port=mosquitto.port, sinks=[v1_sink(influxdb)], cameras=st.cameras, receive_max=50
    )
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        msgs = st.messages(4000)
        first = [next(msgs) for _ in range(2000)]
        assert publish_all("127.0.0.1", mosquitto.port, iter(first)) == 2000
        mosquitto.restart()
        assert publish_all("127.0.0.1", mosquitto.port, msgs) == 2000
        wait_for(lambda: points(influxdb) == 4000, timeout_s=60, what="4000 points")
        assert totals(influxdb) == st.truth
        assert gw.running


def test_spine_two_sinks_one_stopped(tmp_path, mosquitto, influxdb, own_influxdb):
    """Two sinks, one stopped: the other stays current; the stopped one catches up when back."""
    st = street(3)
    cfg = gateway_config(
        tmp_path,
        broker_port=mosquitto.port,
        cameras=st.cameras,
        sinks=[v1_sink(influxdb, "edge"), v1_sink(own_influxdb, "central")],
    )
    own_influxdb.stop()
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        assert publish_all("127.0.0.1", mosquitto.port, st.messages(1500)) == 1500
        wait_for(lambda: points(influxdb) == 1500, timeout_s=30, what="edge current while central is down")
        own_influxdb.start()
        wait_for(lambda: points(own_influxdb) == 1500, timeout_s=30, what="central caught up")
        assert totals(own_influxdb) == totals(influxdb) == st.truth


def test_spine_field_type_conflict_goes_to_dead_letters(tmp_path, mosquitto, influxdb):
    """A line InfluxDB rejects (field type conflict) lands in dead letters with the server's message;
    the rest is written and the sink keeps flowing."""
    bad_week_start = 1_431_907_200  # a week in 2015: its own shard, where `entries` is a string
    r = httpx.post(
        f"{influxdb.url}/write",
        params={"db": influxdb.db},
        content=f'footfall,device=seed entries="text" {bad_week_start + 3600}000000000'.encode(),
    )
    assert r.status_code == 204
    st = street(2)
    cfg = gateway_config(
        tmp_path, broker_port=mosquitto.port, sinks=[v1_sink(influxdb, batch_size=500)], cameras=st.cameras
    )
    bad = Street(cameras=["cam-00"], start_s=bad_week_start + 7200, seed=9)
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        msgs = list(st.messages(300))
        msgs.insert(150, next(bad.messages(1)))
        assert publish_all("127.0.0.1", mosquitto.port, iter(msgs)) == 301
        wait_for(lambda: points(influxdb) == 300, timeout_s=30, what="300 good points")
        assert publish_all("127.0.0.1", mosquitto.port, st.messages(10)) == 10  # keeps flowing
        stats = wait_for(
            lambda: (
                (r := gw.cli("buffer", "stats", "--json")).returncode == 0 and '"pending": 0' in r.stdout and r.stdout
            ),
            timeout_s=20,
            what="drained",
        )
    assert '"sink:edge influx_rejected": 1' in stats
    conn = sqlite3.connect(tmp_path / "log.sqlite")
    detail, raw = conn.execute("SELECT detail, raw FROM dead_letters WHERE origin = 'sink:edge'").fetchone()
    assert "conflict" in detail
    assert raw.startswith(b"footfall,") and str(bad.start_s).encode() in raw


def test_spine_log_cap_pauses_mqtt_and_resumes_without_loss(tmp_path, mosquitto, own_influxdb):
    """At the cap the gateway stops reading MQTT (the broker keeps the backlog) and resumes once the
    sink has drained the log: every report arrives, the pause is logged."""
    st = street(6)
    cfg = gateway_config(
        tmp_path,
        broker_port=mosquitto.port,
        sinks=[v1_sink(own_influxdb)],
        cameras=st.cameras,
        cap_bytes=1 << 20,
        receive_max=200,
    )
    own_influxdb.stop()
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        assert publish_all("127.0.0.1", mosquitto.port, st.messages(12_000)) == 12_000
        wait_for(lambda: "pausing MQTT intake" in gw.log_text(), timeout_s=30, what="pause at the cap")
        own_influxdb.start()
        wait_for(lambda: points(own_influxdb) == 12_000, timeout_s=90, what="12,000 points")
        assert "resuming MQTT intake" in gw.log_text()
        assert totals(own_influxdb) == st.truth


def test_spine_clock_not_synchronised_holds_records(tmp_path, mosquitto, influxdb):
    """Receive-time records wait while the clock is not synchronised (D7 seam: a flag file), then land
    with their true arrival time; records of a boot that never synchronised stay held and counted."""
    flag = tmp_path / "synced"
    st = street(1)
    cfg = gateway_config(
        tmp_path,
        broker_port=mosquitto.port,
        sinks=[v1_sink(influxdb)],
        cameras=st.cameras,
        sync_check="flag-file",
        flag_file=flag,
    )
    cfg = cfg.replace('model = "vivotek-sc8131"', 'model = "vivotek-sc8131"\ntrust_device_time = false')
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        t0 = time.time_ns()
        assert publish_all("127.0.0.1", mosquitto.port, st.messages(20)) == 20
        t1 = time.time_ns()

        def held_footfall() -> int:
            conn = sqlite3.connect(tmp_path / "log.sqlite")
            try:
                return conn.execute("SELECT COUNT(*) FROM waiting_clock WHERE measurement = 'footfall'").fetchone()[0]
            finally:
                conn.close()

        wait_for(lambda: held_footfall() == 20, timeout_s=15, what="20 held footfall records")
        held = gw.cli("buffer", "stats", "--json").stdout
        assert '"boot_synchronised": false' in held  # (the start-up heartbeat waits with them)
        time.sleep(0.5)
        assert points(influxdb) == 0
        flag.touch()
        wait_for(lambda: points(influxdb) == 20, timeout_s=20, what="20 points after synchronisation")
    times = [r["time"] for r in influxdb.rows('SELECT "entries" FROM footfall', influxdb.db)]
    assert all(t0 - 50_000_000 <= t <= t1 + 50_000_000 for t in times), (t0, times, t1)

    # A boot that never synchronised: its held records are kept and counted, never sent.
    conn = sqlite3.connect(tmp_path / "log.sqlite")
    conn.execute(
        "INSERT INTO waiting_clock (identity, class, measurement, head, boot_id, mono_ns) "
        "VALUES ('old-1', 0, 'footfall', 'footfall,device=cam-00,line=X entries=5i', 'boot-gone', 1)"
    )
    conn.commit()
    conn.close()
    with GatewayProcess(tmp_path, cfg) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        out = gw.cli("buffer", "stats").stdout
        assert "1 from boot boot-gone (never synchronised: kept, not sent)" in out
        time.sleep(1.0)
    assert points(influxdb) == 20


def test_spine_backlog_past_65535_with_sigkill_during_drain(tmp_path, mosquitto, influxdb):
    """A resumed session with a backlog far larger than Receive Maximum and past 65,535 queued
    messages, the gateway SIGKILLed in the middle of the drain: Mosquitto 2.0.11's faults (D4) are
    met — nothing lost, no point duplicated."""
    st = street(10)
    cfg = gateway_config(
        tmp_path, broker_port=mosquitto.port, sinks=[v1_sink(influxdb)], cameras=st.cameras, receive_max=1000
    )
    gw = GatewayProcess(tmp_path, cfg)
    gw.start()
    try:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        assert gw.stop() == 0  # the session stays on the broker
        total = 70_000
        pubs = []
        parts = [Street(cameras=st.cameras[i::2], seed=i + 5) for i in range(2)]
        for p in parts:
            pubs.append(start_publisher(mosquitto.port, p, total // 2))
        for t, _ in pubs:
            t.join(120)
        assert [a for _, a in pubs] == [[total // 2]] * 2
        gw.start()
        wait_for(lambda: points(influxdb) > 15_000, timeout_s=60, interval_s=0.05, what="drain under way")
        gw.kill()
        gw.start()
        wait_for(lambda: points(influxdb) == total, timeout_s=120, what=f"{total} points")
        time.sleep(1.0)
        assert points(influxdb) == total
        expected = parts[0].truth + parts[1].truth
        assert totals(influxdb) == expected
    finally:
        gw.stop()


def test_spine_v2_dialect_into_victoria_metrics(tmp_path, mosquitto, victoria):
    """The v2 write path (/api/v2/write, org + bucket + token) against a real server."""
    st = street(2)
    sink = {
        "name": "vm",
        "url": victoria.url,
        "dialect": "v2",
        "org": "district",
        "bucket": "sdgw",
        "flush_interval_s": 0.1,
    }
    cfg = gateway_config(tmp_path, broker_port=mosquitto.port, sinks=[sink], cameras=st.cameras)
    with GatewayProcess(tmp_path, cfg, env={"SDGW_SINK_VM_TOKEN": "t0ken"}) as gw:
        wait_for(lambda: "connected" in gw.log_text().lower(), timeout_s=15, what="gateway connected")
        assert publish_all("127.0.0.1", mosquitto.port, st.messages(200)) == 200

        def samples() -> int:
            return sum(len(s["values"]) for s in victoria.export('{__name__="footfall_entries"}'))

        wait_for(lambda: samples() == 200, timeout_s=30, interval_s=0.5, what="200 samples in VictoriaMetrics")
        series = victoria.export('{__name__="footfall_entries"}')
        got = Counter()
        for s in series:
            got[(s["metric"]["device"], s["metric"]["line"], "in")] += int(sum(s["values"]))
    assert got == Counter({k: v for k, v in st.truth.items() if k[2] == "in"})
    assert "t0ken" not in gw.log_text()


def test_cli_buffer_stats_without_a_log_is_a_clear_error(tmp_path):
    cfg = gateway_config(tmp_path / "nothing", broker_port=1, sinks=[], cameras=["c"])
    gw = GatewayProcess(tmp_path, cfg)
    r = gw.cli("buffer", "stats")
    assert r.returncode == 1 and "no log at" in r.stderr
