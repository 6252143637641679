"""Signed scripts: a public page may run exactly the script it was given, where it was told, until it expires."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

SIGNATURE_PREFIX = "v1:"
# Unix times past this (the year 10000) are not times a signature could mean.
MAX_EXPIRES = 253402300800


class SignatureError(ValueError):
    """The signature is missing, malformed, wrong or expired; the message says which."""


@dataclass(frozen=True)
class SignedScript:
    script: str
    language: str
    results_location: str | None
    expires: int | None
    signature: str

    def as_fields(self) -> dict[str, object]:
        return {
            "type": "script",
            "script": self.script,
            "language": self.language,
            "results_location": self.results_location,
            "expires": self.expires,
            "signature": self.signature,
        }


def canonical_message(script: str, language: str, results_location: str | None, expires: int | None) -> bytes:
    """The bytes a signature covers: every field that decides what runs and where its result goes."""
    fields = {"expires": expires, "language": language, "results_location": results_location, "script": script}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(secret: str, message: bytes) -> str:
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign_script(secret: str, script: str, language: str, results_location: str | None = None,
                expires_in: int | None = 3600, now: float | None = None) -> SignedScript:
    """Sign a script; `expires_in=None` makes a signature that never expires, only when asked for."""
    expires = None if expires_in is None else int((now if now is not None else time.time()) + expires_in)
    signature = _digest(secret, canonical_message(script, language, results_location, expires))
    return SignedScript(script, language, results_location, expires, signature)


def verify_script(secret: str, signature: object, script: str, language: str, results_location: str | None,
                  expires: object, now: float | None = None, max_age: int = 0) -> None:
    """Raise SignatureError unless `signature` signs exactly these fields, has not expired and, with a
    `max_age` (seconds, 0 for none), expires no later than that from now."""
    if not isinstance(signature, str) or not signature.startswith(SIGNATURE_PREFIX) or not signature.isascii():
        raise SignatureError("signature is malformed")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)
                                or not 0 <= expires < MAX_EXPIRES):
        raise SignatureError("expires must be an integer Unix time or null")
    try:
        message = canonical_message(script, language, results_location, expires)
    except UnicodeEncodeError:
        raise SignatureError("the signed fields must be valid Unicode text") from None
    expected = _digest(secret, message)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        raise SignatureError("signature does not match the script, language, results_location and expires")
    now = now if now is not None else time.time()
    if expires is not None and expires < now:
        raise SignatureError("signature has expired")
    # A leaked signature is a key to this box until it expires: the operator bounds how long that may be.
    if max_age > 0 and (expires is None or expires - now > max_age):
        raise SignatureError(f"signature is valid for longer than this responder accepts: expires must be at most "
                             f"{max_age} s from now (signature_max_age_seconds)")


def legacy_signature(secret: str, script: str) -> str:
    """The original responder's signature: base64 HMAC-SHA1 of the stripped script without CR or LF."""
    message = script.strip().replace("\r", "").replace("\n", "").encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha1).digest()).decode()


def verify_legacy(secret: str, signature: object, script: str) -> None:
    if not isinstance(signature, str) or not signature.isascii():
        raise SignatureError("signature is malformed")
    try:
        expected = legacy_signature(secret, script)
    except UnicodeEncodeError:
        raise SignatureError("the script must be valid Unicode text") from None
    # Ruby's Base64.encode64 wrapped lines and added a newline; clients sent that form.
    given = "".join(signature.split())
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureError("signature does not match the script")


def tokens_match(expected: str, given: object) -> bool:
    """Constant-time token comparison."""
    if not isinstance(given, str) or not expected:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
