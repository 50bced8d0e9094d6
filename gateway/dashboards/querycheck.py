"""Run a dashboard's queries as Grafana would send them: resolve its variables in order (each
variable query sees the ones before it), then substitute them, `$timeFilter` and `$__interval` into
every panel target. `run` is any callable that executes InfluxQL and returns rows (dicts) or raises."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from gateway.dashboards.interpolate import (
    ALL,
    builtins,
    panel_range,
    resolve_range,
    substitute,
    variable_text,
)

Run = Callable[[str], list[dict]]
Selection = Mapping[str, str | Sequence[str]]


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    style: str
    text: str


@dataclass(frozen=True)
class Outcome:
    query: PanelQuery
    rows: int
    error: str | None


def resolve_variables(dashboard: Mapping, run: Run, selection: Selection | None = None) -> tuple[dict, dict]:
    """(texts, options): each variable's text as substituted into queries, and the values its query
    offered. Unselected query variables are All; textboxes keep their current value."""
    selection = selection or {}
    texts: dict[str, str] = {}
    options: dict[str, list[str]] = {}
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if var["type"] == "query":
            rows = run(substitute(var["query"], texts))
            options[name] = sorted({str(r["value"]) for r in rows if "value" in r})
            texts[name] = variable_text(var, selection.get(name, ALL), options[name])
        elif var["type"] == "textbox":
            texts[name] = str(selection.get(name, var.get("current", {}).get("value", "")))
        else:
            raise ValueError(f"{dashboard['uid']}: variable type {var['type']!r} is not simulated here")
    return texts, options


def panel_queries(
    dashboard: Mapping, texts: Mapping[str, str], now_ms: int, *, style: str, tz_offset_ms: int = 0
) -> list[PanelQuery]:
    rng = resolve_range(dashboard["time"]["from"], dashboard["time"]["to"], now_ms, tz_offset_ms=tz_offset_ms)
    out = []
    for panel in dashboard["panels"]:
        prng = panel_range(rng, panel, now_ms, tz_offset_ms=tz_offset_ms)
        values = {**texts, **builtins(prng, panel, style=style)}
        for t in panel.get("targets", []):
            out.append(PanelQuery(dashboard["uid"], panel["title"], t["refId"], style, substitute(t["query"], values)))
    return out


def check(
    dashboard: Mapping,
    run: Run,
    now_ms: int,
    *,
    selection: Selection | None = None,
    styles: Sequence[str] = ("browser", "server"),
    tz_offset_ms: int = 0,
) -> list[Outcome]:
    texts, _ = resolve_variables(dashboard, run, selection)
    outcomes = []
    for style in styles:
        for pq in panel_queries(dashboard, texts, now_ms, style=style, tz_offset_ms=tz_offset_ms):
            try:
                outcomes.append(Outcome(pq, len(run(pq.text)), None))
            except Exception as exc:  # reported per query: the caller decides
                outcomes.append(Outcome(pq, 0, str(exc)))
    return outcomes
