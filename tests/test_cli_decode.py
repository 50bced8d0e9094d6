"""`sdgw decode`: the technician's decoder masks personal values unless asked (decisions.md D13)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARD_FRAME = "02 30 31 30 30 30 37 33 34 45 30 44 32 03"  # device-protocols §1 R1: card 01000734E0
DEPOSIT = json.loads((ROOT / "tests/vectors/open-locker-mqtt/parcel-deposited-extension.json").read_text())


def sdgw(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, input=stdin, cwd=ROOT, timeout=60
    )


def test_card_id_masked_by_default_and_clear_on_request():
    masked = sdgw("decode", "-d", "rdm6300", CARD_FRAME)
    assert masked.returncode == 0, masked.stderr
    event = json.loads(masked.stdout)
    assert event["tag_hex"] == "********E0" and event["masked"] == ["tag_hex"]
    assert "0734" not in masked.stdout
    clear = json.loads(sdgw("decode", "-d", "rdm6300", "--show-personal", CARD_FRAME).stdout)
    assert clear["tag_hex"] == "01000734E0" and "masked" not in clear


def test_locker_pickup_code_phone_and_name_masked():
    out = sdgw("decode", "-d", "open-locker-mqtt", "-", stdin=DEPOSIT["payload_text"])
    assert out.returncode == 0, out.stderr
    for secret in ("482913", "+8613800138000", "Li Wei"):
        assert secret not in out.stdout
    event = json.loads(out.stdout)
    assert event["parcel_id"] == "SF1234567890CN"  # not personal: a parcel's id
    assert sorted(event["masked"]) == ["pickup_code", "recipient_name", "recipient_phone"]


def test_epc_is_not_masked():
    """An item's EPC is not personal: printed whole."""
    out = sdgw("decode", "-d", "m100", "BB 02 27 00 11 C9 34 00 30 75 1F EB 70 5C 59 04 E3 D5 0D 70 3A 76 F4 7E")
    assert out.returncode == 0, out.stderr
    event = json.loads(out.stdout)
    assert event["tag_hex"] == "30751FEB705C5904E3D50D70" and "masked" not in event
