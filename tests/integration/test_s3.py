"""Results on S3 against a real S3 API: moto's standalone server, a separate process on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest

from server_responder.results.local import LocalResultStore

BUCKET = "results-bucket"
STORE = f"s3://{BUCKET}/box"
PREFIX = "box/"
REGION = "eu-west-1"
# Values the service holds and a job must never see.
ACCESS_KEY_ID = "AKIATESTINGSERVICEKEY"
SECRET_ACCESS_KEY = "service-secret-access-key-value"
SESSION_TOKEN = "service-session-token-value"
VOLATILE = ("job_id", "created_at", "started_at", "finished_at", "duration_s", "peak_memory_bytes")
ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
ARTIFACTS_SCRIPT = """\
import os
os.makedirs('artifacts/data', exist_ok=True)
open('artifacts/report.txt', 'w').write('the report')
open('artifacts/data/points.json', 'w').write('[1, 2, 3]')
open('artifacts/blob.bin', 'wb').write(bytes(range(256)))
print('made artifacts')
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def age_seconds(client, key: str) -> float:
    """How long ago the store says it last modified key, by this machine's clock, as prune judges it."""
    modified = client.head_object(Bucket=BUCKET, Key=key)["LastModified"]
    return time.time() - modified.timestamp()


class S3Endpoint:
    """`python -m moto.server` on a fixed loopback port: stopped and started again on the same port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> S3Endpoint:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env()})
        wait_until(self._answers, f"the S3 endpoint on port {self.port}", timeout=30)
        return self

    def _answers(self) -> bool:
        assert self.process.poll() is None, self.log_path.read_text()
        try:
            urllib.request.urlopen(self.url + "/", timeout=1).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def env(self, credentials: bool = True) -> dict[str, str]:
        """What boto3 needs to find this endpoint, and nothing from the machine's own AWS setup."""
        env = {
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true",
            "NO_PROXY": "127.0.0.1,localhost",
        }
        if credentials:
            env.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
                        "AWS_SESSION_TOKEN": SESSION_TOKEN})
        return env

    def client(self):
        return boto3.client("s3", endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
                            aws_secret_access_key="testing")

    def create_bucket(self) -> None:
        self.client().create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})

    def objects(self) -> dict[str, tuple[bytes, str]]:
        """Every object below the store's prefix: key (without the prefix) to body and content type."""
        client = self.client()
        found = {}
        for entry in client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX).get("Contents", []):
            answer = client.get_object(Bucket=BUCKET, Key=entry["Key"])
            found[entry["Key"][len(PREFIX):]] = (answer["Body"].read(), answer["ContentType"])
        return found

    def document(self, key: str) -> dict | None:
        stored = self.objects().get(key)
        return None if stored is None else json.loads(stored[0])


@pytest.fixture
def s3(tmp_path):
    endpoint = S3Endpoint(tmp_path / "moto.log").start()
    endpoint.create_bucket()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def s3_responder(make_responder, s3):
    """Factory for responders storing in S3, with short retry settings and the endpoint's credentials."""

    def make(start: bool = True, endpoint_setting: bool = False, **settings):
        responder = make_responder(start=False, store=STORE, upload_retry_seconds=0.2,
                                   upload_retry_max_seconds=1, **settings)
        responder.env.update(s3.env())
        if endpoint_setting:
            del responder.env["AWS_ENDPOINT_URL_S3"]
            responder.env["SERVER_RESPONDER_S3_ENDPOINT_URL"] = s3.url
        return responder.start() if start else responder

    return make


def pending_uploads(responder) -> int:
    return responder.request("GET", "/health", token=False).json()["pending_uploads"]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server_responder", *args], env=env, capture_output=True,
                          timeout=60)


def comparable(body: bytes, content_type: str):
    if content_type == "application/json":
        document = json.loads(body)
        if isinstance(document, dict):
            return {key: value for key, value in document.items() if key not in VOLATILE}
        return document
    return body


def run_layout_jobs(responder) -> None:
    for fields in ({"script": "print('plain')", "results_location": "layout/plain"},
                   {"script": ARTIFACTS_SCRIPT, "results_location": "layout/with-artifacts"},
                   {"script": "import sys\nprint('bad', file=sys.stderr)\nsys.exit(3)",
                    "results_location": "layout/nested/failing"},
                   {"script": "print('default location')"}):
        job = responder.submit(**fields)
        assert job["status"] in ("succeeded", "failed"), job


