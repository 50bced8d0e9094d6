"""The district's five dashboards, built from the measurements the gateway writes:

- `footfall` (counters: entries/exits per site and counting line), `occupancy` (people present),
- `rfid_presence` (arrive/depart/summary per reader, antenna; `gtin` tag, EPC/serial as fields),
- `locker_occupancy`, `locker_alarm`, `locker_door`, `locker_parcel`, `locker_command`,
  `locker_controller` (gateway/processors/lockers.py),
- `gateway_health` (the heartbeat: uptime_s, log_bytes, clock_synchronised, dead_letters,
  pending_<sink>).

Every panel filters by the template variables district / street (/ site where the measurement has a
site tag) and by `$timeFilter`; time series group by `time($__interval)`."""

from __future__ import annotations

from gateway.dashboards.model import (
    Json,
    Layout,
    Panel,
    dashboard,
    datasource_ref,
    q,
    query_variable,
    tag_regex,
    target,
    textbox_variable,
    where,
)

DEFAULT_DATASOURCE_UID = "sdgw-influxdb"
FOLDER_TITLE = "Smart District"
FOLDER_UID = "sdgw"
TAGS = ["sdgw"]
DISTRICT_STREET = where(tag_regex("district", "district"), tag_regex("street", "street"))
WITH_SITE = where(DISTRICT_STREET, tag_regex("site", "site"))
TIME = "$timeFilter"
BUCKET = "time($__interval)"


def _variables(ds: Json, *, site: bool = True, extra: list[Json] | None = None) -> list[Json]:
    out = [
        query_variable("district", "District", f"SHOW TAG VALUES WITH KEY = {q('district')}", ds),
        query_variable(
            "street",
            "Street",
            f"SHOW TAG VALUES WITH KEY = {q('street')} WHERE {tag_regex('district', 'district')}",
            ds,
        ),
    ]
    if site:
        out.append(
            query_variable("site", "Site", f"SHOW TAG VALUES WITH KEY = {q('site')} WHERE {DISTRICT_STREET}", ds)
        )
    return out + (extra or [])


def _gateways_online(filters: str, online_within: str) -> str:
    """Gateways heard from within `online_within` (3 heartbeats, as /v1/gateways decides)."""
    inner = (
        f"SELECT last({q('uptime_s')}) AS {q('uptime_s')} FROM {q('gateway_health')} "
        f"WHERE {filters} AND time > now() - {online_within} GROUP BY {q('gateway')}"
    )
    return f"SELECT count({q('uptime_s')}) AS {q('online')} FROM ({inner})"


def _last_seen(filters: str) -> str:
    # one selector only: its row carries the heartbeat's own time, i.e. "last seen"
    return (
        f"SELECT last({q('uptime_s')}) AS {q('uptime_s')} FROM {q('gateway_health')} "
        f"WHERE {filters} AND {TIME} GROUP BY {q('street')}, {q('gateway')}"
    )


