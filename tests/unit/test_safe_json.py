"""Caller JSON: what is accepted can be used later; what is refused says why."""

from __future__ import annotations

import pytest

from server_responder import safe_json


@pytest.mark.parametrize("text, says", [
    ("[" * 33 + "]" * 33, "32 levels"),
    ("[" * 200_000 + "]" * 200_000, "32 levels"),
    ('{"a": "\\ud800"}', "$.a: a lone UTF-16 surrogate"),
    ('{"\\udc00": 1}', "in a key"),
    ('[1, ["\\udbff"]]', "$[1][0]"),
    ("9" * 41, "41 digits"),
    ("1e400", "out of range"),
    ("-1e400", "out of range"),
    ("NaN", "NaN"),
    ("[Infinity]", "Infinity"),
    ('{"a": ', "malformed JSON"),
    (b'"\xff"', "malformed JSON"),
])
def test_refused_json_names_the_problem(text, says):
    with pytest.raises(safe_json.UnsafeJson) as refused:
        safe_json.loads(text)
    assert says in str(refused.value)


def test_json_within_the_limits_is_parsed_as_usual():
    assert safe_json.loads("[" * 32 + "]" * 32) is not None
    assert safe_json.loads('{"a": [1, 2.5, "✓ \\u00e9", null, true], "b": ' + "9" * 40 + "}") == {
        "a": [1, 2.5, "✓ é", None, True], "b": int("9" * 40)}
