"""Every device model's vectors (tests/vectors/<model>/*.json): payload in, events or a reject out.

A vector file holds `payload_text` (MQTT JSON) or `payload_hex`, then either `events` (compared whole)
or `reject` (the reason)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.events import Reject
from devices.registry import MODELS

VECTORS = Path(__file__).parent / "vectors"
CASES = sorted(VECTORS.glob("*/*.json"))


def _payload(case: dict) -> bytes:
    return case["payload_text"].encode() if "payload_text" in case else bytes.fromhex(case["payload_hex"])


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_vector(path: Path):
    case = json.loads(path.read_text())
    model = MODELS[path.parent.name]
    result = model.decode(_payload(case), received_ns=0)
    if "reject" in case:
        assert isinstance(result, Reject), result
        assert result.reason.value == case["reject"]
    else:
        assert not isinstance(result, Reject), result
        got = [{"event": type(e).__name__, **dataclasses.asdict(e)} for e in result]
        assert got == case["events"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registry_every_model_has_vectors_with_a_reject(name):
    files = list((VECTORS / name).glob("*.json"))
    assert files, f"{name} has no vectors"
    assert any("reject" in json.loads(f.read_text()) for f in files), f"{name} has no rejected vector"


@pytest.mark.parametrize("name", sorted(MODELS))
@given(data=st.binary(max_size=512))
def test_codec_never_raises_on_random_bytes(name, data):
    result = MODELS[name].decode(data, received_ns=0)
    assert isinstance(result, (list, Reject))


@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(
                st.sampled_from(
                    ["Data", "RuleType", "CountingInfo", "RuleName", "In", "Out", "StartTime", "EndTime", "x"]
                ),
                children,
                max_size=6,
            )
        ),
        max_leaves=30,
    )
)
def test_vivotek_never_raises_on_random_json(doc):
    result = MODELS["vivotek-sc8131"].decode(json.dumps(doc).encode(), received_ns=0)
    assert isinstance(result, (list, Reject))
