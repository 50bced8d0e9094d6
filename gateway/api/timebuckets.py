"""Time buckets aligned in a site's zone, daylight saving included, and the one InfluxQL grain
that fills them exactly.

Why not InfluxQL's `tz()`: `GROUP BY time(1d)` buckets are fixed lengths counted from the epoch (plus
an offset); a local day is 23 or 25 hours on a DST change, and 1.6's `tz()` shifts the buckets by
one offset for the whole query. Instead the local bucket boundaries are computed here, in UTC, and
InfluxDB groups by the largest grain that divides every boundary: the greatest common divisor of
the bucket lengths, shifted so that the first boundary is a grain boundary (`time(g, offset)`). For
Asia/Shanghai days that is one 24 h grain per day; for Europe/Berlin across a change it is 1 h.
Every grain cell then lies inside exactly one local bucket and its sum is re-bucketed here. Exact
for every zone whose offsets are multiples of 15 minutes — all zones since 2000, hence EARLIEST.

Local buckets: 15m — the UTC quarter hours (local quarter hours are the same instants); 1h — a
local clock hour, where the repeated hour of an autumn change is two buckets (one per offset) and
the skipped hour of a spring change none; 1d — from one local midnight (the date's first instant)
to the next: 23, 24 or 25 hours.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.sites import local_instant

Interval = Literal["15m", "1h", "1d"]
INTERVALS: tuple[Interval, ...] = ("15m", "1h", "1d")
# The longest range per interval, in local wall-clock days (so a month of 15m buckets fits whatever
# DST does): about 3,000 buckets at most, one InfluxQL answer of at most that many rows.
MAX_DAYS: dict[str, int] = {"15m": 31, "1h": 92, "1d": 366}
CELL_S = 900
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)

DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
TIME_PATTERN = r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2}))?$"
_DATE = re.compile(DATE_PATTERN)
_TIME = re.compile(TIME_PATTERN)
_FRACTION = re.compile(r"\.(\d{1,9})")


class TimeParamError(ValueError):
    """A time parameter that cannot be used; the message says what is expected."""


def parse_date(text: str) -> date:
    if not _DATE.match(text):
        raise TimeParamError("a date as YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise TimeParamError(f"a real calendar date as YYYY-MM-DD ({exc})") from None


def parse_time(text: str, zone: ZoneInfo, *, is_end: bool) -> datetime:
    """An RFC 3339 date-time with an offset (`Z` or ±HH:MM), or a plain date in `zone`: as a start,
    that day's first instant; as an end, the next day's (the whole day is included)."""
    if not _TIME.match(text):
        raise TimeParamError("RFC 3339 with an offset (2026-03-29T10:00:00+02:00, …Z) or a date YYYY-MM-DD")
    if _DATE.match(text):
        day = parse_date(text)
        try:
            return local_instant(day + timedelta(days=1) if is_end else day, 0, zone)
        except OverflowError:
            raise TimeParamError(f"a date from {EARLIEST.date()} to {LATEST.date()}") from None
    # fromisoformat (3.11) takes at most 6 fractional digits and no lower-case z or t
    normal = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text.upper().replace(" ", "T"))
    try:
        return datetime.fromisoformat(normal.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise TimeParamError(f"a real date and time ({exc})") from None


def check_range(start: datetime, end: datetime, interval: Interval, zone: ZoneInfo) -> None:
    """`start` before `end`, inside the supported years, at most MAX_DAYS of local wall-clock time."""
    if start < EARLIEST or end > LATEST:
        raise TimeParamError(f"times from {EARLIEST.date()} to {LATEST.date()}")
    if start >= end:
        raise TimeParamError("`from` must be before `to`")
    wall = end.astimezone(zone).replace(tzinfo=None) - start.astimezone(zone).replace(tzinfo=None)
    if wall > timedelta(days=MAX_DAYS[interval]):
        raise TimeParamError(f"with interval={interval} the range may span at most {MAX_DAYS[interval]} days")


def _floor_cell(t: datetime) -> datetime:
    s = math.floor(t.timestamp())
    return datetime.fromtimestamp(s - s % CELL_S, UTC)


def _hour_label(t: datetime, zone: ZoneInfo) -> tuple:
    local = t.astimezone(zone)
    return local.date(), local.hour, local.utcoffset()


def boundaries(start: datetime, end: datetime, interval: Interval, zone: ZoneInfo) -> list[datetime]:
    """b0 < b1 < … < bn in UTC: the local buckets [b_i, b_i+1) covering [start, end), widened to
    whole buckets."""
    step = timedelta(seconds=CELL_S)
    if interval == "1d":
        first = start.astimezone(zone).date()
        last = (end - timedelta(microseconds=1)).astimezone(zone).date()
        return [local_instant(first + timedelta(days=i), 0, zone) for i in range((last - first).days + 2)]
    b = _floor_cell(start)
    if interval == "15m":
        out = [b]
        while out[-1] < end:
            out.append(out[-1] + step)
        return out
    while _hour_label(b - step, zone) == _hour_label(b, zone):
        b -= step
    out, t, label = [b], b, _hour_label(b, zone)
    while True:
        t += step
        next_label = _hour_label(t, zone)
        if next_label != label:
            out.append(t)
            label = next_label
            if t >= end:
                return out


def query_grain(bounds: list[datetime]) -> tuple[int, int]:
    """(grain_s, offset_s) for `GROUP BY time(grain_s s, offset_s s)`: every boundary is a grain
    boundary, so no grain cell straddles two buckets."""
    seconds = [int(b.timestamp()) for b in bounds]
    grain = 0
    for a, b in pairwise(seconds):
        grain = math.gcd(grain, b - a)
    return grain, seconds[0] % grain


def rebucket(bounds: list[datetime], rows: list[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """Per bucket (in, out) from (time_ns, in, out) grain rows; buckets without rows are zeros."""
    edges = [int(b.timestamp()) * 1_000_000_000 for b in bounds]
    sums = [[0, 0] for _ in range(len(bounds) - 1)]
    for ts_ns, entries, exits in rows:
        i = bisect_right(edges, ts_ns) - 1
        if 0 <= i < len(sums):
            sums[i][0] += entries
            sums[i][1] += exits
    return [(a, b) for a, b in sums]


def local_text(t: datetime, zone: ZoneInfo) -> str:
    """RFC 3339 in the site's local offset, e.g. 2026-03-29T03:00:00+02:00."""
    return t.astimezone(zone).isoformat()
