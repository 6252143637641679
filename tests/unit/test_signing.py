import pytest

from server_responder.signing import (
    SignatureError, legacy_signature, sign_script, tokens_match, verify_legacy, verify_script,
)

SECRET = "code-secret"


def test_signature_verifies_exactly_what_was_signed():
    signed = sign_script(SECRET, "print(5 + 4)", "python", "examples/nine", expires_in=60, now=1000)
    verify_script(SECRET, signed.signature, "print(5 + 4)", "python", "examples/nine", 1060, now=1001)


@pytest.mark.parametrize(("field", "value"), [
    ("script", "print(6)"), ("language", "bash"), ("results_location", "elsewhere"), ("expires", 99999),
])
def test_signature_does_not_cover_anything_else(field, value):
    signed = sign_script(SECRET, "print(5 + 4)", "python", "examples/nine", expires_in=60, now=1000)
    fields = {"script": signed.script, "language": signed.language, "results_location": signed.results_location,
              "expires": signed.expires, field: value}
    with pytest.raises(SignatureError, match="does not match"):
        verify_script(SECRET, signed.signature, now=1001, **fields)


def test_expired_signature_is_refused():
    signed = sign_script(SECRET, "print(1)", "python", expires_in=10, now=1000)
    with pytest.raises(SignatureError, match="expired"):
        verify_script(SECRET, signed.signature, "print(1)", "python", None, signed.expires, now=1011)


def test_signature_without_expiry_only_when_asked():
    assert sign_script(SECRET, "print(1)", "python").expires is not None
    forever = sign_script(SECRET, "print(1)", "python", expires_in=None)
    assert forever.expires is None
    verify_script(SECRET, forever.signature, "print(1)", "python", None, None, now=10**12)


def test_wrong_secret_and_malformed_signatures_are_refused():
    signed = sign_script("other-secret", "print(1)", "python", expires_in=60)
    with pytest.raises(SignatureError):
        verify_script(SECRET, signed.signature, "print(1)", "python", None, signed.expires)
    with pytest.raises(SignatureError, match="malformed"):
        verify_script(SECRET, "abc", "print(1)", "python", None, signed.expires)


def test_legacy_signature_matches_the_original_scheme():
    import base64
    import hashlib
    import hmac

    script = "puts (5+4)\r\n"
    expected = base64.b64encode(hmac.new(SECRET.encode(), b"puts (5+4)", hashlib.sha1).digest()).decode()
    assert legacy_signature(SECRET, script) == expected
    verify_legacy(SECRET, expected + "\n", script)
    with pytest.raises(SignatureError):
        verify_legacy(SECRET, expected, "puts (6+4)")


def test_token_comparison():
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("abc", None)
    assert not tokens_match("", "")


def test_a_maximum_age_bounds_how_far_ahead_a_signature_may_expire():
    soon = sign_script(SECRET, "print(1)", "python", expires_in=600, now=1000)
    verify_script(SECRET, soon.signature, "print(1)", "python", None, soon.expires, now=1000, max_age=600)
    late = sign_script(SECRET, "print(1)", "python", expires_in=601, now=1000)
    with pytest.raises(SignatureError, match="signature_max_age_seconds"):
        verify_script(SECRET, late.signature, "print(1)", "python", None, late.expires, now=1000, max_age=600)
    forever = sign_script(SECRET, "print(1)", "python", expires_in=None)
    with pytest.raises(SignatureError, match="at most 600 s"):
        verify_script(SECRET, forever.signature, "print(1)", "python", None, None, now=1000, max_age=600)
    verify_script(SECRET, forever.signature, "print(1)", "python", None, None, now=1000, max_age=0)
