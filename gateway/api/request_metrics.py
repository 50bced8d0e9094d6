"""Per-request counters for the API, in the registry `/metrics` serves (style.md 18: outcomes are
metrics, not log lines; uvicorn's access log is off). Labelled by the route *template*
(`/v1/gateways`), never the raw path, so a scan of random URLs adds one label value, not thousands."""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_UNMATCHED = "(unmatched)"
# Clients choose the method token: anything else is "OTHER", or a scan could mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True)
class _Metrics:
    requests: Counter
    duration: Histogram


# One set per registry: create_app may be called more than once over the same registry (tests, reloads).
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    metrics = _BY_REGISTRY.get(registry)
    if metrics is None:
        metrics = _Metrics(
            Counter(
                "sdgw_api_requests",
                "API requests answered, by method, route template and status",
                ["method", "route", "status"],
                registry=registry,
            ),
            Histogram(
                "sdgw_api_request_duration_seconds",
                "Time to answer an API request, by route template",
                ["route"],
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                registry=registry,
            ),
        )
        _BY_REGISTRY[registry] = metrics
    return metrics


class RequestMetrics:
    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.metrics = _metrics_for(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", _UNMATCHED)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.duration.labels(route).observe(time.perf_counter() - started)
