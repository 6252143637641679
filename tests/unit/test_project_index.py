"""The project index document under concurrent jobs: read-modify-write without lost updates."""

import threading
from pathlib import Path

from server_responder.projects.executors import Projects
from server_responder.results.local import LocalResultStore
from server_responder.results.store import get_json
from server_responder.settings import Settings


def test_concurrent_index_updates_lose_no_commit(tmp_path: Path):
    projects = Projects(Settings.from_mapping({"data_dir": str(tmp_path)}))
    store = LocalResultStore(tmp_path / "results")
    shas = [f"{n:040x}" for n in range(200)]
    start = threading.Barrier(20)

    def record(batch):
        start.wait()
        for sha in batch:
            projects.record_in_index(store, "acme/widget", sha, {"after": sha} if int(sha, 16) % 2 else None)

    threads = [threading.Thread(target=record, args=(shas[n::20],)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    index = get_json(store, "acme/widget")
    assert set(index) == set(shas)
    assert index[shas[1]] == {"uri": f"/results/acme/widget/{shas[1]}", "push": {"after": shas[1]}}
    assert index[shas[0]]["push"] is None
