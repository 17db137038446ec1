"""SQL that turns OTLP decoded by ClickHouse's Protobuf format into the exporter's column values.

The staging tables hold one row per export request, in the nested shape of
`proto/otlp_traces_ingest.proto`. These helpers build the SQL types for that shape and the
expressions that render its values the way the OTel Collector's clickhouseexporter does
(`pcommon.Value.AsString()`): strings as they are, numbers and booleans as text, arrays and
maps as JSON, bytes as base64.
"""
from __future__ import annotations

# AnyValue is recursive upstream; the ingest .proto unrolls it to this many levels.
ANY_VALUE_DEPTH = 4

_ONEOF = (
    "Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, "
    "'double_value' = 4, 'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7)"
)


def any_value_type(level: int = 1) -> str:
    """Column type of an AnyValue at nesting `level` (1 = an attribute's value)."""
    if level >= ANY_VALUE_DEPTH:
        nested_array = nested_kvlist = "String"  # deeper values arrive as raw bytes
    else:
        inner = any_value_type(level + 1)
        nested_array = f"Tuple(values Array({inner}))"
        nested_kvlist = f"Tuple(values Array(Tuple(key String, value {inner})))"
    return (
        "Tuple(string_value String, bool_value Bool, int_value Int64, double_value Float64, "
        f"array_value {nested_array}, kvlist_value {nested_kvlist}, bytes_value String, value {_ONEOF})"
    )


def key_values_type() -> str:
    return f"Array(Tuple(key String, value {any_value_type()}))"


def _json(v: str, level: int) -> str:
    """JSON text of an AnyValue `v` (strings quoted), as nested inside an array or map."""
    branches = [
        f"{v}.value = 'string_value'", f"toJSONString(toValidUTF8({v}.string_value))",
        f"{v}.value = 'int_value'", f"toString({v}.int_value)",
        f"{v}.value = 'double_value'", f"toString({v}.double_value)",
        f"{v}.value = 'bool_value'", f"if({v}.bool_value, 'true', 'false')",
        f"{v}.value = 'bytes_value'", f"toJSONString(base64Encode({v}.bytes_value))",
    ]
    if level < ANY_VALUE_DEPTH:
        branches += [f"{v}.value IN ('array_value', 'kvlist_value')", _composite_json(v, level)]
    return f"multiIf({', '.join(branches)}, 'null')"


def _composite_json(v: str, level: int) -> str:
    """An array or kvlist AnyValue as JSON.

    The elements of both shapes are rendered by one arrayMap over their concatenation (only
    one of the two is non-empty), so the SQL grows linearly with ANY_VALUE_DEPTH rather than
    doubling at every level.
    """
    x = f"_x{level}"
    rendered = (f"arrayMap({x} -> {_json(x, level + 1)}, "
                f"arrayConcat({v}.array_value.values, {v}.kvlist_value.values.value))")
    keys = f"{v}.kvlist_value.values.key"
    members = (f"arrayMap((_k, _r) -> concat(toJSONString(toValidUTF8(_k)), ':', _r), "
               f"arrayResize({keys}, length(r{level})), {rendered} AS r{level})")
    return (f"if({v}.value = 'array_value', concat('[', arrayStringConcat(r{level}, ','), ']'), "
            f"concat('{{', arrayStringConcat({members}, ','), '}}'))")


_COMPOSITE = "('array_value', 'kvlist_value')"


def _scalars(values: str, *, quoted: bool) -> str:
    """Render an Array(AnyValue) of scalars, working on whole subcolumns.

    ClickHouse evaluates lambdas over plain arrays far faster than lambdas that reach into
    each element's tuple, so this is the hot path of ingest. `quoted` gives JSON (strings in
    quotes, composites as null), else the attribute-map text (composites as '').
    """
    if quoted:
        string, bytes_, other = "toJSONString(toValidUTF8(_s))", "toJSONString(base64Encode(_y))", "'null'"
    else:
        string, bytes_, other = "toValidUTF8(_s)", "base64Encode(_y)", "''"
    return (
        f"arrayMap((_t, _s, _i, _d, _b, _y) -> multiIf(_t = 'string_value', {string}, _t = 'int_value', toString(_i), "
        f"_t = 'double_value', toString(_d), _t = 'bool_value', if(_b, 'true', 'false'), _t = 'bytes_value', {bytes_}, "
        f"{other}), {values}.value, {values}.string_value, {values}.int_value, {values}.double_value, "
        f"{values}.bool_value, {values}.bytes_value)"
    )


