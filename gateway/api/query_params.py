"""What the footfall and open-data routes share about their query: strictness and problems.

A parameter given twice, or one the route does not know (a misspelling, `Site=` for `site=`), is
refused with 422 instead of being resolved silently: a cache or proxy in front might pick the
other copy than we do, and a typo must not quietly turn into a default."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from gateway.api.problems import Problem

RATE_LIMIT_DOC = (
    "Rate-limited per API key (token bucket, `[api] rate_limit_per_s` / `rate_limit_burst`, per replica): "
    "429 with Retry-After when exceeded."
)

IfNoneMatch = Annotated[
    str | None,
    Header(alias="If-None-Match", description="an ETag from an earlier answer: 304 without a body if still current"),
]


def invalid_param(name: str, detail: str, **extensions: Any) -> Problem:
    """A 422 shaped like FastAPI's own validation problems (problems.py): `errors` names the parameter."""
    return Problem(
        422,
        f"query parameter {name!r}: {detail}",
        type_="invalid-request",
        title="Invalid request",
        errors=[{"in": "query", "name": name, "detail": detail}],
        **extensions,
    )


def strict_query(*known: str) -> Any:
    """A route dependency: 422 for a repeated query parameter or one not in `known`."""

    async def check(request: Request) -> None:
        counts = Counter(k for k, _ in request.query_params.multi_items())
        for name, count in counts.items():
            if name not in known:
                name = name[:40]
                raise invalid_param(name, f"unknown parameter (this route takes: {', '.join(known) or 'none'})")
            if count > 1:
                raise invalid_param(name, "given more than once")

    return Depends(check)
