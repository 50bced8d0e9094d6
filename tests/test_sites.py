"""Sites: business hours parsing, the business day in progress (across midnight, closed days, a
DST gap), the [[sites]] config keys and their cross-checks, and per-line sites in the pipeline."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from devices.events import CounterInterval
from gateway.config import ConfigError, parse_config
from gateway.pipeline import Arrival, Pipeline
from gateway.sites import Span, build_schedule, current_business_day, parse_span

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("10:00-22:00", Span(600, 1320)),
        ("18:00-02:00", Span(1080, 1560)),
        ("00:00-24:00", Span(0, 1440)),
        (" 09:30-17:45 ", Span(570, 1065)),
        ("closed", None),
        ("Closed", None),
    ],
)
def test_sites_span_parses(text, span):
    assert parse_span(text) == span
    if span is not None:
        assert parse_span(span.text()) == span


@pytest.mark.parametrize("text", ["10-22", "10:00", "25:00-26:00", "10:00-24:30", "10:60-12:00", "10:00-10:00", ""])
def test_sites_bad_span_says_what_is_expected(text):
    with pytest.raises(ValueError, match=r"HH:MM|opening|closing"):
        parse_span(text)


def test_sites_business_day_runs_past_midnight_into_a_closed_date():
    """Friday 18:00–02:00: at Saturday 01:30 Friday's business day is still open, even though
    Saturday is a closed date; at 02:00 it has closed and it is still the current business day."""
    schedule = build_schedule("10:00-22:00", {"fri": "18:00-02:00"}, [date(2026, 1, 10)])
    at = datetime(2026, 1, 10, 1, 30, tzinfo=SHANGHAI)
    day = current_business_day(schedule, SHANGHAI, at)
    assert day.date == date(2026, 1, 9) and day.is_open_at(at)
    assert day.opens == datetime(2026, 1, 9, 18, 0, tzinfo=SHANGHAI)
    assert day.closes == datetime(2026, 1, 10, 2, 0, tzinfo=SHANGHAI)
    later = datetime(2026, 1, 10, 12, 0, tzinfo=SHANGHAI)  # Saturday noon, closed date
    day = current_business_day(schedule, SHANGHAI, later)
    assert day.date == date(2026, 1, 9) and not day.is_open_at(later)
    sunday = datetime(2026, 1, 11, 9, 0, tzinfo=SHANGHAI)  # before Sunday's opening
    assert current_business_day(schedule, SHANGHAI, sunday).date == date(2026, 1, 9)
    assert current_business_day(schedule, SHANGHAI, sunday.replace(hour=10)).date == date(2026, 1, 11)


def test_sites_opening_in_a_dst_gap_is_just_after_it():
    schedule = build_schedule("02:30-20:00", {})
    at = datetime(2026, 3, 29, 12, 0, tzinfo=BERLIN)
    day = current_business_day(schedule, BERLIN, at)
    assert day.opens.astimezone(BERLIN) == datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN)
    assert day.closes - day.opens == datetime(2026, 3, 29, 20, tzinfo=BERLIN) - datetime(
        2026, 3, 29, 3, 30, tzinfo=BERLIN
    )


def test_sites_never_open_falls_back_to_the_local_day():
    schedule = build_schedule("closed", {})
    at = datetime(2026, 1, 10, 15, 0, tzinfo=UTC)
    day = current_business_day(schedule, SHANGHAI, at)
    assert day.opens == datetime(2026, 1, 10, 0, 0, tzinfo=SHANGHAI)


BASE = """
[gateway]
district = "d1"
street = "main-st"
id = "g1"
timezone = "Europe/Berlin"
data_dir = "/tmp/sdgw-test-sites"
"""


def test_sites_config_defaults_and_keys():
    cfg = parse_config(
        BASE
        + """
[[sites]]
id = "a"

[[sites]]
id = "b"
kind = "entrance"
street = "side-st"
timezone = "Asia/Shanghai"
hours = "10:00-02:00"
hours_by_day = { Sun = "closed", mon = "12:00-18:00" }
closed_dates = [2026-02-17, "2026-02-18"]
"""
    )
    a, b = cfg.sites
    assert (a.kind, a.street, a.timezone, a.hours) == ("shop", "main-st", "Europe/Berlin", "00:00-24:00")
    assert (b.kind, b.street, b.zone) == ("entrance", "side-st", SHANGHAI)
    week = b.schedule.week_text()
    assert week["sun"] == "closed" and week["mon"] == "12:00-18:00" and week["tue"] == "10:00-02:00"
    assert b.schedule.closed_dates == {date(2026, 2, 17), date(2026, 2, 18)}
    no_zone = parse_config(BASE.replace('timezone = "Europe/Berlin"\n', "") + '[[sites]]\nid = "a"\n')
    assert no_zone.sites[0].timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("site", "key", "words"),
    [
        ('hours = "10-22"', "sites[0:a].hours", "HH:MM"),
        ('hours = "09:00-09:00"', "sites[0:a].hours", "must differ"),
        ('hours_by_day = { funday = "10:00-12:00" }', "sites[0:a].hours_by_day", "not a weekday"),
        ('hours_by_day = { mon = "late" }', "sites[0:a].hours_by_day", "HH:MM"),
        ('timezone = "Mars/Olympus"', "sites[0:a].timezone", "IANA"),
        ('kind = "kiosk"', "sites[0:a].kind", "shop"),
        ('closed_dates = ["2026-02-30"]', "sites[0:a].closed_dates[0]", "date"),
    ],
)
def test_sites_bad_config_names_the_key(site, key, words):
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + f'[[sites]]\nid = "a"\n{site}\n', "gw.toml")
    text = str(err.value)
    assert f"gw.toml: {key}:" in text and words in text, text


DEVICE = """
[mqtt]
[[sites]]
id = "shop-a"
[[sites]]
id = "shop-b"
[[devices]]
id = "cam-1"
model = "vivotek-sc8131"
topic = "vivotek/cam-1/report"
site = "shop-a"
"""


def test_sites_device_line_to_unknown_site_is_a_config_error():
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + DEVICE + 'lines = { "Line 2" = "shop-z" }\n', "gw.toml")
    assert "lines.'Line 2' = 'shop-z' is not one of [[sites]]" in str(err.value)


def test_sites_pipeline_tags_each_line_with_its_site():
    """A counter watching two doors: its mapped line's points carry that line's site, the others
    the device's own site."""
    cfg = parse_config(BASE + DEVICE + 'lines = { "Line 2" = "shop-b" }\n')
    pipeline = Pipeline(cfg)
    device = cfg.devices[0]
    t0 = 1_767_225_600 * 10**9
    events = [
        CounterInterval(line=line, entries=3, exits=1, start_ns=t0, end_ns=t0 + 900 * 10**9)
        for line in ("Line 1", "Line 2")
    ]
    arrival = Arrival(wall_ns=t0, mono_ns=1, boot_id="b", wall_trusted=True)
    drafts = pipeline.drafts(device, events, arrival, 0)
    assert [(d.tags["line"], d.tags["site"]) for d in drafts] == [("Line 1", "shop-a"), ("Line 2", "shop-b")]
