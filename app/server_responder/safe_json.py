"""JSON from callers, parsed so that whatever is accepted can be used later: bounded nesting, finite numbers
of sane size, and strings that encode to UTF-8 (no lone surrogates)."""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
# Longer than any number a request has a use for; Python would otherwise turn 4000 digits into an int.
MAX_NUMBER_CHARACTERS = 40
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnsafeJson(ValueError):
    """The text is not JSON, or is JSON the service will not take; the message says which and where."""


def loads(data: bytes | str) -> Any:
    """Parse `data` or raise UnsafeJson naming the problem."""
    try:
        document = json.loads(data, parse_constant=_refuse_constant, parse_int=_integer, parse_float=_float)
    except RecursionError:
        raise UnsafeJson(f"nested deeper than {MAX_DEPTH} levels") from None
    except UnsafeJson:
        raise
    except json.JSONDecodeError as error:
        raise UnsafeJson(f"malformed JSON ({error.msg} at position {error.pos})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise UnsafeJson(f"malformed JSON ({error})") from None
    _check(document, "$", 0)
    return document


def _refuse_constant(name: str) -> Any:
    raise UnsafeJson(f"{name} is not a JSON number")


def _integer(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARACTERS:
        raise UnsafeJson(f"a number of {len(text)} digits is out of range")
    return int(text)


def _float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARACTERS:
        raise UnsafeJson(f"a number of {len(text)} characters is out of range")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise UnsafeJson(f"{text} is out of range")
    return value


def _check(value: Any, where: str, depth: int) -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise UnsafeJson(f"{where}: a lone UTF-16 surrogate is not a character")
        return
    if not isinstance(value, (dict, list)):
        return
    if depth >= MAX_DEPTH:
        raise UnsafeJson(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if _SURROGATE.search(key):
                raise UnsafeJson(f"{where}: a lone UTF-16 surrogate in a key is not a character")
            _check(item, f"{where}.{key[:40]}" if len(where) < 200 else where, depth + 1)
    else:
        for index, item in enumerate(value):
            _check(item, f"{where}[{index}]" if len(where) < 200 else where, depth + 1)
