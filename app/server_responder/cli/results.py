"""Commands for stored results: `cat`, `prune` and `presign`."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from server_responder.cli.common import Command, Listing, config_option, load_settings
from server_responder.results.keys import InvalidKey, artifact_key, is_artifact_key, validate_key
from server_responder.results.location import open_store
from server_responder.results.store import JSON_TYPE, ResultStore
from server_responder.settings import Settings

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PREFIX = re.compile(r"[A-Za-z0-9._/-]*")
# The longest a SigV4 presigned URL can be valid.
MAX_PRESIGN_SECONDS = 7 * 86400


def parse_age(text: str) -> float:
    """`10d`, `12h`, `30m`, `90s`, `2w` as seconds."""
    match = _AGE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 10d, 12h, 30m, 90s or 2w")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="URL",
                        help="s3://bucket/prefix (an S3 service other than AWS needs s3_endpoint_url or "
                             "AWS_ENDPOINT_URL), a file:// URL or a directory (default: the store setting)")


def _cat_options(parser: argparse.ArgumentParser) -> None:
    config_option(parser)
    parser.add_argument("key", help="a result key, e.g. results/<job id>, or an artifact's key")
    _store_option(parser)
    parser.add_argument("--raw", action="store_true",
                        help="print only a result document's output (its results field), as the job wrote it")


def cat(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    try:
        key = validate_key(args.key, "key")
    except InvalidKey as error:
        print(f"server-responder cat: {error}", file=sys.stderr)
        return 2
    stored = _reading_store(settings, args.store).get(key)
    if stored is None:
        print(f"server-responder cat: no result at {key}", file=sys.stderr)
        return 1
    # An artifact is printed as the job left it, JSON or not; the service's own documents are pretty-printed.
    pretty = stored.content_type.startswith(JSON_TYPE) and not is_artifact_key(key)
    document = _json_document(stored.body) if pretty else None
    if document is None:
        sys.stdout.buffer.write(stored.body)
    elif args.raw and isinstance(document, dict) and isinstance(document.get("results"), str):
        sys.stdout.write(document["results"])
    elif args.raw:
        sys.stdout.buffer.write(stored.body)
    else:
        print(json.dumps(document, indent=2, sort_keys=True))
    return 0


def _reading_store(settings: Settings, location: str | None) -> ResultStore:
    """The store to read; on the box itself, pending uploads in its spool are read first."""
    from server_responder.results.location import spool_directory
    from server_responder.results.upload_spool import SpooledStore, UploadSpool

    location = location or settings.store
    store = open_store(location, settings)
    if location == settings.store and location.startswith("s3://") and spool_directory(settings).is_dir():
        return SpooledStore(store, UploadSpool(spool_directory(settings), store))
    return store


def _json_document(body: bytes) -> object | None:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _prune_options(parser: argparse.ArgumentParser) -> None:
    config_option(parser)
    parser.add_argument("--older-than", required=True, type=parse_age, metavar="AGE",
                        help="delete objects last written longer ago than this: 10d, 12h, 30m, 90s, 2w")
    parser.add_argument("--prefix", default="", help="only keys starting with this, e.g. results/")
    _store_option(parser)
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")


def prune(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not _PREFIX.fullmatch(args.prefix) or ".." in args.prefix.split("/"):
        print("server-responder prune: --prefix may contain only letters, digits and . _ / -", file=sys.stderr)
        return 2
    store = open_store(args.store or settings.store, settings)
    cutoff = time.time() - args.older_than
    old = [info.key for info in store.list(args.prefix) if info.modified < cutoff]
    listing = Listing()
    for key in old:
        if not args.dry_run:
            store.delete(key)
        listing.line(key)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"server-responder prune: {verb} {len(old)} objects", file=sys.stderr)
    return 0


def _presign_options(parser: argparse.ArgumentParser) -> None:
    config_option(parser)
    parser.add_argument("--store", metavar="URL", help="s3://bucket/prefix (default: the store setting)")
    parser.add_argument("--location", required=True, help="the job's results_location")
    parser.add_argument("--artifact", action="append", default=[], metavar="NAME",
                        help="an artifact the job will leave in artifacts/; repeat for more")
    parser.add_argument("--expires-in", type=int, default=3600, metavar="SECONDS",
                        help=f"how long the URLs are valid (default 3600, at most {MAX_PRESIGN_SECONDS})")


def presign(args: argparse.Namespace) -> int:
    from server_responder.results.s3 import S3ResultStore

    settings = load_settings(args)
    location = args.store or settings.store
    problem = None
    if not location.startswith("s3://"):
        problem = "--store must be an s3://bucket/prefix URL"
    elif not 1 <= args.expires_in <= MAX_PRESIGN_SECONDS:
        problem = f"--expires-in must be between 1 and {MAX_PRESIGN_SECONDS} seconds"
    else:
        try:
            validate_key(args.location, "--location")
            for name in args.artifact:
                validate_key(name, "--artifact")
        except InvalidKey as error:
            problem = str(error)
    if problem:
        print(f"server-responder presign: {problem}", file=sys.stderr)
        return 2
    store = S3ResultStore.open(location, endpoint_url=settings.s3_endpoint_url)
    upload_urls: dict[str, object] = {"result": store.presign_put(args.location, args.expires_in)}
    if args.artifact:
        upload_urls["artifacts"] = {name: store.presign_put(artifact_key(args.location, name), args.expires_in)
                                    for name in args.artifact}
    print(json.dumps({"results_location": args.location, "upload_urls": upload_urls}, indent=2))
    return 0


COMMANDS = (
    Command("cat", "print a stored result (pretty JSON, or the raw output) or an artifact's bytes", _cat_options,
            cat),
    Command("prune", "delete stored results older than an age", _prune_options, prune),
    Command("presign", "print presigned PUT URLs a job's upload_urls can carry to a box without credentials",
            _presign_options, presign),
)