def test_local_and_s3_stores_hold_the_same_keys_and_documents(make_responder, s3_responder, s3):
    local = make_responder()
    remote = s3_responder()
    run_layout_jobs(local)
    run_layout_jobs(remote)
    wait_until(lambda: pending_uploads(remote) == 0, "uploads delivered")

    local_store = LocalResultStore(Path(local.env["SERVER_RESPONDER_STORE"]))
    local_objects = {}
    for info in local_store.list():
        stored = local_store.get(info.key)
        local_objects[info.key] = (stored.body, stored.content_type)
    s3_objects = s3.objects()

    def fixed_keys(objects):
        return {key for key in objects if not key.startswith("results/")}

    assert fixed_keys(local_objects) == fixed_keys(s3_objects) == {
        "layout/plain", "layout/with-artifacts", "layout/nested/failing",
        "layout/with-artifacts_artifact_files", "layout/with-artifacts_artifact_files_report.txt",
        "layout/with-artifacts_artifact_files_data/points.json", "layout/with-artifacts_artifact_files_blob.bin"}
    assert len([key for key in s3_objects if key.startswith("results/")]) == 1
    for key in fixed_keys(local_objects):
        local_body, local_type = local_objects[key]
        s3_body, s3_type = s3_objects[key]
        assert s3_type == local_type, key
        assert comparable(s3_body, s3_type) == comparable(local_body, local_type), key
    assert s3_objects["layout/with-artifacts_artifact_files_blob.bin"] == (bytes(range(256)),
                                                                           "application/octet-stream")
    assert s3_objects["layout/with-artifacts_artifact_files_report.txt"][1] == "text/plain"
    assert json.loads(s3_objects["layout/nested/failing"][0])["exit_status"] == 3


def test_objects_are_private_unless_public_results_is_set(s3_responder, s3):
    private = s3_responder(endpoint_setting=True)
    private.submit("print(1)", results_location="acl/private")
    public = s3_responder(public_results="true")
    job = public.submit(ARTIFACTS_SCRIPT, results_location="acl/public")
    client = s3.client()

    def readable_by_anyone(key: str) -> bool:
        grants = client.get_object_acl(Bucket=BUCKET, Key=PREFIX + key)["Grants"]
        return any(g["Grantee"].get("URI") == ALL_USERS and g["Permission"] == "READ" for g in grants)

    wait_until(lambda: pending_uploads(private) == 0 and pending_uploads(public) == 0, "uploads delivered")
    assert not readable_by_anyone("acl/private")
    assert readable_by_anyone("acl/public")
    assert readable_by_anyone("acl/public_artifact_files_report.txt")
    report = next(a for a in job["artifacts"] if a["name"] == "report.txt")
    assert report["url"] == f"{s3.url}/{BUCKET}/{PREFIX}acl/public_artifact_files_report.txt"
    with urllib.request.urlopen(report["url"], timeout=10) as anonymous:
        assert anonymous.read() == b"the report"


def test_results_are_read_back_through_the_responder(s3_responder, s3):
    responder = s3_responder()
    responder.submit(ARTIFACTS_SCRIPT, results_location="read/back")
    wait_until(lambda: pending_uploads(responder) == 0, "uploads delivered")
    assert responder.request("GET", "/results/read/back").json()["results"] == "made artifacts\n"
    artifact = responder.request("GET", "/results/read/back_artifact_files_blob.bin")
    assert artifact.body == bytes(range(256)) and artifact.headers["Content-Type"] == "application/octet-stream"
    assert responder.request("GET", "/results/read/nothing").status == 404


def test_results_made_while_the_endpoint_is_down_arrive_when_it_is_back(s3_responder, s3):
    responder = s3_responder()
    s3.stop()
    for n in range(4):
        job = responder.submit(f"print({n})", results_location=f"outage/{n}")
        assert job["status"] == "succeeded" and job["error"] is None
    job = responder.submit(ARTIFACTS_SCRIPT, results_location="outage/artifacts")
    assert job["status"] == "succeeded" and job["error"] is None
    # Four documents, the artifacts job's document, its index and three artifacts.
    assert pending_uploads(responder) == 9
    # The box says so to whoever decides to stop it.
    assert responder.request("GET", "/last_job", token=False).json()["pending_uploads"] == 9
    # Pending uploads are read from the spool, by the API and by `cat` on the box.
    assert responder.request("GET", "/results/outage/2").json()["results"] == "2\n"
    assert responder.request("GET", "/results/outage/artifacts_artifact_files_blob.bin").body == bytes(range(256))
    assert responder.request("GET", "/results/outage/never").status == 503
    shown = cli("cat", "outage/3", "--raw", env=responder.env)
    assert (shown.returncode, shown.stdout) == (0, b"3\n"), shown.stderr

    s3.start()
    s3.create_bucket()
    wait_until(lambda: pending_uploads(responder) == 0, "uploads delivered after the endpoint is back")
    assert responder.request("GET", "/last_job", token=False).json()["pending_uploads"] == 0
    for n in range(4):
        assert s3.document(f"outage/{n}")["results"] == f"{n}\n"
    objects = s3.objects()
    assert objects["outage/artifacts_artifact_files_blob.bin"] == (bytes(range(256)), "application/octet-stream")
    assert json.loads(objects["outage/artifacts"][0])["results"] == "made artifacts\n"
    events = [json.loads(line).get("event") for line in responder.log_file.read_text().splitlines()]
    assert "upload.failed" in events and "upload.delivered" in events


