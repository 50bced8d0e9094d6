"""Business hours and business days of a site, pure: schedules are parsed from config text and
questions are answered for an instant passed in (no clock read here).

A site's week is written as the technician reads it off the shop door:

    hours = "10:00-22:00"                                  # every day
    hours_by_day = { fri = "10:00-02:00", sun = "closed" }  # per-weekday overrides
    closed_dates = [2026-02-17]                             # holidays: no business day opens that date

A span whose closing time is not after its opening time closes on the next calendar day
("18:00-02:00"); "00:00-24:00" is round the clock. A business day belongs to the date it opens on:
Friday's "18:00-02:00" runs into Saturday even when Saturday is a closed date. Times are wall-clock
times in the site's zone; an opening inside a daylight-saving gap (02:30 on a spring-forward night)
happens at the first instant after the gap, as a clock on the wall would show it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CLOSED = "closed"
ROUND_THE_CLOCK = "00:00-24:00"
DAY_MIN = 24 * 60
# How far back the business day in progress is looked for: a week of closed days plus a margin.
LOOKBACK_DAYS = 15

_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True, slots=True)
class Span:
    """One business day's hours in minutes after the opening date's local midnight; `close_min`
    passes 1440 when the site closes after midnight."""

    open_min: int
    close_min: int

    def text(self) -> str:
        close = self.close_min - DAY_MIN if self.close_min > DAY_MIN else self.close_min
        return f"{self.open_min // 60:02d}:{self.open_min % 60:02d}-{close // 60:02d}:{close % 60:02d}"


def parse_span(text: str) -> Span | None:
    """ "HH:MM-HH:MM" → a Span; "closed" → None. ValueError says what is expected."""
    if text.strip().lower() == CLOSED:
        return None
    m = _SPAN.match(text.strip())
    if not m:
        raise ValueError(f'hours as "HH:MM-HH:MM" (e.g. "10:00-22:00") or "closed", not {text!r}')
    oh, om, ch, cm = (int(g) for g in m.groups())
    if oh > 23 or om > 59 or cm > 59 or ch > 24 or (ch == 24 and cm):
        raise ValueError(f"hours {text!r}: opening 00:00–23:59, closing 00:00–24:00")
    open_min, close_min = oh * 60 + om, ch * 60 + cm
    if open_min == close_min:
        raise ValueError(f'hours {text!r}: opening and closing must differ ("{ROUND_THE_CLOCK}" is round the clock)')
    if close_min < open_min:
        close_min += DAY_MIN  # closes after midnight
    return Span(open_min, close_min)


@dataclass(frozen=True, slots=True)
class Schedule:
    by_weekday: tuple[Span | None, ...]  # Monday first, None = closed
    closed_dates: frozenset[date]

    def span_on(self, day: date) -> Span | None:
        """The hours of the business day opening on `day`, None when none opens."""
        if day in self.closed_dates:
            return None
        return self.by_weekday[day.weekday()]

    def week_text(self) -> dict[str, str]:
        return {name: span.text() if span else CLOSED for name, span in zip(WEEKDAYS, self.by_weekday, strict=True)}


def build_schedule(hours: str, hours_by_day: Mapping[str, str], closed_dates: Iterable[date] = ()) -> Schedule:
    """The weekly schedule from config values; ValueError names the bad part."""
    default = parse_span(hours)
    week = [default] * 7
    for name, text in hours_by_day.items():
        key = name.strip().lower()
        if key not in WEEKDAYS:
            raise ValueError(f"hours_by_day: {name!r} is not a weekday (one of {', '.join(WEEKDAYS)})")
        week[WEEKDAYS.index(key)] = parse_span(text)
    return Schedule(tuple(week), frozenset(closed_dates))


def local_instant(day: date, minutes: int, zone: ZoneInfo) -> datetime:
    """The UTC instant of wall time `day` 00:00 + `minutes` in `zone`. In a gap (spring forward)
    fold=0 reads the wall time with the offset before the change, which lands just after the gap."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minutes)
    return wall.replace(tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class BusinessDay:
    date: date  # the local date it opened on
    opens: datetime  # UTC
    closes: datetime  # UTC

    def is_open_at(self, now: datetime) -> bool:
        return self.opens <= now < self.closes


def current_business_day(schedule: Schedule, zone: ZoneInfo, now: datetime) -> BusinessDay:
    """The business day in progress at `now`, or the last one that opened before it (the site is
    closed now). A site closed for the whole look-back gets today's local calendar day."""
    today = now.astimezone(zone).date()
    for back in range(LOOKBACK_DAYS):
        day = today - timedelta(days=back)
        span = schedule.span_on(day)
        if span is None:
            continue
        opens = local_instant(day, span.open_min, zone)
        if opens <= now:
            return BusinessDay(day, opens, local_instant(day, span.close_min, zone))
    return BusinessDay(today, local_instant(today, 0, zone), local_instant(today, DAY_MIN, zone))
