"""Opening the store a `store` setting names, behind the upload spool when it is remote."""

from __future__ import annotations

from pathlib import Path

from server_responder.results.local import LocalResultStore
from server_responder.results.store import ResultStore
from server_responder.results.upload_spool import SpooledStore, UploadSpool
from server_responder.settings import Settings


def open_store(location: str, settings: Settings | None = None) -> ResultStore:
    """The store a `store` setting names: a path, a file:// URL or an s3://bucket/prefix URL."""
    if location.startswith("s3://"):
        from server_responder.results.s3 import S3ResultStore

        return S3ResultStore.open(location, endpoint_url=settings.s3_endpoint_url if settings else "",
                                  public=settings.public_results if settings else False)
    if location.startswith("file://"):
        location = location[len("file://"):]
    return LocalResultStore(Path(location))


def spool_directory(settings: Settings) -> Path:
    return settings.data_dir / "uploads"


def open_result_store(settings: Settings) -> tuple[ResultStore, UploadSpool]:
    """The configured store, behind the upload spool when it is remote, and the spool itself."""
    store = open_store(settings.store, settings)
    remote = None if isinstance(store, LocalResultStore) else store
    spool = UploadSpool(spool_directory(settings), remote, retry_seconds=settings.upload_retry_seconds,
                        retry_max_seconds=settings.upload_retry_max_seconds)
    return (store if remote is None else SpooledStore(remote, spool)), spool