def test_uploads_pending_at_a_crash_are_delivered_after_the_restart(s3_responder, s3):
    responder = s3_responder()
    s3.stop()
    for n in range(3):
        assert responder.submit(f"print('crash {n}')", results_location=f"crash/{n}")["status"] == "succeeded"
    assert responder.submit(ARTIFACTS_SCRIPT, results_location="crash/artifacts")["status"] == "succeeded"
    assert pending_uploads(responder) == 8
    responder.kill()
    assert len(list((responder.data_dir / "uploads").glob("*.upload"))) == 8

    s3.start()
    s3.create_bucket()
    responder.start()
    wait_until(lambda: pending_uploads(responder) == 0, "uploads delivered after the restart")
    for n in range(3):
        assert s3.document(f"crash/{n}")["results"] == f"crash {n}\n"
    assert s3.objects()["crash/artifacts_artifact_files_report.txt"] == (b"the report", "text/plain")
    assert not list((responder.data_dir / "uploads").glob("*.upload"))


def test_jobs_never_see_the_services_aws_credentials(s3_responder, s3):
    responder = s3_responder(api_key="the-api-token-value-5678")
    job = responder.submit("import os, json; print(json.dumps(dict(os.environ)))", results_location="env/job",
                           env={"MINE": "yes"})
    seen = json.loads(job["stdout"])
    assert seen["MINE"] == "yes"
    assert [name for name in seen if name.startswith(("AWS", "SERVER_RESPONDER"))] == []
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN, "the-api-token-value-5678"):
        assert secret not in job["stdout"]
    # The service itself did hold and use them: without credentials boto3 refuses to send anything.
    wait_until(lambda: s3.document("env/job") is not None, "the result in S3")


def test_a_box_without_credentials_writes_through_presigned_urls(make_responder, s3, tmp_path):
    box = make_responder()
    assert not [name for name in box.env if name.startswith("AWS")]
    caller_env = {**box.env, **s3.env()}
    signed = cli("presign", "--store", STORE, "--location", "presigned/run", "--artifact", "report.txt",
                 "--artifact", "data/points.json", "--expires-in", "600", env=caller_env)
    assert signed.returncode == 0, signed.stderr
    fields = json.loads(signed.stdout)
    assert fields["results_location"] == "presigned/run"
    assert set(fields["upload_urls"]["artifacts"]) == {"report.txt", "data/points.json"}

    job = box.submit(ARTIFACTS_SCRIPT, **fields)
    assert job["status"] == "succeeded", job
    wait_until(lambda: pending_uploads(box) == 0, "uploads delivered")
    objects = s3.objects()
    assert set(objects) == {"presigned/run", "presigned/run_artifact_files_report.txt",
                            "presigned/run_artifact_files_data/points.json"}
    assert objects["presigned/run_artifact_files_report.txt"] == (b"the report", "text/plain")
    assert objects["presigned/run_artifact_files_data/points.json"] == (b"[1, 2, 3]", "application/json")
    document = json.loads(objects["presigned/run"][0])
    assert objects["presigned/run"][1] == "application/json"
    assert document["job_id"] == job["id"] and document["results"] == "made artifacts\n"
    # The box keeps its own copy in its own store.
    assert box.request("GET", "/results/presigned/run").json() == document
    assert "X-Amz-Signature" not in box.log_file.read_text()


