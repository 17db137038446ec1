"""SQL that turns OTLP decoded by ClickHouse's Protobuf format into the exporter's column values.

The staging tables hold one row per export request, in the nested shape of its .proto
(`proto/ingest.py`). These helpers build the SQL types for that shape and the
expressions that render its values the way the OTel Collector's clickhouseexporter does
(`pcommon.Value.AsString()`): strings as they are, numbers and booleans as text, arrays and
maps as JSON, bytes as base64.

Every string arrives valid UTF-8 (the collector repairs the rare request that is not:
collector/otlp.py), so nothing here pays for a per-string check.

ClickHouse analyses these views on every insert, and that analysis, not the per-row work, is
most of the cost of a small insert; the notes below keep it down.
"""
from __future__ import annotations

from tracehouse.proto.ingest import PRERENDERED_TAG

from . import normalize

# AnyValue is recursive upstream; the staging table of schema versions 1-9 unrolls it to this
# many levels (later ones choose their own: schema.py).
ANY_VALUE_DEPTH = 4

_ONEOF = (
    "Enum8('none' = 0, 'string_value' = 1, 'bool_value' = 2, 'int_value' = 3, "
    "'double_value' = 4, 'array_value' = 5, 'kvlist_value' = 6, 'bytes_value' = 7)"
)


def any_value_type(level: int = 1, depth: int = ANY_VALUE_DEPTH, array_depth: int | None = None) -> str:
    """Column type of an AnyValue at nesting `level` (1 = an attribute's value), in a .proto
    that unrolls AnyValue to `depth` levels, and arrays only above level `array_depth`
    (default `depth`): each unrolled composite doubles the columns every value is decoded into."""
    array_depth = depth if array_depth is None else array_depth
    if level >= depth:
        nested_array = nested_kvlist = "String"  # deeper values arrive as raw bytes
    else:
        inner = any_value_type(level + 1, depth, array_depth)
        nested_array = f"Tuple(values Array({inner}))" if level < array_depth else "String"
        nested_kvlist = f"Tuple(values Array(Tuple(key String, value {inner})))"
    return (
        "Tuple(string_value String, bool_value Bool, int_value Int64, double_value Float64, "
        f"array_value {nested_array}, kvlist_value {nested_kvlist}, bytes_value String, value {_ONEOF})"
    )


def key_values_type(depth: int = ANY_VALUE_DEPTH, array_depth: int | None = None) -> str:
    return f"Array(Tuple(key String, value {any_value_type(1, depth, array_depth)}))"


