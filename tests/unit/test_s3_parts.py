"""The plain parts of the S3 work: store URLs, upload_urls requests, ages, settings."""

import argparse
from pathlib import Path

import pytest

from server_responder.cli.results import parse_age
from server_responder.jobs.requests import parse_job_request
from server_responder.jobs.types import RequestError
from server_responder.responder import job_types
from server_responder.results.s3 import S3Location
from server_responder.settings import Settings, SettingsError


@pytest.mark.parametrize(("url", "bucket", "prefix"), [
    ("s3://results", "results", ""),
    ("s3://results/", "results", ""),
    ("s3://results/box", "results", "box/"),
    ("s3://results/boxes/one/", "results", "boxes/one/"),
])
def test_s3_locations_name_a_bucket_and_a_prefix(url, bucket, prefix):
    assert S3Location.parse(url) == S3Location(bucket, prefix)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/../up", "s3://bucket/a b", "file:///x"])
def test_bad_s3_locations_are_refused(url):
    with pytest.raises(ValueError):
        S3Location.parse(url)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def script_request(settings, **fields):
    return parse_job_request({"type": "script", "script": "print(1)", **fields}, settings, job_types(settings),
                             authorized=True)


def test_upload_urls_are_kept_in_the_job_spec(settings):
    urls = {"result": "https://bucket.s3.amazonaws.com/r?X-Amz-Signature=1",
            "artifacts": {"out/report.txt": "http://127.0.0.1:9000/a"}}
    request = script_request(settings, upload_urls=urls, results_location="r")
    assert request.spec["upload_urls"] == urls
    assert "upload_urls" not in script_request(settings).spec


@pytest.mark.parametrize(("upload_urls", "field"), [
    ("https://x", "upload_urls"),
    ({"results": "https://x"}, "upload_urls"),
    ({"result": "ftp://x/y"}, "upload_urls.result"),
    ({"result": "file:///etc/passwd"}, "upload_urls.result"),
    ({"result": "https://"}, "upload_urls.result"),
    ({"result": "https://x/a b"}, "upload_urls.result"),
    ({"result": 5}, "upload_urls.result"),
    ({"artifacts": ["https://x"]}, "upload_urls.artifacts"),
    ({"artifacts": {"../up": "https://x"}}, "upload_urls.artifacts"),
    ({"artifacts": {"log.txt": "gopher://x"}}, "upload_urls.artifacts.log.txt"),
])
def test_bad_upload_urls_are_refused_naming_the_field(settings, upload_urls, field):
    with pytest.raises(RequestError) as raised:
        script_request(settings, upload_urls=upload_urls)
    assert raised.value.field == field


def test_signed_scripts_may_not_carry_upload_urls(tmp_path):
    body = {"type": "script", "script": "print(1)", "signature": "v1:00", "upload_urls": {"result": "https://x"}}
    settings = Settings.from_mapping({"data_dir": str(tmp_path), "code_secret": "secret"})
    with pytest.raises(RequestError) as raised:
        parse_job_request(body, settings, job_types(settings), authorized=False)
    assert raised.value.field == "upload_urls"


@pytest.mark.parametrize(("text", "seconds"), [("10d", 864000), ("12h", 43200), ("30m", 1800), ("90s", 90),
                                               ("2w", 1209600), ("1.5h", 5400), ("0s", 0)])
def test_ages(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["10", "d", "-1d", "10 days", "1y", ""])
def test_bad_ages_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_age(text)


@pytest.mark.parametrize(("values", "named"), [
    ({"upload_retry_seconds": "0"}, "upload_retry_seconds"),
    ({"upload_retry_seconds": "-1"}, "upload_retry_seconds"),
    ({"upload_retry_seconds": "10", "upload_retry_max_seconds": "5"}, "upload_retry_max_seconds"),
    ({"s3_endpoint_url": "127.0.0.1:9000"}, "s3_endpoint_url"),
    ({"store": "s3:///prefix"}, "store"),
])
def test_invalid_upload_settings_are_refused_naming_the_key(tmp_path, values, named):
    with pytest.raises(SettingsError, match=f"^{named}:"):
        Settings.from_mapping({"data_dir": str(tmp_path), **values})