def _shallow_composite_json(v: str) -> str:
    """An array or kvlist of scalars (string[] attributes, flat maps) as JSON: the common case."""
    array = f"concat('[', arrayStringConcat({_scalars(f'{v}.array_value.values', quoted=True)}, ','), ']')"
    members = (f"arrayMap((_k, _r) -> concat(toJSONString(toValidUTF8(_k)), ':', _r), {v}.kvlist_value.values.key, "
               f"{_scalars(f'{v}.kvlist_value.values.value', quoted=True)})")
    return f"if({v}.value = 'array_value', {array}, concat('{{', arrayStringConcat({members}, ','), '}}'))"


def attribute_keys(key_values: str) -> str:
    return f"arrayMap(_k -> toValidUTF8(_k), {key_values}.key)"


def attribute_values(key_values: str) -> str:
    """The attribute-map text of every value of a repeated KeyValue (AsString() semantics).

    Scalars take the fast subcolumn path. Arrays and maps are picked out and rendered apart:
    those of scalars (string[] attributes, flat maps) by the shallow renderer, anything nested
    deeper by the recursive one. Each renderer maps over its own filtered array, so a row pays
    only for the values it has: ClickHouse evaluates both branches of an `if` over arrays.
    """
    is_composite = f"arrayMap(_t -> _t IN {_COMPOSITE}, {key_values}.value.value)"
    composites = f"arrayFilter((_kv, _c) -> _c, {key_values}, {is_composite})"
    is_nested = (f"arrayMap(_kv -> arrayExists(_t -> _t IN {_COMPOSITE}, "
                 f"arrayConcat(_kv.value.array_value.values.value, _kv.value.kvlist_value.values.value.value)), {composites})")
    deep = f"arrayMap(_kv -> {_composite_json('_kv.value', 1)}, arrayFilter((_kv, _n) -> _n, {composites}, {is_nested}))"
    shallow = f"arrayMap(_kv -> {_shallow_composite_json('_kv.value')}, arrayFilter((_kv, _n) -> NOT _n, {composites}, {is_nested}))"
    rendered = (f"arrayMap((_n, _dj, _sj) -> if(_n, arrayElement({deep}, _dj), arrayElement({shallow}, _sj)), {is_nested}, "
                f"arrayCumSum({is_nested}), arrayCumSum(arrayMap(_n -> 1 - _n, {is_nested})))")
    return (f"arrayMap((_text, _c, _j) -> if(_c, arrayElement({rendered}, _j), _text), "
            f"{_scalars(f'{key_values}.value', quoted=False)}, {is_composite}, arrayCumSum({is_composite}))")


TRUNCATION_MARK = "…[truncated]"
TRUNCATED_KEYS_ATTRIBUTE = "tracehouse.truncated"


def attributes_map(keys: str, values: str, max_len: str, mark_truncated: bool = False) -> str:
    """Map(LowCardinality(String), String) from rendered key and value arrays.

    Values longer than `max_len` characters are cut and end with TRUNCATION_MARK; with
    `mark_truncated`, the attribute TRUNCATED_KEYS_ATTRIBUTE lists the cut keys as JSON.
    Later duplicates of a key win, as in the exporter's pcommon.Map.
    """
    cut = f"arrayMap(_t -> if(lengthUTF8(_t) > {max_len}, concat(substringUTF8(_t, 1, {max_len}), '{TRUNCATION_MARK}'), _t), {values})"
    attributes = f"CAST(mapFromArrays({keys}, {cut}), 'Map(LowCardinality(String), String)')"
    if not mark_truncated:
        return attributes
    cut_keys = f"arrayFilter((_k, _t) -> lengthUTF8(_t) > {max_len}, {keys}, {values})"
    return (
        f"if(empty({cut_keys}), {attributes}, "
        f"mapUpdate({attributes}, map('{TRUNCATED_KEYS_ATTRIBUTE}', toJSONString({cut_keys}))))"
    )


def hex_id(expr: str) -> str:
    return f"lower(hex({expr}))"


def nanos_to_datetime(expr: str) -> str:
    return f"fromUnixTimestamp64Nano(toInt64({expr}))"