def _render(v: str, level: int, *, quoted: bool, depth: int = ANY_VALUE_DEPTH, array_depth: int | None = None,
            prerendered: bool = False) -> str:
    """Text of every AnyValue in the Array(AnyValue) `v` (at nesting `level`), one per element.

    One arrayMap over the value's subcolumns, with one multiIf branch per oneof variant: arrays
    and maps recurse into their (usually empty) element arrays, so a request pays only for the
    nesting it has, and nothing filters or copies whole tuples. `quoted` gives JSON (strings in
    quotes, unset values null), else the attribute-map text (strings as-is, unset values '').
    An array or map that arrives as raw bytes is null, or with `prerendered` (the deep trace and
    log staging tables, the metrics one) the text the collector rendered for it.
    """
    array_depth = depth if array_depth is None else array_depth
    p = f"_{level}"
    if quoted:
        string, bytes_, unset = f"toJSONString({p}s)", f"toJSONString(base64Encode({p}y))", "'null'"
    else:
        string, bytes_, unset = f"{p}s", f"base64Encode({p}y)", "''"
    branches = [f"{p}t = 'string_value', {string}", f"{p}t = 'int_value', toString({p}i)",
                f"{p}t = 'double_value', toString({p}d)", f"{p}t = 'bool_value', if({p}b, 'true', 'false')",
                f"{p}t = 'bytes_value', {bytes_}"]
    params = [f"{p}{x}" for x in "tsidby"]
    args = [f"{v}.{f}" for f in ("value", "string_value", "int_value", "double_value", "bool_value", "bytes_value")]
    if level < depth:
        # Array elements and map members go through one arrayMap over their concatenation (one
        # of the two is empty), members prefixed with their key, so each level holds one copy
        # of the next: the SQL, and ClickHouse's per-insert analysis of it, grow linearly with
        # the depth. (An alias used twice would be cloned by the analyzer, doubling per level.)
        inner = dict(quoted=True, depth=depth, array_depth=array_depth, prerendered=prerendered)
        keys = f"arrayMap(_k -> concat(toJSONString(_k), ':'), {p}m.values.key)"
        if level < array_depth:
            elements = f"arrayConcat({p}a.values, {p}m.values.value)"
            prefixes = f"arrayConcat(arrayMap(_e -> '', {p}a.values.value), {keys})"
            composite = f"{p}t IN ('array_value', 'kvlist_value')"
            params += [f"{p}a", f"{p}m"]
            args += [f"{v}.array_value", f"{v}.kvlist_value"]
        else:  # only maps go deeper here; an array at this level arrives as raw bytes
            elements, prefixes, composite = f"{p}m.values.value", keys, f"{p}t = 'kvlist_value'"
            params.append(f"{p}m")
            args.append(f"{v}.kvlist_value")
        body = (f"arrayStringConcat(arrayMap((_p, _r) -> concat(_p, _r), {prefixes}, "
                f"{_render(elements, level + 1, **inner)}), ',')")
        branches.append(f"{composite}, "
                        f"concat(if({p}t = 'array_value', '[', '{{'), {body}, if({p}t = 'array_value', ']', '}}'))")
    if prerendered:  # the composites that arrive as raw bytes at this level
        raw = [kind for kind, last in (("array_value", array_depth), ("kvlist_value", depth)) if level >= last]
        for kind in raw:
            param = f"{p}{kind[0]}r"  # _5ar, _5kr
            params.append(param)
            args.append(f"{v}.{kind}")
            branches.append(f"{p}t = '{kind}', {_prerendered_text(param)}")
    return f"arrayMap(({', '.join(params)}) -> multiIf({', '.join(branches)}, {unset}), {', '.join(args)})"


def _prerendered_text(raw: str) -> str:
    """The text in the raw bytes `raw` of an array or map that the collector prerendered: its
    one field, PRERENDERED_FIELD (the two-byte tag, the text's length as a varint, the text).
    Other bytes (a value stored by a collector before schema version 12) read as null."""
    after_tag = len(PRERENDERED_TAG)
    length_bytes = f"arrayMap(_i -> reinterpretAsUInt8(substring({raw}, {after_tag} + _i, 1)), range(1, 6))"
    # unhex: the view's text stays ASCII, as system.tables and SHOW CREATE show it
    return (f"if(startsWith({raw}, unhex('{PRERENDERED_TAG.hex().upper()}')), "
            f"substring({raw}, {after_tag + 1} + arrayFirstIndex(_b -> _b < 128, {length_bytes})), 'null')")


def attribute_keys(key_values: str) -> str:
    return f"{key_values}.key"


def attribute_values(key_values: str, depth: int = ANY_VALUE_DEPTH, array_depth: int | None = None,
                     prerendered: bool = False) -> str:
    """The attribute-map text of every value of a repeated KeyValue (AsString() semantics)."""
    return _render(f"{key_values}.value", 1, quoted=False, depth=depth, array_depth=array_depth,
                   prerendered=prerendered)


def values_text(values: str, depth: int = ANY_VALUE_DEPTH, array_depth: int | None = None,
                prerendered: bool = False) -> str:
    """The AsString() text of every AnyValue in the Array(AnyValue) `values` (a log body
    wrapped in a one-element array, say)."""
    return _render(values, 1, quoted=False, depth=depth, array_depth=array_depth, prerendered=prerendered)


TRUNCATION_MARK = "…[truncated]"
TRUNCATED_KEYS_ATTRIBUTE = "tracehouse.truncated"


