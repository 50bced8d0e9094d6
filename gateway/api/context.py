"""What the API app needs from its host: the same app runs inside `sdgw run` (mode "gateway") and
alone as `sdgw api` (mode "api"), decisions.md D15. Routes answer from InfluxDB, never from the
gateway's memory; the only local thing is `/v1/health` in gateway mode and `/metrics`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from gateway.api.influxql import InfluxQL
from gateway.config import GatewayConfig
from gateway.keys import KeyStore

if TYPE_CHECKING:
    from gateway.lockers_control import LockerControl
    from gateway.sources.http_push import HttpPushIngest

Mode = Literal["gateway", "api"]


@dataclass
class ApiContext:
    config: GatewayConfig
    mode: Mode
    keys: KeyStore
    influx: InfluxQL | None  # over config.query_sink; None when no sink is configured (routes answer 503)
    # Gateway mode: the gateway's own state, {"healthy": bool, "reasons": [str], …details}; None in api mode.
    local_health: Callable[[], dict[str, Any]] | None
    registry: CollectorRegistry
    # Gateway mode: remote open of the banks on this gateway's buses; None in api mode (D15)
    lockers: LockerControl | None = None
    # Gateway mode: devices that push over HTTP (POST /v1/ingest/<device>); None in api mode
    push: HttpPushIngest | None = None


def build_context(
    config: GatewayConfig,
    *,
    mode: Mode,
    local_health: Callable[[], dict[str, Any]] | None = None,
    registry: CollectorRegistry | None = None,
    lockers: LockerControl | None = None,
    push: HttpPushIngest | None = None,
) -> ApiContext:
    """The context for `config`. The gateway passes its metrics registry and local health; `sdgw api`
    gets a registry of its own with the process collectors. Raises ConfigError for unreadable secrets."""
    if mode == "gateway" and local_health is None:
        raise ValueError("gateway mode needs local_health")
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    sink = config.query_sink
    return ApiContext(
        config=config,
        mode=mode,
        keys=KeyStore(config.api_key_file, sites=[s.id for s in config.sites]),
        influx=InfluxQL.from_sink(sink, timeout_s=config.api.query_timeout_s) if sink else None,
        local_health=local_health,
        registry=registry,
        lockers=lockers,
        push=push,
    )
