"""Reading a result key: the stored object, else the job that will write it, else nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from server_responder.jobs.record import Job
from server_responder.results.store import ResultStore, StoredObject, StoreUnavailable


@dataclass(frozen=True)
class Lookup:
    """One of: `stored` (the object), `pending` (a queued or running job will write it), or neither."""

    stored: StoredObject | None = None
    pending: Job | None = None


class ResultLookup:
    def __init__(self, store: ResultStore, pending_for: Callable[[str], Job | None]) -> None:
        self.store = store
        self.pending_for = pending_for

    def find(self, key: str) -> Lookup:
        """StoreUnavailable only when the store cannot answer and no job is about to write the key."""
        try:
            stored = self.store.get(key)
        except StoreUnavailable:
            pending = self.pending_for(key)
            if pending is None:
                raise
            return Lookup(pending=pending)
        if stored is not None:
            return Lookup(stored=stored)
        return Lookup(pending=self.pending_for(key))
