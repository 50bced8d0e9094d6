"""Pseudonyms (D13): keyed, stable within a period, different across periods, key file checked."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from gateway.privacy import Pseudonymiser, PseudonymKeyError, derive_key, make_key_file, pseudonym

DAY = 86_400 * 1_000_000_000


def test_pseudonym_is_hmac_sha256_first_16_bytes():
    key = b"k" * 32
    assert pseudonym(key, "0F00AE70F3") == hmac.new(key, b"0F00AE70F3", hashlib.sha256).digest()[:16].hex()
    assert len(pseudonym(key, "x")) == 32


def test_key_file_periods_and_selection(tmp_path):
    start = datetime(2026, 11, 25, tzinfo=UTC)
    path = tmp_path / "keys.json"
    path.write_bytes(make_key_file(b"district-secret", start, 2))
    p = Pseudonymiser(path)
    t0 = int(start.timestamp()) * 1_000_000_000
    a, period_a = p.apply("0F00AE70F3", t0 + 3600 * 10**9)
    b, period_b = p.apply("0F00AE70F3", t0 + DAY + 1)
    assert (period_a, period_b) == ("2026-11-25", "2026-11-26")
    assert a != b
    assert a == pseudonym(derive_key(b"district-secret", "2026-11-25"), "0F00AE70F3")
    assert p.apply("0F00AE70F3", None)[1] == "2026-11-25"  # clock not trusted: the oldest key
    assert "0F00AE70F3" not in path.read_text()


def test_key_file_problems_are_clear(tmp_path):
    with pytest.raises(PseudonymKeyError, match=r"keys\.json"):
        Pseudonymiser(tmp_path / "keys.json")
    (tmp_path / "keys.json").write_text('{"format": "other"}')
    with pytest.raises(PseudonymKeyError, match="not an sdgw pseudonym key file"):
        Pseudonymiser(tmp_path / "keys.json")
