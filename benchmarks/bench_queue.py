"""Queue mode's throughput: jobs per second for 1, 2 and 4 responders taking jobs from one SQS queue.

Everything runs on loopback: moto's standalone server stands in for SQS and S3, and each responder is a
`server-responder serve` process with its own data dir, in queue mode on the same queue and bucket. Each
round sends `--jobs` messages (`sh -c 'echo N'` jobs) to a fresh queue once its responders listen, and counts
the time until every message is deleted, that is until every job's result document is in the bucket. On a
2-core machine the curve flattens early: the boxes share the same two cores. Prints figures and exits 0
whatever they are; asserts nothing about speed.

Usage (from the repository, after `./dev test` has made .venv):
    .venv/bin/python benchmarks/bench_queue.py [--jobs 200] [--workers 1] [--boxes 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.moto_server import MotoServer  # noqa: E402  (the repository's own moto helper)

BUCKET = "bench-results"
LISTENING = re.compile(r"listening on (http://\S+)")


def start_responder(home: Path, queue_url: str, aws_env: dict[str, str], workers: int) -> subprocess.Popen:
    env = {**aws_env,
           "SERVER_RESPONDER_DATA_DIR": str(home / "data"), "SERVER_RESPONDER_LOG_DIR": str(home / "logs"),
           "SERVER_RESPONDER_STORE": f"s3://{BUCKET}/{home.name}", "SERVER_RESPONDER_QUEUE_URL": queue_url,
           "SERVER_RESPONDER_WORKERS": str(workers), "SERVER_RESPONDER_QUEUE_WAIT_SECONDS": "1",
           "SERVER_RESPONDER_API_KEY": "benchmark-token"}
    process = subprocess.Popen([sys.executable, "-m", "server_responder", "serve", "--port", "0"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:
        if LISTENING.search(line):
            return process
    raise RuntimeError(f"responder in {home} did not start")


def queue_empty(sqs, queue_url: str) -> bool:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return attributes["ApproximateNumberOfMessages"] == attributes["ApproximateNumberOfMessagesNotVisible"] == "0"


def one_round(moto: MotoServer, scratch: Path, boxes: int, jobs: int, workers: int) -> float:
    """Jobs per second with `boxes` responders on one fresh queue."""
    sqs = moto.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"bench-{boxes}")["QueueUrl"]
    aws_env = moto.environment(scratch)
    processes = [start_responder(scratch / f"round-{boxes}-box-{n}", queue_url, aws_env, workers)
                 for n in range(boxes)]
    try:
        started = time.monotonic()
        for first in range(0, jobs, 10):
            entries = [{"Id": str(n), "MessageBody": json.dumps({"script": f"echo {first + n}", "language": "sh"})}
                       for n in range(min(10, jobs - first))]
            sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        while not queue_empty(sqs, queue_url):
            time.sleep(0.05)
        return jobs / (time.monotonic() - started)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="messages per round (default 200)")
    parser.add_argument("--workers", type=int, default=1,
                        help="workers of each responder (default 1: the curve shows boxes)")
    parser.add_argument("--boxes", type=int, nargs="+", default=[1, 2, 4], help="responders per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as scratch_name:
        scratch = Path(scratch_name)
        moto = MotoServer(scratch / "moto.log").start()
        try:
            moto.client("s3").create_bucket(Bucket=BUCKET)
            print(f"{args.jobs} jobs a round, {args.workers} workers a responder, {os.cpu_count()} CPUs")
            print(f"{'responders':>10}  {'jobs/s':>8}  {'per responder':>13}")
            for boxes in args.boxes:
                rate = one_round(moto, scratch, boxes, args.jobs, args.workers)
                print(f"{boxes:>10}  {rate:>8.1f}  {rate / boxes:>13.1f}", flush=True)
        finally:
            moto.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
