"""The recorded request hides every credential, wherever the caller put it."""

import json
import urllib.parse
from dataclasses import dataclass, field

import pytest

from server_responder.web.last_request import MAX_SHOWN_CHARS, REDACTED, RequestRecorder

TOKEN = "tok-9f8e7d6c5b4a"


@dataclass
class FakeRequest:
    """The parts of an incoming request the recorder reads."""

    body: bytes = b""
    content_type: str = "application/json"
    method: str = "POST"
    path: str = "/jobs"
    remote: str = "127.0.0.1"
    request_id: str = "req-1"
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


def record(request: FakeRequest, secrets=(TOKEN,)):
    recorder = RequestRecorder(lambda: list(secrets))
    assert recorder.last is None
    recorder.record(request)
    return recorder.last


def test_credential_headers_are_redacted_and_others_kept():
    recorded = record(FakeRequest(headers={
        "Authorization": f"Bearer {TOKEN}", "Proxy-Authorization": "Basic abc", "Cookie": "session=abc",
        "X-Hub-Signature-256": "sha256=abc", "User-Agent": "curl/8", "Content-Type": "application/json"}))
    headers = dict(recorded.headers)
    for name in ("Authorization", "Proxy-Authorization", "Cookie", "X-Hub-Signature-256"):
        assert headers[name] == REDACTED
    assert headers["User-Agent"] == "curl/8"


def test_json_signature_token_and_env_values_are_redacted():
    body = {"type": "script", "script": "print(1)", "signature": "v1:abc", "api_token": TOKEN,
            "env": {"DB_PASSWORD": "hunter2", "MODE": "fast"}, "nested": {"secret_key": "s", "plain": "p"}}
    recorded = record(FakeRequest(body=json.dumps(body).encode()))
    fields = dict(recorded.fields)
    assert fields["signature"] == REDACTED and fields["api_token"] == REDACTED
    assert json.loads(fields["env"]) == {"DB_PASSWORD": REDACTED, "MODE": REDACTED}
    assert json.loads(fields["nested"]) == {"secret_key": REDACTED, "plain": "p"}
    assert fields["script"] == "print(1)"
    assert "hunter2" not in repr(recorded)


def test_a_secret_pasted_anywhere_is_hidden():
    form = urllib.parse.urlencode({"payload": json.dumps({"script_payload": f"print('{TOKEN}')"}),
                                   "api_token": TOKEN})
    recorded = record(FakeRequest(body=form.encode(), content_type="application/x-www-form-urlencoded",
                                  path="/", query={"next": f"/x?t={TOKEN}"}, headers={"Referer": f"/?{TOKEN}"}))
    assert TOKEN not in repr(recorded)
    assert dict(recorded.fields)["api_token"] == REDACTED
    assert REDACTED in dict(recorded.fields)["payload"]
    assert dict(recorded.query)["next"] == f"/x?t={REDACTED}"
    assert recorded.body_note.endswith("of form data")


@pytest.mark.parametrize("body, content_type, note", [
    (b"", "application/json", "no body"),
    (b"{not json", "application/json", "9 bytes, not valid JSON"),
    (b"\x00\x01", "application/octet-stream", "2 bytes of application/octet-stream, not shown"),
])
def test_bodies_that_are_not_fields_are_described_not_shown(body, content_type, note):
    recorded = record(FakeRequest(body=body, content_type=content_type))
    assert recorded.fields == ()
    assert recorded.body_note == note


def test_long_values_are_cut():
    recorded = record(FakeRequest(body=json.dumps({"script": "x" * (MAX_SHOWN_CHARS + 10)}).encode()))
    shown = dict(recorded.fields)["script"]
    assert shown.startswith("x" * MAX_SHOWN_CHARS) and shown.endswith("(10 more characters)")


def test_the_newest_request_replaces_the_last():
    recorder = RequestRecorder()
    recorder.record(FakeRequest(path="/first"))
    recorder.record(FakeRequest(path="/second"))
    assert recorder.last.path == "/second"
