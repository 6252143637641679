import pytest

from server_responder.results.keys import InvalidKey, validate_key


@pytest.mark.parametrize("key", ["results/abc", "a", "owner/repo/0123abc", "x_artifact_files_report.txt",
                                 "a-b.c/d_e"])
def test_accepts_plain_relative_keys(key):
    assert validate_key(key) == key


@pytest.mark.parametrize("key", ["", "/etc/passwd", "../up", "a/../../b", "a/./b", "a//b", "a/", "..",
                                 "has space", "semi;colon", "back\\slash", "new\nline", "x" * 513, "ünïcode",
                                 None, 42])
def test_refuses_keys_that_could_escape_or_are_not_in_the_alphabet(key):
    with pytest.raises(InvalidKey, match="results_location"):
        validate_key(key)
