"""Pseudonyms for identifiers tied to a person (decisions.md D13).

A 125 kHz card number, a pickup code or a phone number never leaves the gateway in clear: it is
replaced by HMAC-SHA256(period key, identifier), the first 16 bytes as 32 hex characters. The
gateway holds only the current period's key and the next one, in a key file readable by the service
user only (never in the TOML, never logged). The district derives the keys from its own secret on
its side (`sdgw pseudonym-keys`), so it can link a card across periods when it must and a stolen
gateway can link at most two periods.

Key file (JSON): {"format": "sdgw-pseudonym-keys", "period_s": 86400,
                  "keys": [{"period": "2026-11-25", "not_before": "2026-11-25T00:00:00Z", "key": "<hex>"}, …]}

The key in use is the newest whose `not_before` has passed by the wall clock — or, while the wall
clock is not trusted (D8), the oldest in the file: the period is the key's, not the record's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

FORMAT = "sdgw-pseudonym-keys"
DERIVATION_LABEL = b"sdgw-pseudonym-v1|"


class PseudonymKeyError(Exception):
    """The key file is missing, unreadable or malformed: personal identifiers cannot be handled."""


@dataclass(frozen=True, slots=True)
class PeriodKey:
    period: str
    not_before_ns: int
    key: bytes


def derive_key(district_secret: bytes, period: str) -> bytes:
    """The district's derivation of one period's key from its secret."""
    return hmac.new(district_secret, DERIVATION_LABEL + period.encode(), hashlib.sha256).digest()


def pseudonym(key: bytes, identifier: str) -> str:
    return hmac.new(key, identifier.encode(), hashlib.sha256).digest()[:16].hex()


def _ns(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(dt.timestamp()) * 1_000_000_000


def make_key_file(district_secret: bytes, start: datetime, periods: int, period_s: int = 86400) -> bytes:
    keys = []
    for i in range(periods):
        begin = start + timedelta(seconds=period_s * i)
        label = begin.strftime("%Y-%m-%d") if period_s % 86400 == 0 else begin.strftime("%Y-%m-%dT%H:%M:%SZ")
        keys.append(
            {
                "period": label,
                "not_before": begin.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "key": derive_key(district_secret, label).hex(),
            }
        )
    return orjson.dumps({"format": FORMAT, "period_s": period_s, "keys": keys}, option=orjson.OPT_INDENT_2)


class Pseudonymiser:
    """Loads the key file once (and again when it changes, e.g. the district rotated it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._keys: list[PeriodKey] = []
        self.reload()

    def reload(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            doc = orjson.loads(self.path.read_bytes())
            if doc.get("format") != FORMAT or not doc.get("keys"):
                raise ValueError("not an sdgw pseudonym key file")
            keys = sorted(
                (PeriodKey(k["period"], _ns(k["not_before"]), bytes.fromhex(k["key"])) for k in doc["keys"]),
                key=lambda k: k.not_before_ns,
            )
            if any(len(k.key) < 16 for k in keys):
                raise ValueError("a key is shorter than 128 bits")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PseudonymKeyError(f"pseudonym key file {self.path}: {exc}") from None
        self._keys = keys
        self._stamp = stamp

    def current(self, wall_ns: int | None) -> PeriodKey:
        if wall_ns is None:
            return self._keys[0]
        usable = [k for k in self._keys if k.not_before_ns <= wall_ns]
        return usable[-1] if usable else self._keys[0]

    def apply(self, identifier: str, wall_ns: int | None) -> tuple[str, str]:
        """(pseudonym, period) for an identifier."""
        key = self.current(wall_ns)
        return pseudonym(key.key, identifier), key.period