def district_overview(ds_uid: str, online_within: str) -> Json:
    ds = datasource_ref(ds_uid)
    lay = Layout(ds)
    entries_today = (
        f"SELECT sum({q('entries')}) AS {q('entries')} FROM {q('footfall')} WHERE {DISTRICT_STREET} AND {TIME}"
    )
    lay.add(
        Panel(
            "timeseries",
            "Footfall by street (entries)",
            [
                target(
                    "A",
                    f"SELECT sum({q('entries')}) FROM {q('footfall')} WHERE {DISTRICT_STREET} AND {TIME} "
                    f"GROUP BY {BUCKET}, {q('street')} fill(0)",
                    alias="$tag_street",
                )
            ],
            w=24,
            interval="1m",
            max_data_points=500,
        )
    )
    lay.add(
        Panel(
            "stat",
            "Entries today",
            [target("A", entries_today)],
            w=6,
            h=5,
            time_from="now/d",
            description="Since midnight (dashboard time zone).",
        )
    )
    lay.add(
        Panel(
            "stat",
            "Same weekday last week, to this time",
            [target("A", entries_today)],
            w=6,
            h=5,
            time_from="now/d",
            time_shift="7d",
            description="The same window (midnight to now) seven days ago: compare with 'Entries today'.",
        )
    )
    lay.add(
        Panel(
            "stat",
            "Gateways online",
            [target("A", _gateways_online(DISTRICT_STREET, online_within))],
            w=6,
            h=5,
            description=f"Gateways whose last heartbeat is at most {online_within} old (3 heartbeats).",
        )
    )
    lay.add(
        Panel(
            "stat",
            "Locker alarms raised",
            [
                target(
                    "A",
                    f"SELECT count({q('is_active')}) AS {q('alarms')} FROM {q('locker_alarm')} "
                    f"WHERE {DISTRICT_STREET} AND {q('is_active')} = true AND {TIME}",
                )
            ],
            w=6,
            h=5,
        )
    )
    lay.add(
        Panel(
            "bargauge",
            "Entries today by street",
            [
                target(
                    "A",
                    f"SELECT sum({q('entries')}) FROM {q('footfall')} WHERE {DISTRICT_STREET} AND {TIME} "
                    f"GROUP BY {q('street')}",
                    alias="$tag_street",
                )
            ],
            w=8,
            time_from="now/d",
        )
    )
    lay.add(
        Panel(
            "bargauge",
            "Entries by street, same weekday last week",
            [
                target(
                    "A",
                    f"SELECT sum({q('entries')}) FROM {q('footfall')} WHERE {DISTRICT_STREET} AND {TIME} "
                    f"GROUP BY {q('street')}",
                    alias="$tag_street",
                )
            ],
            w=8,
            time_from="now/d",
            time_shift="7d",
        )
    )
    lay.add(Panel("table", "Gateways: last seen", [target("A", _last_seen(DISTRICT_STREET), table=True)], w=8))
    occupancy_inner = (
        "SELECT "
        + ", ".join(f"last({q(f)}) AS {q(f)}" for f in ("compartments", "loaded", "empty", "unknown"))
        + f" FROM {q('locker_occupancy')} WHERE {DISTRICT_STREET} AND {TIME} "
        f"GROUP BY {q('street')}, {q('gateway')}, {q('bank')}"
    )
    lay.add(
        Panel(
            "table",
            "Locker occupancy by street",
            [
                target(
                    "A",
                    "SELECT "
                    + ", ".join(f"sum({q(f)}) AS {q(f)}" for f in ("compartments", "loaded", "empty", "unknown"))
                    + f" FROM ({occupancy_inner}) GROUP BY {q('street')}",
                    table=True,
                )
            ],
            w=12,
            description="Latest occupancy of every bank, summed per street ('unknown': no item sensor).",
        )
    )
    lay.add(
        Panel(
            "table",
            "Locker alarms by street",
            [
                target(
                    "A",
                    f"SELECT count({q('is_active')}) AS {q('raised')} FROM {q('locker_alarm')} "
                    f"WHERE {DISTRICT_STREET} AND {q('is_active')} = true AND {TIME} "
                    f"GROUP BY {q('street')}, {q('alarm')}",
                    table=True,
                )
            ],
            w=12,
        )
    )
    return dashboard(
        uid="sdgw-district-overview",
        title="District overview",
        description="Footfall by street (today against the same weekday last week), lockers, gateways online.",
        tags=TAGS,
        panels=lay.panels,
        variables=_variables(ds, site=False),
        time_from="now-24h",
    )


