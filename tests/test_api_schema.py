"""Schemathesis against the app's own OpenAPI document: generated requests to the footfall routes
and open data, sent with a merchant key to a real uvicorn over the real InfluxDB (with footfall in
it), never get a 5xx and every answer conforms to the documented status codes, media types and
schemas. Examples are bounded so the run stays well under a minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.footfall_support import footfall_line, running_api, write_lines

ROUTES = ("/v1/sites", "/v1/footfall", "/v1/occupancy", "/v1/open/footfall")
# The response checks; `ignored_auth` is left out because it sends its own probe through the requests
# transport (see below), and the 401 without a key is tested in test_api_footfall.py.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {"/v1/sites": 10, "/v1/footfall": 120, "/v1/occupancy": 40, "/v1/open/footfall": 60}


# Random strings almost never name a configured site or a real date: half the examples get
# realistic values in place of the generated ones, so the run reaches the answers with data.
REALISTIC = {
    "site": ["sh-1", "be-1", "other-1", "gate-n"],
    "street": ["s1", "berlin-st"],
    "interval": ["15m", "1h", "1d"],
    "from": ["2026-01-10", "2026-03-29", (datetime.now(UTC) - timedelta(hours=30)).strftime("%Y-%m-%dT%H:%M:%SZ")],
    "to": ["2026-01-11", "2026-03-29T12:00:00+02:00", datetime.now(UTC).strftime("%Y-%m-%d")],
    "date": ["2026-01-10", datetime.now(UTC).strftime("%Y-%m-%d")],
}
REQUIRED = {"/v1/footfall": {"site"}, "/v1/occupancy": {"site"}, "/v1/open/footfall": {"street", "date"}}


def _overlay() -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in REALISTIC.items()})


def _explore(base_url: str, operation, examples: int, headers: dict[str, str]) -> set[int]:
    """Run `examples` generated requests of one operation; the statuses seen."""
    required = REQUIRED.get(operation.path, set())
    seen: set[int] = set()

    # derandomize: the same requests every run, so "the run reached 200 and 422" cannot flake
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(), overlay=_overlay())
    def run(case, overlay) -> None:
        if case.query is not None:
            case.query.update({k: v for k, v in overlay.items() if k in case.query or k in required})
        # sent with httpx: schemathesis' own requests transport trips over the urllib3-future that
        # another dependency installs in place of urllib3 (its pool manager has no `pools.keys()`)
        kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
        response = httpx.request(
            kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers"), timeout=30
        )
        assert response.status_code < 500, (case.path, case.query, response.text)
        assert not ({k for k, v in kwargs.items() if v} - {"method", "url", "params", "headers"}), kwargs
        case.validate_response(response, checks=CHECKS, headers=headers)
        seen.add(response.status_code)

    run()
    return seen


def test_api_schema_merchant_routes_conform_and_never_5xx(tmp_path, influxdb):
    now = datetime.now(UTC)
    write_lines(
        influxdb,
        [
            footfall_line(s, now - timedelta(hours=h), h % 9, h % 4)
            for s in ("sh-1", "other-1")
            for h in range(0, 96, 3)
        ],
    )
    extra = "rate_limit_per_s = 0"
    with running_api(tmp_path, influxdb, api_extra=extra, extra="[open_data]\nrate_limit_per_s = 0") as api:
        schema = schemathesis.openapi.from_dict(api.get("/openapi.json", None).json())
        headers = {"Authorization": f"Bearer {api.merchant_a}"}
        statuses: dict[str, set[int]] = {}
        for path in ROUTES:
            statuses[path] = _explore(api.url, schema[path]["GET"], EXAMPLES[path], headers)
    # the run reached the answers, not only the refusals
    assert 200 in statuses["/v1/footfall"] and 422 in statuses["/v1/footfall"], statuses
    assert 200 in statuses["/v1/sites"] and 200 in statuses["/v1/occupancy"], statuses
    assert 200 in statuses["/v1/open/footfall"], statuses
