"""Results in an S3 bucket below a prefix, with the local store's key layout and documents."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from server_responder.results.keys import validate_key
from server_responder.results.store import ObjectInfo, StoredObject, StoreUnavailable

log = logging.getLogger("server_responder.store")
_MISSING = ("NoSuchKey", "404", "NotFound")
# A streamed object is sent in parts of S3's smallest part size, one at a time: one part is all it holds in memory.
_STREAMED_PART_BYTES = 5 * 1024 * 1024
_STREAMED = TransferConfig(multipart_threshold=_STREAMED_PART_BYTES, multipart_chunksize=_STREAMED_PART_BYTES,
                           max_concurrency=1, use_threads=False)


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str

    @classmethod
    def parse(cls, location: str) -> S3Location:
        """`s3://bucket/some/prefix` -> bucket and `some/prefix/` (keys go below it)."""
        if not location.startswith("s3://"):
            raise ValueError(f"store: {location!r} is not an s3:// URL")
        bucket, _, prefix = location[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError("store: an s3:// URL needs a bucket name")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix, "store prefix")
        return cls(bucket, prefix + "/" if prefix else "")


class S3ResultStore:
    """Objects in S3: `put_object` of a whole document, so readers see the old or the new version.

    Credentials, region and endpoint come from boto3's standard chain (environment, shared config and
    profile, instance metadata); `endpoint_url` overrides the endpoint for S3-compatible services.
    """

    def __init__(self, location: S3Location, *, endpoint_url: str = "", public: bool = False,
                 client: Any = None) -> None:
        self.location = location
        self.public = public
        self.client = client or boto3.client("s3", endpoint_url=endpoint_url or None, config=Config(
            signature_version="s3v4",
            # A few quick retries inline; the upload spool retries for as long as it takes.
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ))

    @classmethod
    def open(cls, location: str, *, endpoint_url: str = "", public: bool = False) -> S3ResultStore:
        return cls(S3Location.parse(location), endpoint_url=endpoint_url, public=public)

    @property
    def bucket(self) -> str:
        return self.location.bucket

    def object_key(self, key: str) -> str:
        return self.location.prefix + validate_key(key, "key")

    def put(self, key: str, body: bytes, content_type: str) -> None:
        extra = {"ACL": "public-read"} if self.public else {}
        self._call("put", key, self.client.put_object, Bucket=self.bucket, Key=self.object_key(key), Body=body,
                   ContentType=content_type, **extra)

    def put_file(self, key: str, source: BinaryIO, size: int, content_type: str) -> None:
        """One `PutObject`, or a multipart upload above a part's size: readers see the whole object or none."""
        extra = {"ContentType": content_type, **({"ACL": "public-read"} if self.public else {})}
        try:
            self.client.upload_fileobj(source, self.bucket, self.object_key(key), ExtraArgs=extra, Config=_STREAMED)
        except (ClientError, BotoCoreError, S3UploadFailedError) as error:
            raise _unavailable("put", key, error) from None

    def get(self, key: str) -> StoredObject | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
            body = answer["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in _MISSING:
                return None
            raise _unavailable("get", key, error) from None
        except BotoCoreError as error:
            raise _unavailable("get", key, error) from None
        return StoredObject(key, body, answer.get("ContentType") or "application/octet-stream")

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self.object_key(key))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=self.location.prefix + prefix)
        try:
            for page in pages:
                for entry in page.get("Contents", ()):
                    key = entry["Key"][len(self.location.prefix):]
                    yield ObjectInfo(key, entry["Size"], entry["LastModified"].timestamp())
        except (ClientError, BotoCoreError) as error:
            raise _unavailable("list", prefix, error) from None

    def url(self, key: str) -> str:
        """Public objects by their S3 address; private ones through the responder's `/results` route."""
        if not self.public:
            return f"/results/{key}"
        quoted = urllib.parse.quote(self.object_key(key))
        endpoint = self.client.meta.endpoint_url.rstrip("/")
        if endpoint.endswith(".amazonaws.com"):
            return f"https://{self.bucket}.s3.{self.client.meta.region_name}.amazonaws.com/{quoted}"
        return f"{endpoint}/{self.bucket}/{quoted}"

    def presign_put(self, key: str, expires_in: int) -> str:
        """A URL that lets its holder PUT this one object, and nothing else, until it expires."""
        return self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": self.object_key(key)}, ExpiresIn=expires_in)

    def _call(self, action: str, key: str, operation, **params: Any) -> None:
        try:
            operation(**params)
        except (ClientError, BotoCoreError) as error:
            raise _unavailable(action, key, error) from None


def _unavailable(action: str, key: str, error: Exception) -> StoreUnavailable:
    if isinstance(error, ClientError):
        reason = error.response.get("Error", {}).get("Code") or str(error)
    else:
        reason = f"{type(error).__name__}: {error}"
    return StoreUnavailable(f"S3 {action} of {key!r} failed: {reason}")
