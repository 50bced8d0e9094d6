"""The emulators' HTTP pusher: what a camera's "HTTP notification" does with a report.

POST each document to <base>/v1/ingest/<device> with HTTP Basic (user = the device id). Like a
camera, keep a report and send it again on a connection error, 5xx or 429/503 (honouring
Retry-After, capped), and drop it on another 4xx (a camera cannot fix a document the server
refuses). Returns counts: accepted (2xx), dropped (4xx), attempts.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable

import httpx


def push_all(
    base_url: str,
    reports: Iterable[tuple[str, bytes]],
    password: Callable[[str], str],
    *,
    rate: float = 0.0,
    max_retry_s: float = 2.0,
    give_up_s: float = 120.0,
) -> Counter:
    """`reports`: (device id, document). Paced at `rate` per second (0 = as fast as answered)."""
    out: Counter = Counter()
    t0 = time.monotonic()
    with httpx.Client(timeout=10.0) as client:
        for n, (device, document) in enumerate(reports):
            if rate:
                delay = t0 + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            deadline = time.monotonic() + give_up_s
            backoff = 0.1
            while True:
                out["attempts"] += 1
                try:
                    r = client.post(
                        f"{base_url}/v1/ingest/{device}",
                        content=document,
                        auth=(device, password(device)),
                        headers={"Content-Type": "application/json"},
                    )
                except httpx.TransportError:
                    status, wait = 0, backoff
                else:
                    status = r.status_code
                    wait = min(float(r.headers.get("Retry-After", backoff)), max_retry_s)
                if 200 <= status < 300:
                    out["accepted"] += 1
                    break
                if status and status < 500 and status != 429:
                    out["dropped"] += 1
                    out[f"status_{status}"] += 1
                    break
                if time.monotonic() > deadline:
                    out["gave_up"] += 1
                    break
                time.sleep(wait)
                backoff = min(backoff * 2, max_retry_s)
    return out
