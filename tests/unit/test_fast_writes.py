"""The job path's quicker writes give exactly what the slower ways gave."""

from __future__ import annotations

import json
import os

import pytest

from server_responder.files import write_file
from server_responder.results.store import indented_json

DOCUMENTS = [
    {},
    {"b": 1, "a": "x"},
    {"job_id": "ab" * 20, "status": "succeeded", "exit_status": 0, "signal": None, "results": "9\n",
     "duration_s": 0.012, "truncated": False, "artifacts": [], "skipped_artifacts": [], "details": {},
     "stderr": "déjà vu \u2603 \"quoted\" \\ back\tslash\n", "peak_memory_bytes": 2 ** 40, "ratio": -1.5e-9},
    {"artifacts": [{"name": "a.txt", "size": 3}], "status": "failed"},
    {"nested": {"inner": [1, 2, {"deep": None}]}, "list": [1, "two", 3.0]},
    {"tuple": (1, 2), "empty_tuple": ()},
    [1, {"a": 2}],
    "text",
    None,
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_indented_json_is_the_text_of_json_dumps_with_indent_and_sorted_keys(document):
    assert indented_json(document) == json.dumps(document, indent=2, sort_keys=True)


def test_indented_json_refuses_what_json_refuses():
    with pytest.raises(TypeError):
        indented_json({"a": object()})


def test_write_file_gives_the_mode_asked_whatever_the_umask(tmp_path):
    path = tmp_path / "script.sh"
    previous = os.umask(0o077)
    try:
        write_file(path, b"echo 9", 0o640)
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"echo 9"
    assert path.stat().st_mode & 0o7777 == 0o640


def test_write_file_replaces_what_is_there(tmp_path):
    path = tmp_path / "script.sh"
    path.write_bytes(b"a much longer earlier content")
    write_file(path, b"echo 9", 0o640)
    assert path.read_bytes() == b"echo 9"


def test_write_file_never_writes_through_a_symbolic_link(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    (tmp_path / "script.sh").symlink_to(target)
    with pytest.raises(OSError):
        write_file(tmp_path / "script.sh", b"echo 9", 0o640)
    assert target.read_bytes() == b"untouched"
