"""GitHub deliveries: signatures, both encodings, push fields, and the redelivery memory."""

import json
import urllib.parse
from pathlib import Path

import pytest

from server_responder.projects.github import (
    DeliveryError, DeliveryLog, deletion_detail, delivery_payload, is_branch_deletion, push_spec, sign,
    signature_matches,
)

SECRET = "webhook-secret"
SHA = "a" * 40


def push(**changes):
    payload = {"ref": "refs/heads/main", "before": "b" * 40, "after": SHA,
               "repository": {"full_name": "acme/widget", "name": "widget", "owner": {"login": "acme"}},
               "pusher": {"name": "someone"}, "head_commit": {"id": SHA, "message": "fix", "author": {"name": "A"}}}
    payload.update(changes)
    return payload


def test_signature_of_the_raw_body_is_accepted():
    body = b'{"zen": "Keep it logically awesome."}'
    assert signature_matches(SECRET, body, sign(SECRET, body))


@pytest.mark.parametrize("header", [
    None, "", "sha256=", "sha1=" + "0" * 40, sign("other-secret", b"{}"), sign(SECRET, b"{} "),
    sign(SECRET, b"{}").upper(), "sha256=\u00e9",
])
def test_wrong_or_missing_signatures_are_refused(header):
    assert not signature_matches(SECRET, b"{}", header)


def test_json_and_form_bodies_give_the_same_payload():
    payload = push()
    as_json = json.dumps(payload).encode()
    as_form = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    assert delivery_payload("application/json", as_json) == payload
    assert delivery_payload("application/x-www-form-urlencoded", as_form) == payload


@pytest.mark.parametrize(("content_type", "body", "field"), [
    ("application/json", b"not json", "body"),
    ("application/json", b"[1, 2]", "body"),
    ("application/x-www-form-urlencoded", b"other=1", "payload"),
    ("text/plain", b"{}", "Content-Type"),
])
def test_unreadable_deliveries_name_the_part(content_type, body, field):
    with pytest.raises(DeliveryError) as failure:
        delivery_payload(content_type, body)
    assert failure.value.field == field


def test_push_gives_the_project_and_the_pushed_commit():
    spec = push_spec(push())
    assert (spec["project"], spec["sha"], spec["ref"]) == ("acme/widget", SHA, "refs/heads/main")
    assert spec["push"]["pusher"] == "someone" and spec["push"]["head_commit"]["message"] == "fix"


def test_project_falls_back_to_owner_and_name_as_the_original_read_them():
    repository = {"name": "widget", "owner": {"name": "acme"}}
    assert push_spec(push(repository=repository))["project"] == "acme/widget"


@pytest.mark.parametrize("changes", [
    {"repository": {"full_name": "../../etc"}},
    {"repository": {"full_name": "acme/widget;touch /tmp/x"}},
    {"repository": None},
    {"after": "main"},
    {"after": ";rm -rf /"},
    {"after": None},
])
def test_hostile_pushes_are_refused(changes):
    with pytest.raises(DeliveryError):
        push_spec(push(**changes))


def test_branch_deletions_are_recognised():
    assert is_branch_deletion(push(after="0" * 40, deleted=True))
    assert is_branch_deletion(push(after="0" * 40))
    assert not is_branch_deletion(push())
    with pytest.raises(DeliveryError, match="deletion"):
        push_spec(push(after="0" * 40))


@pytest.mark.parametrize(("ref", "named"), [
    ("refs/tags/v1.2", "tag v1.2"), ("refs/heads/feature/x", "branch feature/x"), ("refs/notes/y", "ref refs/notes/y"),
    (None, "a ref"),
])
def test_a_deletion_names_what_was_deleted(ref, named):
    detail = deletion_detail(push(after="0" * 40, deleted=True, ref=ref))
    assert detail == f"{named} was deleted: a deletion has nothing to run"


def test_delivery_log_survives_a_new_instance_and_is_pruned(tmp_path: Path):
    log = DeliveryLog(tmp_path / "deliveries", keep=3)
    log.record("d-1", "job-1")
    assert DeliveryLog(tmp_path / "deliveries").job_for("d-1") == "job-1"
    assert log.job_for("d-unknown") is None
    for n in range(2, 6):
        log.record(f"d-{n}", f"job-{n}")
    assert len(list((tmp_path / "deliveries").glob("*.json"))) == 3
    assert log.job_for("d-5") == "job-5"
    assert not log.valid_id("../escape") and not log.valid_id("") and log.valid_id("72d3162e-cc78-11e3-81ab")