def test_upload_urls_are_checked_and_need_the_token(make_responder):
    box = make_responder(code_secret="a-code-secret")
    refused = box.request("POST", "/jobs", body={"script": "print(1)", "upload_urls": {"result": "file:///x"}})
    assert refused.status == 400 and refused.json()["field"] == "upload_urls.result"
    signed = box.request("POST", "/jobs", token=False, body={
        "script": "print(1)", "signature": "v1:00", "upload_urls": {"result": "https://example.com/x"}})
    assert signed.status == 400 and signed.json()["field"] == "upload_urls"


def test_cat_prints_documents_outputs_and_artifacts_from_s3(s3_responder, s3, tmp_path):
    responder = s3_responder()
    job = responder.submit(ARTIFACTS_SCRIPT, results_location="cat/run")
    wait_until(lambda: pending_uploads(responder) == 0, "uploads delivered")
    # A caller's machine: only the endpoint's credentials and a store URL.
    env = {key: value for key, value in responder.env.items() if not key.startswith("SERVER_RESPONDER_")}
    env.update({"SERVER_RESPONDER_DATA_DIR": str(tmp_path / "caller"), **s3.env()})
    pretty = cli("cat", "cat/run", "--store", STORE, env=env)
    assert pretty.returncode == 0, pretty.stderr
    assert json.loads(pretty.stdout)["job_id"] == job["id"]
    assert pretty.stdout.startswith(b"{\n  ")
    raw = cli("cat", "cat/run", "--store", STORE, "--raw", env=env)
    assert raw.stdout == b"made artifacts\n"
    artifact = cli("cat", "cat/run_artifact_files_blob.bin", "--store", STORE, env=env)
    assert artifact.stdout == bytes(range(256))
    missing = cli("cat", "cat/none", "--store", STORE, env=env)
    assert missing.returncode == 1 and b"no result at cat/none" in missing.stderr
    bad = cli("cat", "../etc/passwd", "--store", STORE, env=env)
    assert bad.returncode == 2 and b"key" in bad.stderr


