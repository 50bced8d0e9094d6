"""Request dependencies as `Annotated` aliases (style.md 19): the context, the caller's key, and the
merchant scope. A route states what it needs in its signature; no route checks roles or sites itself.

    Ctx            the ApiContext
    AnyKey         any current key (401 otherwise)
    OperatorKey    an operator key (403 for a merchant)
    MerchantScope  the sites this key may see: every site for an operator, its own for a merchant
    LimitedScope   MerchantScope after the key's rate limit (the merchant routes)
    OpenClient     the open-data rate limit, per client address (no key)
    MetricsAccess  /metrics: open to loopback when config says so, else an operator key
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.api.context import ApiContext
from gateway.api.influxql import quote_ident, quote_literal
from gateway.api.problems import Problem, forbidden, unauthorized
from gateway.api.ratelimit import TokenBuckets
from gateway.config import SiteConfig
from gateway.keys import Check, KeyRecord, Role

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    bearerFormat="sdgw_<id>_<secret>",
    description="An API key from `sdgw keys create`, sent as `Authorization: Bearer <key>`.",
)


def get_ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


Ctx = Annotated[ApiContext, Depends(get_ctx)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]

_REFUSALS = {
    Check.MALFORMED: "the API key is not in the form sdgw_<id>_<secret>",
    Check.UNKNOWN: "the API key is not known",
    Check.REVOKED: "the API key has been revoked",
}


async def any_key(ctx: Ctx, credentials: Credentials) -> KeyRecord:
    if credentials is None:
        raise unauthorized("missing", "this route needs an API key: send `Authorization: Bearer <key>`")
    check, record = ctx.keys.verify(credentials.credentials)
    if check is not Check.OK or record is None:
        raise unauthorized(check.value, _REFUSALS[check])
    return record


AnyKey = Annotated[KeyRecord, Depends(any_key)]


async def operator_key(key: AnyKey) -> KeyRecord:
    if key.role is not Role.OPERATOR:
        raise forbidden("operator-only", "this route is for operator keys")
    return key


OperatorKey = Annotated[KeyRecord, Depends(operator_key)]


@dataclass(frozen=True)
class SiteScope:
    """The sites a request may see. `sites` is None for an operator: every site."""

    key: KeyRecord
    sites: frozenset[str] | None

    def allows(self, site: str) -> bool:
        return self.sites is None or site in self.sites

    def require(self, site: str) -> None:
        if not self.allows(site):
            raise forbidden("site-out-of-scope", f"site {site!r} is not one of this key's sites")

    def site(self, ctx: ApiContext, site_id: str) -> SiteConfig:
        """The configured site `site_id` if this key may see it. An unknown site and another
        merchant's site get the very same 404, so a merchant cannot learn which ids exist."""
        found = next((s for s in ctx.config.sites if s.id == site_id), None)
        if found is None or not self.allows(site_id):
            raise Problem(404, "no such site")
        return found

    def influxql_condition(self, tag: str = "site") -> str | None:
        """A WHERE term limiting a query to the scope's sites; None for an operator."""
        if self.sites is None:
            return None
        terms = [f"{quote_ident(tag)} = {quote_literal(s)}" for s in sorted(self.sites)]
        return "(" + " OR ".join(terms) + ")"


async def merchant_scope(ctx: Ctx, key: AnyKey) -> SiteScope:
    if key.role is Role.OPERATOR:
        return SiteScope(key, None)
    # a key's sites were checked against [[sites]] when it was made; a site since removed from
    # the config is simply no longer in scope (D15)
    return SiteScope(key, frozenset(key.sites) & {s.id for s in ctx.config.sites})


MerchantScope = Annotated[SiteScope, Depends(merchant_scope)]


def rate_limited(limiter: TokenBuckets, client: str) -> None:
    wait_s = limiter.take(client)
    if wait_s > 0:
        retry_after = max(1, math.ceil(wait_s))
        raise Problem(
            429,
            f"more than {limiter.burst} requests at once or {limiter.rate_per_s:g} per second; "
            f"retry in {retry_after} s",
            type_="rate-limited",
            title="Too many requests",
            headers={"Retry-After": str(retry_after)},
            retry_after_s=retry_after,
        )


async def limited_scope(request: Request, scope: MerchantScope) -> SiteScope:
    rate_limited(request.app.state.key_limits, scope.key.id)
    return scope


LimitedScope = Annotated[SiteScope, Depends(limited_scope)]


async def open_client(request: Request) -> str:
    # the TCP peer, or X-Forwarded-For from a trusted (loopback) proxy: see metrics_access below
    address = request.client.host if request.client else "unknown"
    rate_limited(request.app.state.open_limits, address)
    return address


OpenClient = Annotated[str, Depends(open_client)]


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


async def metrics_access(request: Request, ctx: Ctx, credentials: Credentials) -> KeyRecord | None:
    # The client address is the TCP peer, or what X-Forwarded-For says when the peer is a trusted
    # proxy (uvicorn's proxy_headers, trusting loopback peers only): a local reverse proxy that does not
    # set X-Forwarded-For makes every client look like loopback — see server.py.
    if ctx.config.api.metrics_open_to_loopback and is_loopback(request.client.host if request.client else None):
        return None
    return await operator_key(await any_key(ctx, credentials))


MetricsAccess = Annotated[KeyRecord | None, Depends(metrics_access)]
