r"""InfluxDB 1.x line protocol, encoded exactly (decisions.md D16a). Pure: no I/O, no clock.

One line (LF between lines):

    measurement[,tag_key=tag_value...] field_key=field_value[,field_key=field_value...] timestamp_ns

    rfid_presence,antenna=2,site=s1 epc="3034\"x",rssi_dbm=-61.5,reads=17i,moved=t 1732521600000000000

Source: InfluxData, "InfluxDB line protocol reference" for 1.x (docs.influxdata.com/influxdb/v1/
write_protocols/line_protocol_reference/), checked byte by byte against Debian's InfluxDB 1.6.7, whose
behaviour wins where the two differ: tests/test_lineproto_influxdb.py sends every case to the server.

Escaped, and nothing else:
    measurement                        `,` and space
    tag key, tag value, field key      `,`, `=` and space
    string field value                 `"` and backslash
Values by their Python type: int `-12i` (1.x rejects the `u` suffix), float `repr()` (round-trips),
bool `t`/`f`, str `"..."`; the timestamp in plain digits.

Refused with LineProtocolError (never sent), and what 1.6.7 does with such a line:
- Control characters U+0000-U+001F and U+007F in a measurement, tag key or value, or field key. A raw
  LF ends the line: in a tag value it injects a second point, and `\` + LF keeps the backslash (no
  escape exists). A leading TAB or NUL is stripped. 1.6.7 echoes a rejected line in its
  X-Influxdb-Error header, which an HTTP client (h11) refuses to read when it holds a NUL or the
  like: the answer is lost. CR and TAB inside a tag value are stored as given, refused all the same.
- In string values, the control characters other than TAB, LF and CR (the same echo). LF and CR
  inside the quotes are stored exactly.
- A measurement that is empty, starts with `#` (a comment line: 204 and nothing written) or holds a
  backslash (1.6.7 also unescapes `\=` and `\"` there, and `\` before `,` or space loses the point).
- A tag key or value ending in a backslash (it escapes the separator: 400 "invalid tag format"), an
  empty tag key, tag key `time` (partial write, point dropped). An empty tag value omits the tag.
- A field key that is empty, holds a backslash (the field scanner pairs `\` with whatever follows:
  `\"` becomes `"`, `\\=` breaks the line) or is `time` (the field is dropped with a 204).
- A tag key that is also a field key (1.6.7 keeps both and renames the tag column `f_1` in a plain
  SELECT; InfluxDB 3 rejects it), and a point without fields.
- NaN and +-Inf (400), integers outside int64 (400 "value out of range").
- A series key (escaped measurement and tags) that with "#!~#" and the longest field key exceeds
  65535 bytes (400 "max key length exceeded").
- Timestamps outside -9223372036854775806..9223372036854775806: 1.6.7 answers 400 "time outside
  range" for int64 min, min+1 and max.

Stored as given without escaping: `=` and `"` in a measurement, `"` in keys and tag values, `#` after
the first byte, non-ASCII text, a backslash inside a tag key or value. String values have no length
limit in 1.6.7 (1.1 MB round-trips), whatever the docs say about 64 KB.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from gateway.errors import LineProtocolError  # defined there, raised and re-exported here

FieldValue = int | float | bool | str

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# InfluxDB 1.x models.MinNanoTime / MaxNanoTime: measured, see the table above.
MIN_TS_NS = INT64_MIN + 2
MAX_TS_NS = INT64_MAX - 1
MAX_KEY_BYTES = 65535
_FIELD_SEPARATOR_BYTES = 4  # tsm1 keys are series key + "#!~#" + field key

_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL_IN_STRING = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Escaped names and tag values by their raw text. Tags hold few distinct values by design
# (architecture.md: cardinality), so a cache hit is the hot path; a full cache is simply cleared.
_CACHE_MAX = 4096
_measurements: dict[str, str] = {}
_tag_pairs: dict[tuple[str, str], str] = {}  # (key, value) -> ",key=value", or "" for an empty value
_field_keys: dict[str, str] = {}


def encode_head(measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue]) -> bytes:
    """The line without its timestamp: tags sorted by key, empty tag values left out."""
    try:
        series = _measurements[measurement]
    except (KeyError, TypeError):
        series = _remember(_measurements, measurement, _escape_measurement(measurement))
    if tags:
        parts = [series]
        for key in sorted(tags):
            value = tags[key]
            try:
                parts.append(_tag_pairs[key, value])
            except (KeyError, TypeError):
                parts.append(_remember(_tag_pairs, (key, value), _escape_tag_pair(key, value)))
        series = "".join(parts)
    field_parts = []
    longest_key = 0
    for key, value in fields.items():
        try:
            k = _field_keys[key]
        except (KeyError, TypeError):
            k = _remember(_field_keys, key, _escape_field_key(key))
        if key in tags:
            raise LineProtocolError(f"field key {key!r}: also a tag key")
        if len(k) > longest_key:
            longest_key = len(k)
        field_parts.append(f"{k}={_field_value(key, value)}")
    if not field_parts:
        raise LineProtocolError("fields: none")
    # Characters bound bytes (UTF-8: at most 4 each): the exact count only for keys that may be too long.
    if 4 * (len(series) + longest_key) + _FIELD_SEPARATOR_BYTES > MAX_KEY_BYTES:
        key_bytes = len(series.encode()) + _FIELD_SEPARATOR_BYTES
        key_bytes += max(len(_escape_field_key(key).encode()) for key in fields)
        if key_bytes > MAX_KEY_BYTES:
            raise LineProtocolError(f"series key: {key_bytes} bytes with the field key, limit {MAX_KEY_BYTES}")
    try:
        return f"{series} {','.join(field_parts)}".encode()
    except UnicodeEncodeError as exc:
        raise LineProtocolError(f"string value: not encodable as UTF-8 ({exc.reason})") from None


def encode_line(head: bytes, ts_ns: int) -> bytes:
    """`head` and its timestamp in nanoseconds, as the server's `precision=ns` expects."""
    if type(ts_ns) is not int or not MIN_TS_NS <= ts_ns <= MAX_TS_NS:
        raise LineProtocolError(f"timestamp: {ts_ns!r} is not an int in [{MIN_TS_NS}, {MAX_TS_NS}]")
    return b"%b %d" % (head, ts_ns)


