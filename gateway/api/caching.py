"""Answers that pollers can revalidate: a strong ETag over the exact body, If-None-Match → 304,
and Cache-Control.

The ETag is a hash of the bytes sent, so two replicas answering from the same InfluxDB give the same
ETag, and a 304 means "the very same bytes" (RFC 9110 §8.8.3: strong validator). The 304 costs
the InfluxDB query all the same — the body must be built to be compared — but not its transfer.
If-None-Match uses the weak comparison (§13.1.2): `W/"x"` matches `"x"`.
"""

from __future__ import annotations

import hashlib

from fastapi import Response

ETAG_HEX_CHARS = 32  # 128 bits of SHA-256


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:ETAG_HEX_CHARS] + '"'


def none_match(if_none_match: str | None, etag: str) -> bool:
    """True when the If-None-Match header names `etag` (or is `*`): the client's copy is current."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*":
            return True
        if tag.startswith("W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False


def cached_response(
    body: bytes,
    *,
    media_type: str,
    max_age_s: int,
    if_none_match: str | None,
    private: bool = True,
) -> Response:
    """The answer for `body`: 200 with it, or 304 without it when the client already has it."""
    etag = etag_of(body)
    headers = {"ETag": etag, "Cache-Control": f"{'private' if private else 'public'}, max-age={max_age_s}"}
    if private:
        headers["Vary"] = "Authorization"  # one key's answer is never served to another
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def response_headers(private: bool = True) -> dict[str, dict]:
    """OpenAPI `headers` of a cached answer."""
    headers = {
        "ETag": {
            "description": "strong validator of the body; send it back in If-None-Match",
            "schema": {"type": "string"},
        },
        "Cache-Control": {
            "description": "`private, max-age=N` (keyed routes) or `public, max-age=N`",
            "schema": {"type": "string"},
        },
    }
    if private:
        headers["Vary"] = {"description": "`Authorization`", "schema": {"type": "string"}}
    return headers
