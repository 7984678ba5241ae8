"""kec.jsontext: orjson's speed, the standard library's answers."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kec.jsontext import check, checked_document, document, dumps, dumps_bytes, finite, loads

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # past 64 bits both ways
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()  # lone surrogates included
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=20,
)


@given(_values)
def test_what_is_written_reads_back_as_the_value(value: Any) -> None:
    text = dumps(value)
    text.encode()  # never a lone surrogate as a character
    assert json.loads(text) == value


def _keys_sorted(text: str) -> bool:
    """Whether every object in ``text`` lists its keys in sorted order."""
    orders: list[list[str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        orders.append([k for k, _ in items])
        return dict(items)

    json.loads(text, object_pairs_hook=pairs)
    return all(keys == sorted(keys) for keys in orders)


@given(_values)
def test_sorted_keys_are_written_as_json_sorts_them_and_read_back_as_the_value(
    value: Any,
) -> None:
    text = dumps(value, sort_keys=True)
    assert json.loads(text) == value
    assert _keys_sorted(text)


_with_odd = st.recursive(
    _scalars | st.sampled_from([math.nan, math.inf, -math.inf, "\ud800", 2**70]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(_with_odd, st.booleans(), st.sampled_from(["none", "tuple", "generator", "empty"]))
def test_dumps_bytes_writes_what_dumps_writes(value: Any, sort_keys: bool, given_as: str) -> None:
    def floats_in() -> Any:
        return {
            "none": None,
            "tuple": (value,),
            "generator": (v for v in [value]),  # read once: the fallback must not need it
            "empty": (),
        }[given_as]

    expected = dumps(value, floats_in=floats_in(), sort_keys=sort_keys).encode()
    assert dumps_bytes(value, floats_in=floats_in(), sort_keys=sort_keys) == expected


@pytest.mark.parametrize("odd", ["\ud800", 2**70, math.inf], ids=["surrogate", "int", "inf"])
def test_sorted_keys_hold_where_json_writes_instead_of_orjson(odd: object) -> None:
    value = {"z": 1, "b": {"y": odd, "a": None}}
    text = dumps(value, floats_in=(value,), sort_keys=True)
    assert text == json.dumps(value, separators=(",", ":"), sort_keys=True)
    assert _keys_sorted(text)


@pytest.mark.parametrize("special", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_written_as_json_writes_them_not_as_null(special: float) -> None:
    payload = {"x": [1, {"y": special}]}
    text = dumps(["row", payload], floats_in=(payload,))
    assert "null" not in text
    back = json.loads(text)[1]["x"][1]["y"]
    assert (math.isnan(back) and math.isnan(special)) or back == special


def test_a_null_beside_a_nan_does_not_hide_it() -> None:
    # orjson writes NaN as null: a real null elsewhere must not pass for the proof.
    payload = {"x": None, "y": math.inf}
    text = dumps({"payload": payload, "z": None}, floats_in=(payload,))
    assert json.loads(text)["payload"]["y"] == math.inf
    assert dumps({"a": None, "b": 1.5}) == '{"a":null,"b":1.5}'


@pytest.mark.parametrize(
    "text", ["[1e400]", '{"a": -1e400}', "[12345678901234567890, NaN]", '{"big": 1e999}']
)
def test_documents_hold_no_nan_or_infinity_whichever_parser_read_them(text: str) -> None:
    assert document(text) is None
    assert document("[12345678901234567890, 1.5]") == [12345678901234567890, 1.5]


@given(st.lists(_values, max_size=4) | st.dictionaries(st.text(), _values, max_size=4))
def test_a_document_reads_as_json_reads_it_integers_past_64_bits_exact(value: Any) -> None:
    text = json.dumps(value)
    doc = document(text)
    assert doc == json.loads(text)
    assert json.dumps(doc) == text  # same types too: an integer stays one


@pytest.mark.parametrize(
    "text", ["[-9223372036854775809]", "[18446744073709551616]", "[1e19, 2]", '{"f": -1.5e300}']
)
def test_near_the_64_bit_edge_numbers_keep_their_type(text: str) -> None:
    assert json.dumps(document(text)) == json.dumps(json.loads(text))


def test_finite_walks_dicts_lists_and_tuples() -> None:
    assert finite({"a": [1, 2.5, (3, "x")], "b": None})
    assert not finite({"a": [1, (2, math.nan)]})
    assert not finite([{"deep": {"er": -math.inf}}])


def test_lone_surrogates_and_huge_integers_fall_back_to_ascii_escapes() -> None:
    value = {"k": "a\udc80b", "n": 2**80}
    text = dumps(value)
    assert text.isascii() and "\\udc80" in text
    assert json.loads(text) == value


_JSONISH = st.text(alphabet='{}[]",:0123456789.eE+-truefalsnNIinfity \t\n\\u\x00\ufeff',
                   max_size=12)  # fmt: skip


@settings(max_examples=3000)
@given(_JSONISH)
def test_check_accepts_exactly_what_json_loads_accepts(text: str) -> None:
    refusal = _refusal(text)
    if refusal is None:
        check(text)
    else:  # json's own message, not orjson's (whose error is a JSONDecodeError too)
        with pytest.raises(json.JSONDecodeError, match=f"^{re.escape(refusal)}$"):
            check(text)


def _refusal(text: str) -> str | None:
    try:
        json.loads(text)
    except ValueError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "1e400", "12345678901234567890123"])
def test_check_keeps_what_orjson_refuses_but_json_accepts(text: str) -> None:
    check(text)
    check(text.encode())


def test_check_refuses_deep_nesting_as_json_does() -> None:
    with pytest.raises((ValueError, RecursionError)):
        check("[" * 100_000 + "]" * 100_000)


@settings(max_examples=3000)
@given(_JSONISH | _values.map(json.dumps))
def test_checked_document_refuses_what_check_refuses_and_else_answers_as_document(
    text: str,
) -> None:
    refusal = _refusal(text)
    if refusal is None:
        assert _same(checked_document(text), document(text))
    else:
        with pytest.raises(json.JSONDecodeError, match=f"^{re.escape(refusal)}$"):
            checked_document(text)


@pytest.mark.parametrize(
    "text",
    ["[1e400]", '{"a": NaN}', " [12345678901234567890, 1.5]", "\t{}", "[" * 70 + "]" * 70,
     '"x"', "123", "null", "NaN"],
)  # fmt: skip
def test_checked_document_where_one_parser_is_not_enough(text: str) -> None:
    assert _same(checked_document(text), document(text))
    assert checked_document(text, max_depth=2) == document(text, max_depth=2)


def test_checked_document_refuses_deep_nesting_as_check_does() -> None:
    with pytest.raises((ValueError, RecursionError)):
        checked_document("[" * 100_000 + "]" * 100_000)


def _same(a: object, b: object) -> bool:
    """Equal as JSON reads them, types included (an exact integer stays one)."""
    return json.dumps(a) == json.dumps(b)


@given(_values)
def test_loads_reads_what_json_reads_types_included(value: Any) -> None:
    text = json.dumps(value)
    doc = loads(text)
    assert doc == json.loads(text)
    assert json.dumps(doc) == text  # an integer past 64 bits stays an exact integer
    assert loads(text.encode()) == doc


@settings(max_examples=3000)
@given(_JSONISH)
def test_loads_refuses_exactly_what_json_loads_refuses(text: str) -> None:
    refusal = _refusal(text)
    if refusal is None:
        assert json.dumps(loads(text)) == json.dumps(json.loads(text))
    else:
        with pytest.raises(json.JSONDecodeError, match=f"^{re.escape(refusal)}$"):
            loads(text)


@pytest.mark.parametrize(
    "data", ['{"a": 1, "a": 2}', "[NaN, Infinity]", "1e400", "[-9223372036854775809]",
             '"\\ud800"', "\ufeff[1]", '{"u": 18446744073709551615}']
)  # fmt: skip
def test_loads_agrees_with_json_where_the_parsers_differ(data: str) -> None:
    for text in (data, data.encode("utf-8", "surrogatepass"), data.encode("utf-16")):
        try:
            expected = json.dumps(json.loads(text))
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                loads(text)
        else:
            assert json.dumps(loads(text)) == expected
