"""A job's final state appears all at once: polled fast from several threads while many short jobs run,
no observation shows a final status without its finish time and its stored result."""

import threading
import time
from pathlib import Path

from git_projects import GitProject

FINAL = {"succeeded", "failed", "timed_out", "cancelled", "interrupted"}


def observe(responder, jobs: dict[str, str], problems: list[str], deadline: float) -> None:
    """Poll every job until each was seen final once, recording every inconsistent observation."""
    unfinished = set(jobs)
    while unfinished and time.monotonic() < deadline:
        for job_id in sorted(unfinished):
            answer = responder.request("GET", f"/jobs/{job_id}", token=False)
            if answer.status != 200:
                problems.append(f"{job_id} answers {answer.status}: {answer.body!r}")
                continue
            job = answer.json()
            if job["status"] not in FINAL:
                continue
            result = responder.request("GET", f"/results/{jobs[job_id]}")
            if not job["finished_at"]:
                problems.append(f"{job_id} is {job['status']} with finished_at null")
            elif result.status != 200:
                problems.append(f"{job_id} is {job['status']} but its result answers {result.status}: {result.body!r}")
            elif result.json()["status"] != job["status"]:
                problems.append(f"{job_id} is {job['status']} but its result says {result.json()['status']}")
            unfinished.discard(job_id)
    if unfinished:
        problems.append(f"{len(unfinished)} jobs never seen finished")


def test_status_finish_time_and_result_become_visible_together(make_responder, tmp_path: Path):
    project = GitProject(tmp_path)
    project.commit({"README": "x"})
    responder = make_responder(workers=2, repo_base_url=project.base_url)
    jobs: dict[str, str] = {}
    for n in range(20):
        job = responder.submit("print(1)" if n % 4 else "raise SystemExit(3)", wait=0, language="python",
                               results_location=f"seen/script-{n}")
        jobs[job["id"]] = job["results_location"]
    for n in range(10):
        answer = responder.request("POST", "/jobs", body={"type": "command", "project": "acme/widget",
                                                          "command": "cat README", "results_location": f"seen/cmd-{n}"})
        assert answer.status == 202, answer.body
        jobs[answer.json()["id"]] = f"seen/cmd-{n}"
    problems: list[str] = []
    deadline = time.monotonic() + 120
    pollers = [threading.Thread(target=observe, args=(responder, jobs, problems, deadline)) for _ in range(4)]
    for poller in pollers:
        poller.start()
    for poller in pollers:
        poller.join()
    assert problems == []
    statuses = {responder.request("GET", f"/jobs/{job_id}", token=False).json()["status"] for job_id in jobs}
    assert statuses == {"succeeded", "failed"}
