"""The text of an OTLP AnyValue exactly as the ingest views render it (storage/otlp_sql.py), for
the rare value nested deeper than a staging table decodes (collector/nesting.py).

That rendering is the OTel Collector clickhouseexporter's `AsString()`, in ClickHouse's own
spelling: arrays and maps as JSON, strings through `toJSONString` (which also escapes `/`,
U+2028 and U+2029, and spells control characters `\\u00XX` in upper case), doubles through
`toString` (the shortest text that reads back as the same double, in fixed notation from 1e-6
up to 1e21, else as `1.5e-7`, `1e21`; `nan`, `inf`, `-0`), bytes as base64, an unset value as
`null`. tests/test_value_text.py holds this module to ClickHouse's output.
"""
from __future__ import annotations

import base64
import math
from decimal import Decimal

_JSON_ESCAPES = {
    **{c: f"\\u{c:04X}" for c in range(0x20)},
    0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r",
    ord('"'): '\\"', ord("\\"): "\\\\", ord("/"): "\\/", 0x2028: "\\u2028", 0x2029: "\\u2029",
}


def json_string(text: str | bytes) -> str:
    """ClickHouse's toJSONString of a string (lenient messages hold strings as UTF-8 bytes)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return '"' + text.translate(_JSON_ESCAPES) + '"'


def double_text(value: float) -> str:
    """ClickHouse's toString of a Float64."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that read back as the same double, as ClickHouse does;
    # only the notation differs. value = 0.<digits> × 10^point
    exact = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, exact.digits))
    point = len(digits) + exact.exponent
    if -6 < point <= 21:
        if point >= len(digits):
            return sign + digits + "0" * (point - len(digits))
        if point > 0:
            return sign + digits[:point] + "." + digits[point:]
        return sign + "0." + "0" * -point + digits
    text = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{text}e{point - 1}"


def any_value_json(value) -> str:
    """The JSON text of an AnyValue, as it appears inside a rendered array or map."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return json_string(value.string_value)
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return double_text(value.double_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "bytes_value":
        return json_string(base64.b64encode(value.bytes_value).decode())
    if kind == "array_value":
        return "[" + ",".join(any_value_json(v) for v in value.array_value.values) + "]"
    if kind == "kvlist_value":
        return "{" + ",".join(f"{json_string(kv.key)}:{any_value_json(kv.value)}"
                              for kv in value.kvlist_value.values) + "}"
    return "null"
