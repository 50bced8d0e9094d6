"""What Grafana does to an InfluxQL query before sending it, so that the committed dashboards can be
run on a real InfluxDB without a Grafana (decisions.md D17).

- Template variables: `$name`, `${name}`, `[[name]]`. A multi-value or include-All variable becomes a
  regex alternative: one value regex-escaped, several as `(a|b)`, All as the variable's `allValue`
  (else every value). Other variables are inserted as typed.
- `$timeFilter`: Grafana's browser-side InfluxDB query renders a relative range `now-6h … now` as
  `time >= now() - 6h`, and anything else (an absolute range, a panel's `now/d` or `timeShift`) as
  `time >= <from>ms and time <= <to>ms`, dropping the upper bound when it is `now`. Its server-side
  query path always renders `time >= <from>ms and time <= <to>ms`. Both styles are produced here.
- `$__interval` / `$__interval_ms`: range ÷ max data points, raised to the panel's minimum interval,
  then rounded to Grafana's "nice" step table.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
DAY_MS = MS["d"]
ALL = "$__all"

# Grafana's interval rounding: (at most this many ms → this step). Past the table: one year.
_NICE_STEPS: tuple[tuple[int, int], ...] = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1_500, 1_000),
    (3_500, 2_000),
    (7_500, 5_000),
    (12_500, 10_000),
    (17_500, 15_000),
    (25_000, 20_000),
    (45_000, 30_000),
    (90_000, 60_000),
    (210_000, 120_000),
    (450_000, 300_000),
    (750_000, 600_000),
    (1_050_000, 900_000),
    (1_500_000, 1_200_000),
    (2_700_000, 1_800_000),
    (5_400_000, 3_600_000),
    (9_000_000, 7_200_000),
    (16_200_000, 10_800_000),
    (32_400_000, 21_600_000),
    (86_400_000, 43_200_000),
    (604_800_000, 86_400_000),
    (1_814_400_000, 604_800_000),
    (3_628_799_999, 2_592_000_000),
)
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+)\]\]|\$\{(\w+)\}")
_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|\[\]{}/])")
DEFAULT_MAX_DATA_POINTS = 1000  # roughly a panel's width in pixels, what Grafana uses when unset


def duration_ms(text: str) -> int:
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"not a Grafana duration: {text!r}")
    return int(m.group(1)) * MS[m.group(2)]


def round_interval(ms: float) -> int:
    for limit, step in _NICE_STEPS:
        if ms <= limit:
            return step
    return MS["y"]


def format_interval(ms: int) -> str:
    for unit in ("d", "h", "m", "s"):
        if ms >= MS[unit] and ms % MS[unit] == 0:
            return f"{ms // MS[unit]}{unit}"
    return f"{ms}ms"


def regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(r"\\\1", value)


@dataclass(frozen=True)
class TimeRange:
    """A range as Grafana holds it: the raw text (`now-6h`, `now/d`, …) and the resolved ms."""

    raw_from: str
    raw_to: str
    from_ms: int
    to_ms: int

    @property
    def span_ms(self) -> int:
        return self.to_ms - self.from_ms


def resolve_range(raw_from: str, raw_to: str, now_ms: int, *, tz_offset_ms: int = 0) -> TimeRange:
    """Resolve `now`, `now-<n><unit>` and `now/d` (start of today in the dashboard's zone, given as an
    offset from UTC) to epoch ms."""

    def one(text: str) -> int:
        if text == "now":
            return now_ms
        if text == "now/d":
            local = now_ms + tz_offset_ms
            return local - local % DAY_MS - tz_offset_ms
        if text.startswith("now-"):
            return now_ms - duration_ms(text[4:])
        raise ValueError(f"time {text!r}: only now, now-<duration> and now/d are used by these dashboards")

    return TimeRange(raw_from, raw_to, one(raw_from), one(raw_to))


def panel_range(dashboard_range: TimeRange, panel: Mapping, now_ms: int, *, tz_offset_ms: int = 0) -> TimeRange:
    """The panel's own range: `timeFrom` replaces the dashboard's (e.g. `now/d`, `24h`); `timeShift`
    moves both ends back (and makes them absolute, as in Grafana)."""
    rng = dashboard_range
    time_from = panel.get("timeFrom")
    if time_from:
        raw = time_from if time_from.startswith("now") else f"now-{time_from}"
        rng = resolve_range(raw, "now", now_ms, tz_offset_ms=tz_offset_ms)
    shift = panel.get("timeShift")
    if shift:
        back = duration_ms(shift)
        rng = TimeRange("absolute", "absolute", rng.from_ms - back, rng.to_ms - back)
    return rng


def time_filter(rng: TimeRange, *, style: str) -> str:
    """`style`: "browser" (Grafana's front-end InfluxQL rendering) or "server" (its back end)."""
    if style == "server":
        return f"time >= {rng.from_ms}ms and time <= {rng.to_ms}ms"
    if style != "browser":
        raise ValueError(f"unknown style {style!r}")
    m = re.fullmatch(r"now-(\d+)([dhms])", rng.raw_from)
    lower = f"now() - {m.group(1)}{m.group(2)}" if m else f"{rng.from_ms}ms"
    if rng.raw_to == "now":
        return f"time >= {lower}"
    upper = f"{rng.to_ms}ms"
    return f"time >= {lower} and time <= {upper}"


def interval_ms(rng: TimeRange, panel: Mapping) -> int:
    points = panel.get("maxDataPoints") or DEFAULT_MAX_DATA_POINTS
    raw = rng.span_ms / points
    minimum = panel.get("interval")
    if minimum:
        raw = max(raw, duration_ms(minimum.lstrip(">")))
    return round_interval(raw)


def variable_text(variable: Mapping, selected: str | Sequence[str], options: Sequence[str]) -> str:
    """A selection (ALL, one value or several) as Grafana writes it into an InfluxQL query."""
    regex_like = variable.get("multi") or variable.get("includeAll")
    if not regex_like:
        return selected if isinstance(selected, str) else ",".join(selected)
    if selected == ALL or (not isinstance(selected, str) and list(selected) == [ALL]):
        if variable.get("allValue"):
            return variable["allValue"]
        values = list(options)
    else:
        values = [selected] if isinstance(selected, str) else list(selected)
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(query: str, values: Mapping[str, str]) -> str:
    """Replace `$name`, `${name}`, `[[name]]` by `values[name]`; unknown names stay as they are
    (Grafana leaves them too, and InfluxDB then rejects the query: the tests see it)."""

    def repl(m: re.Match) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, m.group(0))

    return _VARIABLE.sub(repl, query)


def builtins(rng: TimeRange, panel: Mapping, *, style: str) -> dict[str, str]:
    step = interval_ms(rng, panel)
    return {
        "timeFilter": time_filter(rng, style=style),
        "__interval": format_interval(step),
        "__interval_ms": str(step),
        "__from": str(rng.from_ms),
        "__to": str(rng.to_ms),
    }