def attributes_map(keys: str, values: str, max_len: str, mark_truncated: bool = False) -> str:
    """Map(LowCardinality(String), String) from rendered key and value arrays.

    Values longer than `max_len` characters are cut and end with TRUNCATION_MARK; with
    `mark_truncated`, the attribute TRUNCATED_KEYS_ATTRIBUTE lists the cut keys as JSON.
    Later duplicates of a key win, as in the exporter's pcommon.Map.

    With `mark_truncated` (where `values` is a column or a slice of one, cheap to repeat, not a
    rendering that would be analysed once per use), a row whose values are all short, nearly
    every row, is mapped from them as they are: the cut, which copies every value, runs only for
    a row with a long one (schema migration 13). A 16 MiB insert of bench/ingest.py's spans
    through the OTLP view alone peaks 15-28 MB lower (208-220 MB), at up to 4 % less CPU
    (2026-11-27).
    """
    # (Testing the byte length first, to skip lengthUTF8, made every insert's analysis 0.2 s
    # slower and saved nothing measurable.)
    too_long = f"lengthUTF8(_t) > {max_len}"
    cut = f"arrayMap(_t -> if({too_long}, concat(substringUTF8(_t, 1, {max_len}), '{TRUNCATION_MARK}'), _t), {values})"
    attributes = f"CAST(mapFromArrays({keys}, {cut}), 'Map(LowCardinality(String), String)')"
    if not mark_truncated:
        return attributes
    cut_keys = f"arrayFilter((_k, _t) -> {too_long}, {keys}, {values})"
    marked = f"mapUpdate({attributes}, map('{TRUNCATED_KEYS_ATTRIBUTE}', toJSONString({cut_keys})))"
    whole = f"CAST(mapFromArrays({keys}, {values}), 'Map(LowCardinality(String), String)')"
    return f"if(arrayExists(_t -> {too_long}, {values}), {marked}, {whole})"


def scope_and_record_attributes(scope: str, record: str, texts: str, max_len: str, *,
                                depth: int = ANY_VALUE_DEPTH, array_depth: int | None = None,
                                prerendered: bool = False) -> tuple[str, str, str]:
    """The attributes of a scope and of one of its records (a log record, a data point) from
    one rendering of their values, concatenated.

    Returns the rendering, for an inner query to name `texts`, and the two attribute maps
    that slice `texts` apart (the record's marks truncated keys). ClickHouse analyses every
    copy of a rendering on every insert, and a map that marks truncation uses its values
    twice: rendered in place, that would be three copies, not one.
    """
    rendering = _render(f"arrayConcat({scope}.value, {record}.value)", 1, quoted=False, depth=depth,
                        array_depth=array_depth, prerendered=prerendered)
    scope_map = attributes_map(f"{scope}.key", f"arraySlice({texts}, 1, length({scope}))", max_len)
    record_map = attributes_map(f"{record}.key", f"arraySlice({texts}, length({scope}) + 1, length({record}))",
                                max_len, mark_truncated=True)
    return rendering, scope_map, record_map


def hex_id(expr: str) -> str:
    return f"lower(hex({expr}))"


def nanos_to_datetime(expr: str) -> str:
    return f"fromUnixTimestamp64Nano(toInt64({expr}))"


def per_resource(staging: str, resources: str, children: str, *, depth: int = ANY_VALUE_DEPTH,
                 array_depth: int | None = None, prerendered: bool = False, carry: tuple[str, ...] = ()) -> str:
    """A subquery with a row per resource of every request in `staging`.

    Columns: `_children` (the resource's `children`: its scope spans, logs or metrics),
    `max_value_length`, `_resource_attributes`, `_service_name`, `_project`, and one
    `_resource_<field>` for each resource field named in `carry`.

    Two things keep ClickHouse's analysis of this (on every insert) cheap:
      * the resource's fields are array-joined one by one, never the whole resource tuple,
        whose type spells out every nested span type; expressions over a column of that type
        took the analyzer 0.25 s per insert;
      * the attribute map is rendered in an inner subquery of its own, so that the service
        name and the project read it as a column: an alias used in three places would make
        the analyzer clone the whole rendering three times over.
    """
    attributes = attributes_map(attribute_keys("_resource_kvs"),
                                attribute_values("_resource_kvs", depth, array_depth, prerendered), "max_value_length")
    names = "".join(f", _resource_{f}" for f in carry)
    joined = "".join(f", {resources}.{f} AS _resource_{f}" for f in carry)
    return (
        f"SELECT _children, max_value_length, _resource_attributes{names},\n"
        "    _resource_attributes['service.name'] AS _service_name,\n"
        f"    if(project != '', project, {normalize.project('_resource_attributes')}) AS _project\n"
        f"FROM (SELECT _children, max_value_length, project, {attributes} AS _resource_attributes{names}\n"
        f"      FROM {staging}\n"
        f"      ARRAY JOIN {resources}.resource.attributes AS _resource_kvs, {resources}.{children} AS _children{joined})"
    )
