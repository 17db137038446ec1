"""The collector renders a value nested too deep for ClickHouse exactly as ClickHouse's ingest
views render the others (collector/value_text.py): held here to ClickHouse's own output."""
from __future__ import annotations

import random
import struct

from tracehouse.collector.value_text import double_text, json_string

SPECIAL_DOUBLES = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), 5e-324, 2.2250738585072014e-308,
                   1.7976931348623157e308, 0.1 + 0.2, 0.5, 100.0, 1234567.0, 1e-6, 1.5e-6, 1e-7, 1.2345e-7,
                   9.999e-5, 1e15, 1e16, 1e20, 9.999e20, 1e21, 1.5e21, 1e22, 12345678901234567890123.0, -2.5e-8]


def test_doubles_read_as_clickhouses_to_string_spells_them(store):
    rng = random.Random(12)
    doubles = list(SPECIAL_DOUBLES)
    for _ in range(10_000):
        doubles.append(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0])  # any bit pattern
        doubles.append(rng.uniform(-1, 1) * 10.0 ** rng.randint(-12, 25))  # around the notation switches
        doubles.append(float(rng.randint(-10**6, 10**6)) * 10.0 ** rng.randint(-9, 23))  # few digits
    packed = struct.pack(f"<{len(doubles)}d", *doubles)
    [[spelled]] = store.query(
        "SELECT arrayMap(i -> toString(reinterpretAsFloat64(substring(unhex({d:String}), 8 * i + 1, 8))), "
        "range({n:UInt32})) AS spelled", parameters={"d": packed.hex(), "n": len(doubles)}).result_rows
    ours = [double_text(d) for d in doubles]
    assert ours[:12] == ["0", "-0", "nan", "inf", "-inf", "5e-324", "2.2250738585072014e-308",
                         "1.7976931348623157e308", "0.30000000000000004", "0.5", "100", "1234567"]
    mismatches = [(d, theirs, mine) for d, theirs, mine in zip(doubles, spelled, ours) if theirs != mine]
    assert (len(spelled), mismatches) == (len(doubles), [])


def test_strings_read_as_clickhouses_to_json_string_spells_them(store):
    rng = random.Random(12)
    alphabet = [chr(c) for c in range(0x250)] + ["\u2028", "\u2029", "\ufeff", "\U0001F600", "\u00e9", "\u4e2d"]
    strings = ["".join(chr(c) for c in range(0x80)), "", "a/b", 'q"\\', "\u2028\u2029"]
    strings += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(2_000)]
    [[spelled]] = store.query("SELECT arrayMap(s -> toJSONString(s), {s:Array(String)}) AS spelled",
                              parameters={"s": strings}).result_rows
    assert json_string(strings[0]) == ('"' + "".join(f"\\u{c:04X}" for c in range(8)) + "\\b\\t\\n\\u000B\\f\\r"
                                       + "".join(f"\\u{c:04X}" for c in range(0x0E, 0x20))
                                       + ' !\\"#$%&\'()*+,-.\\/0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`'
                                       + 'abcdefghijklmnopqrstuvwxyz{|}~\x7f"')
    mismatches = [(s, theirs, json_string(s)) for s, theirs in zip(strings, spelled) if theirs != json_string(s)]
    assert (len(spelled), mismatches) == (len(strings), [])
    assert json_string("é".encode()) == '"é"'  # lenient messages hold strings as UTF-8 bytes