def street(ds_uid: str) -> Json:
    ds = datasource_ref(ds_uid)
    lay = Layout(ds)
    for field, title in (("entries", "Entries"), ("exits", "Exits")):
        lay.add(
            Panel(
                "timeseries",
                f"{title} by site and entrance",
                [
                    target(
                        "A",
                        f"SELECT sum({q(field)}) FROM {q('footfall')} WHERE {WITH_SITE} AND {TIME} "
                        f"GROUP BY {BUCKET}, {q('site')}, {q('line')} fill(0)",
                        alias="$tag_site / $tag_line",
                    )
                ],
                interval="1m",
                max_data_points=500,
            )
        )
    lay.add(
        Panel(
            "table",
            "Totals in range by site and entrance",
            [
                target(
                    "A",
                    f"SELECT sum({q('entries')}) AS {q('entries')}, sum({q('exits')}) AS {q('exits')} "
                    f"FROM {q('footfall')} WHERE {WITH_SITE} AND {TIME} GROUP BY {q('site')}, {q('line')}",
                    table=True,
                )
            ],
        )
    )
    lay.add(
        Panel(
            "timeseries",
            "Occupancy (people present)",
            [
                target(
                    "A",
                    f"SELECT last({q('people')}) FROM {q('occupancy')} WHERE {WITH_SITE} AND {TIME} "
                    f"GROUP BY {BUCKET}, {q('site')}, {q('device')} fill(previous)",
                    alias="$tag_site / $tag_device",
                )
            ],
            interval="1m",
            max_data_points=500,
        )
    )
    lay.add(
        Panel(
            "timeseries",
            "RFID arrivals and departures by reader",
            [
                target(
                    ref,
                    f"SELECT count({q('reads')}) FROM {q('rfid_presence')} WHERE {WITH_SITE} "
                    f"AND {q('event')} = '{event}' AND {TIME} GROUP BY {BUCKET}, {q('reader')} fill(0)",
                    alias=f"$tag_reader {event}",
                )
                for ref, event in (("A", "arrive"), ("B", "depart"))
            ],
            interval="10s",
            max_data_points=500,
        )
    )
    lay.add(
        Panel(
            "table",
            "RFID items seen by reader",
            [
                target(
                    "A",
                    f"SELECT count(distinct({q('epc')})) AS {q('items')} FROM {q('rfid_presence')} "
                    f"WHERE {WITH_SITE} AND {TIME} GROUP BY {q('reader')}",
                    table=True,
                )
            ],
            description="Distinct EPCs per reader in the range (cards are pseudonyms and not counted here).",
        )
    )
    return dashboard(
        uid="sdgw-street",
        title="Street",
        description="Footfall by site and entrance, occupancy and RFID presence on one street.",
        tags=TAGS,
        panels=lay.panels,
        variables=_variables(ds),
        time_from="now-6h",
    )


