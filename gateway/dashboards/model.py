"""Small builders for Grafana's dashboard JSON model (schemaVersion 39): panels, InfluxQL targets,
template variables and a left-to-right grid layout.

Every target is a raw InfluxQL query (`rawQuery: true`): the query text is the whole truth and is what
the tests run on a real InfluxDB. Identifiers are always double-quoted (InfluxQL keywords such as `in`
would otherwise break a query, decisions.md D8)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA_VERSION = 39
GRID_WIDTH = 24  # Grafana's grid is 24 columns wide

Json = dict[str, Any]


def datasource_ref(uid: str) -> Json:
    return {"type": "influxdb", "uid": uid}


def q(name: str) -> str:
    """A double-quoted InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tag_regex(tag: str, variable: str) -> str:
    """`"tag" =~ /^$variable$/`: multi-value and All selections become a regex (Grafana's convention)."""
    return f"{q(tag)} =~ /^${variable}$/"


def where(*conditions: str) -> str:
    return " AND ".join(c for c in conditions if c)


def target(ref_id: str, query: str, *, alias: str = "", table: bool = False) -> Json:
    t: Json = {
        "refId": ref_id,
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
    }
    if alias:
        t["alias"] = alias
    return t


def query_variable(name: str, label: str, query: str, datasource: Json) -> Json:
    """A query variable (multi-value, with All = `.*` so that points without the tag still match)."""
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": datasource,
        "query": query,
        "definition": query,
        "refresh": 1,  # on dashboard load
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "sort": 1,
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
    }


def textbox_variable(name: str, label: str, description: str) -> Json:
    return {
        "type": "textbox",
        "name": name,
        "label": label,
        "description": description,
        "query": "",
        "current": {"selected": False, "text": "", "value": ""},
        "options": [{"selected": True, "text": "", "value": ""}],
        "hide": 0,
        "skipUrlSync": False,
    }


@dataclass
class Panel:
    """One panel before layout: `w`/`h` in grid units; ids and positions are given by `Layout`."""

    kind: str  # timeseries | stat | table | bargauge
    title: str
    targets: list[Json]
    w: int = 12
    h: int = 8
    description: str = ""
    unit: str = ""
    interval: str = ""  # the panel's minimum interval (lower bound of $__interval)
    max_data_points: int | None = None
    time_from: str = ""  # panel relative time, e.g. "now/d" (today so far)
    time_shift: str = ""  # e.g. "7d": the same window a week earlier
    options: Json = field(default_factory=dict)
    stack: bool = False

    def to_json(self, panel_id: int, x: int, y: int, datasource: Json) -> Json:
        defaults: Json = {}
        if self.unit:
            defaults["unit"] = self.unit
        if self.kind == "timeseries":
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "spanNulls": True}
            if self.stack:
                defaults["custom"]["stacking"] = {"mode": "normal", "group": "A"}
        out: Json = {
            "id": panel_id,
            "type": self.kind,
            "title": self.title,
            "datasource": datasource,
            "gridPos": {"h": self.h, "w": self.w, "x": x, "y": y},
            "targets": [dict(t, datasource=datasource) for t in self.targets],
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": self.options or _default_options(self.kind),
        }
        if self.description:
            out["description"] = self.description
        if self.interval:
            out["interval"] = self.interval
        if self.max_data_points:
            out["maxDataPoints"] = self.max_data_points
        if self.time_from:
            out["timeFrom"] = self.time_from
        if self.time_shift:
            out["timeShift"] = self.time_shift
        return out


def _default_options(kind: str) -> Json:
    if kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "auto",
        }
    if kind == "bargauge":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "basic",
        }
    if kind == "table":
        return {"showHeader": True}
    return {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}


class Layout:
    """Places panels left to right, wrapping to a new row when the 24 columns are used up."""

    def __init__(self, datasource: Json) -> None:
        self.datasource = datasource
        self.panels: list[Json] = []
        self._x = self._y = self._row_h = 0

    def add(self, panel: Panel) -> None:
        if not 1 <= panel.w <= GRID_WIDTH:
            raise ValueError(f"panel {panel.title!r}: width {panel.w} outside 1..{GRID_WIDTH}")
        if self._x + panel.w > GRID_WIDTH:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        self.panels.append(panel.to_json(len(self.panels) + 1, self._x, self._y, self.datasource))
        self._x += panel.w
        self._row_h = max(self._row_h, panel.h)


def dashboard(
    *,
    uid: str,
    title: str,
    description: str,
    tags: list[str],
    panels: list[Json],
    variables: list[Json],
    time_from: str,
    refresh: str = "1m",
    timezone: str = "browser",
) -> Json:
    return {
        "id": None,
        "uid": uid,
        "title": title,
        "description": description,
        "tags": tags,
        "timezone": timezone,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": refresh,
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "templating": {"list": variables},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }
