"""Every line-protocol case against the real InfluxDB 1.6.7 (decisions.md D16a): what encode_head accepts
is read back exactly (InfluxQL, epoch=ns: measurement, tags, field values and types); what it refuses is
shown to be harmful when sent anyway, or, where 1.6.7 tolerates it, documented as such in `note`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import httpx
import pytest

from gateway.sinks.lineproto import (
    INT64_MAX,
    INT64_MIN,
    MAX_TS_NS,
    MIN_TS_NS,
    LineProtocolError,
    encode_head,
    encode_line,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}
UNREADABLE = "unreadable"  # the HTTP answer itself could not be parsed


@dataclass(frozen=True)
class Point:
    """One point as InfluxQL reads it back; fields map to (InfluxQL type, value)."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, tuple[str, object]]
    ts_ns: int = 1


def typed(fields: dict) -> dict[str, tuple[str, object]]:
    return {k: (_TYPES[type(v)], v) for k, v in fields.items()}


@dataclass(frozen=True)
class Case:
    id: str
    measurement: str
    tags: dict[str, str]
    fields: dict
    ts_ns: int = 1
    refused: bool = False
    # What the server does with the line a docs-following (or naive) encoder would send instead:
    raw: bytes | None = None
    answer: int | str | None = None  # HTTP status, or UNREADABLE
    harm: list[Point] = field(default_factory=list)  # what is stored after `raw`
    note: str = ""

    def expected(self) -> list[Point]:
        return [Point(self.measurement, {k: v for k, v in self.tags.items() if v}, typed(self.fields), self.ts_ns)]


F1 = {"f": ("integer", 1)}

CASES = [
    # --- accepted, and stored exactly ---
    Case(
        "types",
        "m",
        {"site": "s1"},
        {"i": 1, "x": 1.5, "s": "str", "b": True, "c": False},
        raw=b"m,site=s1 i=1u 1",
        answer=400,
        note="unsigned suffix: 1.x answers 'invalid number'",
    ),
    Case("measurement_escapes", "m x,y=z\"'#", {}, {"f": 1}),
    Case("measurement_leading_space", " m", {}, {"f": 1}),
    Case("measurement_unicode", "数据 😀", {"k": "é"}, {"f": 1}),
    Case("measurement_equals_unescaped", "a=b", {}, {"f": 1}, note="'=' needs no escape in a measurement"),
    Case("tag_escapes", "m", {'k ,="': 'v ,="#'}, {"f": 1}),
    Case(
        "tag_backslash_inside",
        "m",
        {"a": "x\\y", "b": "x\\,y", "c": "x\\ y", "d": "x\\=y", "e": '\\"', "g": "\\\\x"},
        {"f": 1},
        note="1.6.7 keeps a backslash inside a tag key or value as is (no \\\\ escape exists)",
    ),
    Case("tag_leading_hash_and_spaces", "m", {"k": "#v", "j": " v "}, {"f": 1}),
    Case("tag_empty_value_omitted", "m", {"a": "", "b": "x"}, {"f": 1}),
    Case(
        "tag_reserved_names_of_2x",
        "m",
        {"_measurement": "a", "_field": "b"},
        {"_value": 1},
        note="1.6.7 accepts them; InfluxDB 2.x reserves names starting with '_'",
    ),
    Case("field_key_escapes", "m", {}, {'f ,="#': 1, " g": 2}),
    Case("string_escapes", "m", {}, {"s": 'q"b\\e\\', "t": "\\n is not a newline"}),
    Case(
        "string_newlines_kept_inside_quotes",
        "m",
        {},
        {"s": "a\nb", "r": "a\r\nb", "t": "a\tb"},
        note="scanLine keeps LF inside a string's quotes: no escape needed or possible",
    ),
    Case("string_empty", "m", {}, {"s": ""}),
    Case("string_100kB", "m", {}, {"s": "x" * 100_000}, note="the 1.x docs' 64 KB limit is not enforced"),
    Case("int_extremes", "m", {}, {"lo": INT64_MIN, "hi": INT64_MAX, "z": 0}),
    Case(
        "float_extremes",
        "m",
        {},
        {
            "a": 5e-324,
            "b": 1.7976931348623157e308,
            "c": 1e100,
            "d": 1e-05,
            "e": 0.1 + 0.2,
            "g": -0.0,
            "h": 1.0,
        },
    ),
    Case("ts_nanoseconds", "m", {}, {"f": 1}, ts_ns=1732521600123456789),
    Case("ts_negative", "m", {}, {"f": 1}, ts_ns=-1),
    Case("ts_min", "m", {}, {"f": 1}, ts_ns=MIN_TS_NS),
    Case("ts_max", "m", {}, {"f": 1}, ts_ns=MAX_TS_NS),
    Case(
        "series_key_at_limit",
        "m",
        {"t": "x" * 65526},
        {"f": 1},
        note="series key + '#!~#' + field key = 65535",
    ),
    # --- refused: harmful when sent anyway ---
    Case("measurement_empty", "", {}, {"f": 1}, refused=True, raw=b" f=1i 1", answer=400),
    Case(
        "measurement_hash",
        "#m",
        {},
        {"f": 1},
        refused=True,
        raw=b"#m f=1i 1",
        answer=204,
        note="a comment line: 204 and nothing written",
    ),
    Case(
        "measurement_leading_tab",
        "\tm",
        {},
        {"f": 1},
        refused=True,
        raw=b"\tm f=1i 1",
        answer=204,
        harm=[Point("m", {}, F1)],
        note="leading TAB (and NUL) stripped",
    ),
    Case("measurement_trailing_backslash", "m\\", {}, {"f": 1}, refused=True, raw=b"m\\ f=1i 1", answer=400),
    Case(
        "measurement_backslash_equals",
        "m\\=x",
        {},
        {"f": 1},
        refused=True,
        raw=b"m\\=x f=1i 1",
        answer=204,
        harm=[Point("m=x", {}, F1)],
        note="1.6.7 unescapes \\= in measurements (docs: only , and space)",
    ),
    Case(
        "measurement_backslash_quote",
        'a\\"b',
        {},
        {"f": 1},
        refused=True,
        raw=b'a\\"b f=1i 1',
        answer=204,
        harm=[Point('a"b', {}, F1)],
    ),
    Case(
        "measurement_newline",
        "m\nx",
        {},
        {"f": 1},
        refused=True,
        raw=b"m\nx f=1i 1",
        answer=400,
        harm=[Point("x", {}, F1)],
        note="the tail becomes a point of its own",
    ),
    Case(
        "tag_value_newline_injects_point",
        "m",
        {"t": "a\nevil"},
        {"f": 1},
        refused=True,
        raw=b"m,t=a\nevil f=1i 1",
        answer=400,
        harm=[Point("evil", {}, F1)],
    ),
    Case(
        "tag_value_escaped_newline",
        "m",
        {"t": "a\nb"},
        {"f": 1},
        refused=True,
        raw=b"m,t=a\\\nb f=1i 1",
        answer=204,
        harm=[Point("m", {"t": "a\\\nb"}, F1)],
        note="no escape for LF: the backslash stays",
    ),
    Case(
        "tag_value_trailing_backslash",
        "m",
        {"t": "a\\"},
        {"f": 1},
        refused=True,
        raw=b"m,t=a\\ f=1i 1",
        answer=400,
        note="the backslash escapes the separator: 'invalid tag format'",
    ),
    Case(
        "tag_key_trailing_backslash",
        "m",
        {"k\\": "a"},
        {"f": 1},
        refused=True,
        raw=b"m,k\\=a f=1i 1",
        answer=400,
    ),
    Case(
        "tag_key_time",
        "m",
        {"time": "a"},
        {"f": 1},
        refused=True,
        raw=b"m,time=a f=1i 1",
        answer=400,
        note="partial write: invalid tag key, point dropped",
    ),
    Case(
        "tag_value_nul_echo_unreadable",
        "m",
        {"t": "a\x00b"},
        {"f": math.nan},
        refused=True,
        raw=b"m,t=a\x00b f=nan 1",
        answer=UNREADABLE,
        note="1.6.7 echoes the line in X-Influxdb-Error; a NUL there makes the HTTP answer unparseable",
    ),
    Case(
        "tag_value_nul",
        "m",
        {"t": "a\x00b"},
        {"f": 1},
        refused=True,
        raw=b"m,t=a\x00b f=1i 1",
        answer=204,
        harm=[Point("m", {"t": "a\x00b"}, F1)],
        note="tolerated by 1.6.7; refused as a control character",
    ),
    Case(
        "tag_value_cr",
        "m",
        {"t": "a\rb"},
        {"f": 1},
        refused=True,
        raw=b"m,t=a\rb f=1i 1",
        answer=204,
        harm=[Point("m", {"t": "a\rb"}, F1)],
        note="tolerated by 1.6.7; refused as a control character",
    ),
    Case(
        "tag_value_tab",
        "m",
        {"t": "a\tb"},
        {"f": 1},
        refused=True,
        raw=b"m,t=a\tb f=1i 1",
        answer=204,
        harm=[Point("m", {"t": "a\tb"}, F1)],
        note="tolerated by 1.6.7; refused as a control character",
    ),
    Case(
        "field_key_time",
        "m",
        {},
        {"time": 1, "g": 2},
        refused=True,
        raw=b"m time=1i,g=2i 1",
        answer=204,
        harm=[Point("m", {}, {"g": ("integer", 2)})],
        note="the field is dropped without a word",
    ),
    Case(
        "field_key_backslash_quote",
        "m",
        {},
        {'a\\"b': 1},
        refused=True,
        raw=b'm a\\"b=1i 1',
        answer=204,
        harm=[Point("m", {}, {'a"b': ("integer", 1)})],
    ),
    Case(
        "field_key_backslash_equals",
        "m",
        {},
        {"a\\=b": 1},
        refused=True,
        raw=b"m a\\\\=b=1i 1",
        answer=400,
        note="the field scanner pairs a backslash with any next byte",
    ),
    Case("field_key_trailing_backslash", "m", {}, {"f\\": 1}, refused=True, raw=b"m f\\=1i 1", answer=400),
    Case(
        "field_key_leading_tab",
        "m",
        {},
        {"\tf": 1},
        refused=True,
        raw=b"m \tf=1i 1",
        answer=204,
        harm=[Point("m", {}, F1)],
    ),
    Case("field_key_empty", "m", {}, {"": 1}, refused=True, raw=b"m =1i 1", answer=400),
    Case("no_fields", "m", {"t": "a"}, {}, refused=True, raw=b"m,t=a 1", answer=400),
    Case(
        "tag_and_field_same_key",
        "m",
        {"f": "a"},
        {"f": 1},
        refused=True,
        raw=b"m,f=a f=1i 1",
        answer=204,
        harm=[Point("m", {"f": "a"}, F1)],
        note="1.6.7 stores both; a plain SELECT renames the tag column to f_1; InfluxDB 3 rejects it",
    ),
    Case("float_nan", "m", {}, {"f": math.nan}, refused=True, raw=b"m f=nan 1", answer=400),
    Case("float_inf", "m", {}, {"f": math.inf}, refused=True, raw=b"m f=inf 1", answer=400),
    Case("float_minus_inf", "m", {}, {"f": -math.inf}, refused=True, raw=b"m f=-inf 1", answer=400),
    Case(
        "int_above_int64",
        "m",
        {},
        {"f": INT64_MAX + 1},
        refused=True,
        raw=b"m f=9223372036854775808i 1",
        answer=400,
    ),
    Case(
        "ts_int64_max",
        "m",
        {},
        {"f": 1},
        ts_ns=INT64_MAX,
        refused=True,
        raw=b"m f=1i 9223372036854775807",
        answer=400,
        note="1.6.7's range is int64 min+2 .. max-1",
    ),
    Case(
        "ts_int64_min_plus_1",
        "m",
        {},
        {"f": 1},
        ts_ns=INT64_MIN + 1,
        refused=True,
        raw=b"m f=1i -9223372036854775807",
        answer=400,
    ),
    Case(
        "string_nul",
        "m",
        {},
        {"s": "a\x00b"},
        refused=True,
        raw=b'm s="a\x00b" 1',
        answer=204,
        harm=[Point("m", {}, {"s": ("string", "a\x00b")})],
        note="tolerated by 1.6.7; refused: it would make an echoed error unreadable",
    ),
    Case(
        "series_key_too_long",
        "m",
        {"t": "x" * 65527},
        {"f": 1},
        refused=True,
        raw=b"m,t=" + b"x" * 65527 + b" f=1i 1",
        answer=400,
        note="max key length exceeded: 65536 > 65535",
    ),
]


@pytest.fixture(scope="module")
def client():
    # One client for the module: a new one per request (httpx.post) costs ~10 ms of TLS set-up each.
    with httpx.Client(trust_env=False, timeout=10) as c:
        yield c


def _post(client, server, body: bytes) -> int | str:
    try:
        r = client.post(f"{server.url}/write", params={"db": server.db, "precision": "ns"}, content=body)
    except httpx.RemoteProtocolError:
        return UNREADABLE
    return r.status_code


def _query(client, server, q: str) -> dict:
    r = client.post(f"{server.url}/query", data={"q": q, "db": server.db, "epoch": "ns"})
    r.raise_for_status()
    result = r.json()["results"][0]
    assert "error" not in result, result
    return result


def _read_back(client, server) -> list[Point]:
    """Every point in the database, via SHOW FIELD KEYS, SHOW TAG VALUES and SELECT ... GROUP BY *."""
    types = {}
    for series in _query(client, server, "SHOW FIELD KEYS").get("series", []):
        for key, kind in series["values"]:
            types[series["name"], key] = kind
    tag_values = set()
    for series in _query(client, server, "SHOW TAG VALUES FROM /.*/ WITH KEY =~ /.*/").get("series", []):
        tag_values |= {(series["name"], key, value) for key, value in series["values"]}
    points = []
    result = _query(client, server, "SELECT * FROM /.*/ GROUP BY *")
    for series in result.get("series", []):
        name, tags = series["name"], {k: v for k, v in (series.get("tags") or {}).items() if v}
        assert {(name, k, v) for k, v in tags.items()} <= tag_values
        for row in series["values"]:
            fields = {
                col: (types[name, col], value)
                for col, value in zip(series["columns"][1:], row[1:], strict=True)
                if value is not None
            }
            points.append(Point(name, tags, fields, row[0]))
    return points


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_lineproto_case_against_influxdb(influxdb, client, case: Case):
    """Accepted: stored exactly as given. Refused: encode_head raises, and the raw line does `harm`."""
    if case.raw is not None:
        assert _post(client, influxdb, case.raw) == case.answer, case.note
        assert _read_back(client, influxdb) == case.harm, case.note
        _query(client, influxdb, f'DROP DATABASE "{influxdb.db}"')
        _query(client, influxdb, f'CREATE DATABASE "{influxdb.db}"')
    if case.refused:
        with pytest.raises(LineProtocolError):
            encode_line(encode_head(case.measurement, case.tags, case.fields), case.ts_ns)
        return
    line = encode_line(encode_head(case.measurement, case.tags, case.fields), case.ts_ns)
    assert _post(client, influxdb, line) == 204
    assert _read_back(client, influxdb) == case.expected()