def lockers(ds_uid: str) -> Json:
    ds = datasource_ref(ds_uid)
    bank_var = query_variable(
        "bank",
        "Bank",
        f"SHOW TAG VALUES FROM {q('locker_occupancy')} WITH KEY = {q('bank')} WHERE {DISTRICT_STREET}",
        ds,
    )
    f = where(WITH_SITE, tag_regex("bank", "bank"))
    lay = Layout(ds)
    counts = ("loaded", "empty", "unknown", "out_of_service", "doors_open")
    lay.add(
        Panel(
            "timeseries",
            "Compartments by state, per bank",
            [
                target(
                    "A",
                    "SELECT "
                    + ", ".join(f"last({q(c)}) AS {q(c)}" for c in counts)
                    + f" FROM {q('locker_occupancy')} WHERE {f} AND {TIME} "
                    f"GROUP BY {BUCKET}, {q('bank')} fill(previous)",
                    alias="$tag_bank $col",
                )
            ],
            w=24,
            interval="1m",
            max_data_points=500,
        )
    )
    lay.add(
        Panel(
            "table",
            "Banks (latest occupancy)",
            [
                target(
                    "A",
                    "SELECT "
                    + ", ".join(f"last({q(c)}) AS {q(c)}" for c in ("compartments", *counts))
                    + f" FROM {q('locker_occupancy')} WHERE {f} AND {TIME} GROUP BY {q('street')}, {q('bank')}",
                    table=True,
                )
            ],
        )
    )
    lay.add(
        Panel(
            "table",
            "Controllers",
            [
                target(
                    "A",
                    f"SELECT last({q('is_online')}) AS {q('online')}, last({q('missed_polls')}) AS "
                    f"{q('missed_polls')}, last({q('outage_s')}) AS {q('outage_s')} FROM {q('locker_controller')} "
                    f"WHERE {f} AND {TIME} GROUP BY {q('bank')}, {q('board')}",
                    table=True,
                )
            ],
            description="Lock-board controllers that went offline (missed status polls) and came back.",
        )
    )
    lay.add(
        Panel(
            "table",
            "Alarms",
            [
                target(
                    "A",
                    f"SELECT {q('is_active')}, {q('duration_s')}, {q('detail')} FROM {q('locker_alarm')} "
                    f"WHERE {f} AND {TIME} GROUP BY {q('bank')}, {q('compartment')}, {q('alarm')} "
                    "ORDER BY time DESC LIMIT 200",
                    table=True,
                )
            ],
            w=24,
            description="Raised (is_active true) and cleared (false, with how long it lasted).",
        )
    )
    lay.add(
        Panel(
            "timeseries",
            "Door openings per bank",
            [
                target(
                    "A",
                    f"SELECT count({q('is_open')}) FROM {q('locker_door')} WHERE {f} AND {q('is_open')} = true "
                    f"AND {TIME} GROUP BY {BUCKET}, {q('bank')} fill(0)",
                    alias="$tag_bank",
                )
            ],
            interval="1m",
            max_data_points=500,
        )
    )
    lay.add(
        Panel(
            "timeseries",
            "Parcels deposited and picked up",
            [
                target(
                    ref,
                    f"SELECT count({q('source')}) FROM {q('locker_parcel')} WHERE {f} "
                    f"AND {q('action')} = '{action}' AND {TIME} GROUP BY {BUCKET}, {q('bank')} fill(0)",
                    alias=f"$tag_bank {action}",
                )
                for ref, action in (("A", "deposit"), ("B", "pickup"))
            ],
            interval="1m",
            max_data_points=500,
        )
    )
    lay.add(
        Panel(
            "table",
            "Commands",
            [
                target(
                    "A",
                    f"SELECT {q('action')}, {q('outcome')}, {q('actor')}, {q('latency_ms')} "
                    f"FROM {q('locker_command')} WHERE {f} AND {TIME} GROUP BY {q('bank')}, {q('compartment')} "
                    "ORDER BY time DESC LIMIT 200",
                    table=True,
                )
            ],
            w=24,
        )
    )
    return dashboard(
        uid="sdgw-lockers",
        title="Lockers",
        description="Parcel lockers per bank: occupancy, doors, parcels, commands, controllers and alarms.",
        tags=TAGS,
        panels=lay.panels,
        variables=_variables(ds, extra=[bank_var]),
        time_from="now-24h",
    )


def traceability(ds_uid: str) -> Json:
    ds = datasource_ref(ds_uid)
    gtin = textbox_variable("gtin", "GTIN", "A GTIN-14 (or its first digits, e.g. a company prefix); empty: every GTIN")
    f = where(DISTRICT_STREET, f"{q('gtin')} =~ /^$gtin/", f"{q('gtin')} != ''")
    lay = Layout(ds)
    lay.add(
        Panel(
            "table",
            "Sightings",
            [
                target(
                    "A",
                    f"SELECT {q('event')}, {q('epc')}, {q('serial')}, {q('reads')}, {q('peak_rssi_dbm')}, "
                    f"{q('dwell_s')} FROM {q('rfid_presence')} WHERE {f} AND {TIME} "
                    f"GROUP BY {q('gtin')}, {q('street')}, {q('reader')}, {q('antenna')} "
                    "ORDER BY time DESC LIMIT 500",
                    table=True,
                )
            ],
            w=24,
            h=10,
            description="Where and when items of the GTIN were seen: arrivals, departures and dwell summaries.",
        )
    )
    lay.add(
        Panel(
            "timeseries",
            "Sightings per reader",
            [
                target(
                    "A",
                    f"SELECT count({q('reads')}) FROM {q('rfid_presence')} WHERE {f} AND {TIME} "
                    f"GROUP BY {BUCKET}, {q('street')}, {q('reader')} fill(0)",
                    alias="$tag_street / $tag_reader",
                )
            ],
            interval="10s",
            max_data_points=500,
        )
    )
    lay.add(
        Panel(
            "table",
            "Items and last place per GTIN",
            [
                target(
                    "A",
                    f"SELECT count(distinct({q('epc')})) AS {q('items')} FROM {q('rfid_presence')} "
                    f"WHERE {f} AND {TIME} GROUP BY {q('gtin')}, {q('street')}, {q('reader')}",
                    table=True,
                )
            ],
        )
    )
    return dashboard(
        uid="sdgw-traceability",
        title="Traceability",
        description="RFID sightings by GTIN: type a GTIN (or a prefix) in the GTIN box.",
        tags=TAGS,
        panels=lay.panels,
        variables=_variables(ds, site=False, extra=[gtin]),
        time_from="now-7d",
    )


