"""Token buckets per client (an API key's id, or a client address for open data).

Each client has `burst` tokens that refill at `rate_per_s`; a request takes one, and without one it
is refused with the time until the next token (the 429's Retry-After). The buckets live in the
process: each API replica limits on its own, so N replicas behind a balancer allow up to N× the
rate (stated in the README; a shared limiter would make the replicas stateful).

The table is bounded (`max_clients`, least recently seen evicted first): a flood of client
addresses cannot grow memory. An evicted client comes back with a full bucket, which only matters
for a client silent for longer than it takes `max_clients` others to arrive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client → (tokens, at)

    @property
    def enabled(self) -> bool:
        return self.rate_per_s > 0

    def take(self, client: str) -> float:
        """Take a token for `client`: 0.0 when granted, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate_per_s
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