def test_prune_deletes_old_results_from_s3(s3, tmp_path):
    client = s3.client()
    for key in ("results/old-1", "results/old-2", "examples/old"):
        client.put_object(Bucket=BUCKET, Key=PREFIX + key, Body=b"{}", ContentType="application/json")
    client.put_object(Bucket=BUCKET, Key="outside-the-prefix", Body=b"{}")
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVER_RESPONDER_")}
    env.update({"SERVER_RESPONDER_DATA_DIR": str(tmp_path / "caller"), **s3.env()})
    # Ages are the store's own modification times; wait until it reports the old objects past the cut-off.
    old = [PREFIX + key for key in ("results/old-1", "results/old-2", "examples/old")]
    wait_until(lambda: min(age_seconds(client, key) for key in old) > 3.5, "the old objects are older than 3 s")

    dry = cli("prune", "--store", STORE, "--older-than", "3s", "--prefix", "results/", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.decode().split() == ["results/old-1", "results/old-2"]
    assert len(s3.objects()) == 3

    # S3 sets the modification time itself: the new object is seconds younger than the old ones.
    client.put_object(Bucket=BUCKET, Key=PREFIX + "results/new", Body=b"{}")
    done = cli("prune", "--store", STORE, "--older-than", "3s", "--prefix", "results/", env=env)
    assert done.returncode == 0, done.stderr
    assert set(s3.objects()) == {"examples/old", "results/new"}
    assert client.head_object(Bucket=BUCKET, Key="outside-the-prefix")


def test_prune_on_a_local_store(tmp_path):
    store = LocalResultStore(tmp_path / "results")
    for key in ("results/a", "results/b", "keep/c"):
        store.put(key, b"{}", "application/json")
    eleven_days_ago = time.time() - 11 * 86400
    for key in ("results/a", "keep/c"):
        os.utime(tmp_path / "results" / f"{key}@data", (eleven_days_ago, eleven_days_ago))
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVER_RESPONDER_")}
    env["SERVER_RESPONDER_DATA_DIR"] = str(tmp_path / "data")
    done = cli("prune", "--store", str(tmp_path / "results"), "--older-than", "10d", "--prefix", "results/",
               env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"results/a\n"
    assert sorted(info.key for info in store.list()) == ["keep/c", "results/b"]
    bad = cli("prune", "--store", str(tmp_path / "results"), "--older-than", "ten days", env=env)
    assert bad.returncode == 2


def test_presign_refuses_what_it_cannot_sign(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("SERVER_RESPONDER_")}
    env["SERVER_RESPONDER_DATA_DIR"] = str(tmp_path / "data")
    for args in (("--store", str(tmp_path), "--location", "x"),
                 ("--store", STORE, "--location", "../x"),
                 ("--store", STORE, "--location", "x", "--artifact", "/abs"),
                 ("--store", STORE, "--location", "x", "--expires-in", "0")):
        refused = cli("presign", *args, env=env)
        assert refused.returncode == 2, args


def test_every_results_command_has_help(tmp_path):
    for command in ("cat", "prune", "presign"):
        assert cli(command, "--help", env=dict(os.environ)).returncode == 0


HOSTILE_ARTIFACTS_SCRIPT = """\
ln -s {data_dir}/api_token artifacts/token
ln -s {data_dir} artifacts/data
mkfifo artifacts/pipe
truncate -s 2G artifacts/sparse.bin
head -c {limit} /dev/urandom > artifacts/at-limit.bin
head -c $(({limit} + 1)) /dev/urandom > artifacts/over.bin
sha256sum artifacts/at-limit.bin
"""


def test_only_regular_files_within_the_limits_reach_s3(s3_responder, s3):
    limit = 1_000_000
    responder = s3_responder(artifact_file_limit_bytes=limit)
    job = responder.submit(HOSTILE_ARTIFACTS_SCRIPT.format(data_dir=responder.data_dir, limit=limit),
                           language="bash", results_location="hostile/1")
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    wait_until(lambda: pending_uploads(responder) == 0, "uploads delivered")
    objects = s3.objects()
    assert set(objects) == {"hostile/1", "hostile/1_artifact_files", "hostile/1_artifact_files_at-limit.bin"}
    stored = objects["hostile/1_artifact_files_at-limit.bin"][0]
    assert len(stored) == limit and hashlib.sha256(stored).hexdigest() == job["stdout"].split()[0]
    document = json.loads(objects["hostile/1"][0])
    assert {entry["name"]: entry["reason"] for entry in document["skipped_artifacts"]} == {
        "token": "symbolic link", "data": "symbolic link", "pipe": "not a regular file",
        "sparse.bin": f"over the per-file limit ({2 * 1024 ** 3} bytes > {limit})",
        "over.bin": f"over the per-file limit ({limit + 1} bytes > {limit})"}
    assert responder.token.encode() not in b"".join(body for body, _ in objects.values())


def test_a_30_mb_artifact_is_streamed_through_the_spool_to_s3(s3_responder, s3):
    size = 30 * 1024 * 1024
    responder = s3_responder(artifact_file_limit_bytes=40 * 1024 * 1024)

    def run_and_deliver():
        job = responder.submit(f"head -c {size} /dev/urandom > artifacts/large.bin && sha256sum artifacts/large.bin",
                               language="bash", results_location="large/s3")
        wait_until(lambda: pending_uploads(responder) == 0, "uploads delivered")
        return job

    growth, job = responder.peak_memory_growth(run_and_deliver)
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert growth < size // 2, f"the service's peak RSS grew by {growth} bytes for a {size}-byte artifact"
    stored = s3.client().get_object(Bucket=BUCKET, Key=PREFIX + "large/s3_artifact_files_large.bin")["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == job["stdout"].split()[0]


def test_presigned_urls_get_streamed_artifacts_and_never_links(make_responder, s3):
    size = 30 * 1024 * 1024
    box = make_responder(artifact_file_limit_bytes=40 * 1024 * 1024)
    caller_env = {**box.env, **s3.env()}
    signed = cli("presign", "--store", STORE, "--location", "presigned/big", "--artifact", "large.bin",
                 "--artifact", "token", "--expires-in", "600", env=caller_env)
    assert signed.returncode == 0, signed.stderr
    script = (f"head -c {size} /dev/urandom > artifacts/large.bin && sha256sum artifacts/large.bin\n"
              f"ln -s {box.data_dir}/api_token artifacts/token\n")

    def run_and_deliver():
        job = box.submit(script, language="bash", **json.loads(signed.stdout))
        wait_until(lambda: pending_uploads(box) == 0, "uploads delivered")
        return job

    growth, job = box.peak_memory_growth(run_and_deliver)
    assert job["status"] == "succeeded", (job["stderr"], job["error"])
    assert job["skipped_artifacts"] == [{"name": "token", "reason": "symbolic link"}]
    assert growth < size // 4, f"the service's peak RSS grew by {growth} bytes for a {size}-byte artifact"
    objects = s3.objects()
    assert set(objects) == {"presigned/big", "presigned/big_artifact_files_large.bin"}
    assert hashlib.sha256(objects["presigned/big_artifact_files_large.bin"][0]).hexdigest() == \
        job["stdout"].split()[0]