def gateway_health(ds_uid: str, online_within: str) -> Json:
    ds = datasource_ref(ds_uid)
    gw_var = query_variable(
        "gateway",
        "Gateway",
        f"SHOW TAG VALUES FROM {q('gateway_health')} WITH KEY = {q('gateway')} WHERE {DISTRICT_STREET}",
        ds,
    )
    f = where(DISTRICT_STREET, tag_regex("gateway", "gateway"))
    lay = Layout(ds)
    lay.add(Panel("table", "Gateways: last seen", [target("A", _last_seen(f), table=True)], w=12))
    lay.add(
        Panel(
            "stat",
            "Gateways online",
            [target("A", _gateways_online(f, online_within))],
            w=6,
            description=f"Last heartbeat at most {online_within} old (3 heartbeats).",
        )
    )
    lay.add(
        Panel(
            "table",
            "Clock synchronised (last heartbeat)",
            [
                target(
                    "A",
                    f"SELECT last({q('clock_synchronised')}) AS {q('synchronised')} FROM {q('gateway_health')} "
                    f"WHERE {f} AND {TIME} GROUP BY {q('gateway')}",
                    table=True,
                )
            ],
            w=6,
        )
    )

    def series(title: str, select: str, unit: str = "", description: str = "") -> Panel:
        return Panel(
            "timeseries",
            title,
            [
                target(
                    "A",
                    f"SELECT {select} FROM {q('gateway_health')} WHERE {f} AND {TIME} "
                    f"GROUP BY {BUCKET}, {q('gateway')} fill(null)",
                    alias="$tag_gateway $col",
                )
            ],
            unit=unit,
            description=description,
            interval="1m",
            max_data_points=500,
        )

    lay.add(series("Log size", f"max({q('log_bytes')}) AS {q('log_bytes')}", unit="bytes"))
    lay.add(
        series(
            "Log depth: records pending per sink",
            "max(/^pending_/)",
            description="Records in the log not yet accepted by each sink (the heartbeat's pending_<sink>).",
        )
    )
    lay.add(series("Dead letters", f"max({q('dead_letters')}) AS {q('dead_letters')}"))
    lay.add(
        series(
            "Uptime",
            f"last({q('uptime_s')}) AS {q('uptime_s')}",
            unit="s",
            description="A drop to zero is a restart. MQTT reconnects and decode errors are not written to "
            "InfluxDB: they are Prometheus counters at /metrics (sdgw_mqtt_reconnects_total, …).",
        )
    )
    return dashboard(
        uid="sdgw-gateway-health",
        title="Gateway health",
        description="The gateways' heartbeats: last seen, log depth, dead letters, clock, uptime.",
        tags=TAGS,
        panels=lay.panels,
        variables=_variables(ds, site=False, extra=[gw_var]),
        time_from="now-6h",
    )


def build_all(datasource_uid: str = DEFAULT_DATASOURCE_UID, online_within: str = "3m") -> dict[str, Json]:
    """Every dashboard by its uid."""
    boards = [
        district_overview(datasource_uid, online_within),
        street(datasource_uid),
        lockers(datasource_uid),
        traceability(datasource_uid),
        gateway_health(datasource_uid, online_within),
    ]
    return {b["uid"]: b for b in boards}