def _field_value(key: str, value: FieldValue) -> str:
    t = type(value)
    if t is float:
        if math.isfinite(value):
            return float.__repr__(value)
        raise LineProtocolError(f"field {key!r}: {value!r} cannot be stored")
    if t is int:
        if INT64_MIN <= value <= INT64_MAX:
            return f"{value}i"
        raise LineProtocolError(f"field {key!r}: {value} is outside int64")
    if t is str:
        if not value.isprintable() and _CONTROL_IN_STRING.search(value):
            raise LineProtocolError(f"field {key!r}: control character other than TAB, LF, CR")
        if "\\" in value or '"' in value:
            value = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{value}"'
    if t is bool:
        return "t" if value else "f"
    # Subclasses (IntEnum, numpy scalars) by their base type; bool before int, as bool is an int.
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return _field_value(key, int(value))
    if isinstance(value, float):
        return _field_value(key, float(value))
    if isinstance(value, str):
        return _field_value(key, str.__str__(value))
    raise LineProtocolError(f"field {key!r}: unsupported type {type(value).__name__}")


def _remember(cache: dict, raw: object, escaped: str) -> str:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[raw] = escaped
    return escaped


def _check_text(text: object, what: str) -> str:
    if type(text) is not str:
        if not isinstance(text, str):
            raise LineProtocolError(f"{what}: must be str, got {type(text).__name__}")
        text = str.__str__(text)
    if not text:
        raise LineProtocolError(f"{what}: empty")
    if _CONTROL.search(text):
        raise LineProtocolError(f"{what}: control character")
    try:
        text.encode()
    except UnicodeEncodeError as exc:
        raise LineProtocolError(f"{what}: not encodable as UTF-8 ({exc.reason})") from None
    return text


def _escape_measurement(name: str) -> str:
    name = _check_text(name, f"measurement {name!r}")
    if name[0] == "#":
        raise LineProtocolError(f"measurement {name!r}: starts with '#', which makes the line a comment")
    if "\\" in name:
        raise LineProtocolError(f"measurement {name!r}: backslash")
    return name.replace(",", "\\,").replace(" ", "\\ ")


def _escape_tag_pair(key: str, value: str) -> str:
    if value == "" and isinstance(value, str):
        return ""
    if key == "time":
        raise LineProtocolError("tag key: 'time' is reserved")
    return f",{_escape_tag(key, f'tag key {key!r}')}={_escape_tag(value, f'tag value of {key!r}')}"


def _escape_tag(text: str, what: str) -> str:
    text = _check_text(text, what)
    if text[-1] == "\\":
        raise LineProtocolError(f"{what}: ends with a backslash")
    return text.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_field_key(key: str) -> str:
    key = _check_text(key, f"field key {key!r}")
    if "\\" in key:
        raise LineProtocolError(f"field key {key!r}: backslash")
    if key == "time":
        raise LineProtocolError("field key: 'time' is reserved")
    return key.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
