"""The record of the last green VM proof, and the digest of the files that proof depends on.

The VM proof (image_proof.py) reads a known set of tracked files: what builds the images, what provisions
them, what checks them and what installs and starts the proof itself. A green `./dev test-images` writes
`tests/images/proof.json` with the digest of exactly those files as it saw them; `.ci/run` compares that
digest with the checkout's and runs the proof again only when they differ.

    python3 tests/images/proof_record.py digest   # the checkout's digest of the proof's inputs
    python3 tests/images/proof_record.py check    # exit 0 and one line if the record stands for this tree

Standard library only: `.ci/run` calls it before any virtual environment exists.
"""

from __future__ import annotations

import datetime
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
RECORD = Path("tests/images/proof.json")

# What the VM proof reads, relative to the project root: a directory stands for every file below it.
PROOF_INPUTS = (
    "Vagrantfile",
    "packer",
    "ansible",
    "tests/images",
    "tests/infra",
    "tests/host-packages.txt",
    "pyproject.toml",
    "dev",
)
# Inside those: the record itself, and documentation no step of the proof reads.
NOT_INPUTS = (str(RECORD), "*.md")


def input_files(root: Path) -> list[str]:
    """The proof's input files under root: tracked ones and new ones git does not ignore, sorted."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *PROOF_INPUTS],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    names = {name for name in listed.split("\0") if name}
    return sorted(name for name in names if not _excluded(name) and os.path.lexists(root / name))


def _excluded(name: str) -> bool:
    return any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(Path(name).name, pattern) for pattern in NOT_INPUTS)


def digest(root: Path = PROJECT, names: Iterable[str] | None = None) -> str:
    """sha256 over each input's path, kind (file, executable, link) and content; a link counts as its target."""
    hasher = hashlib.sha256()
    for name in input_files(root) if names is None else names:
        path = root / name
        if path.is_symlink():
            kind, content = b"link", os.readlink(path).encode()
        else:
            kind, content = (b"exec" if path.stat().st_mode & 0o100 else b"file"), path.read_bytes()
        hasher.update(b"%s\0%s\0%d\0" % (name.encode(), kind, len(content)))
        hasher.update(content)
    return hasher.hexdigest()


def read_record(root: Path = PROJECT) -> dict | None:
    try:
        return json.loads((root / RECORD).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_record(
    root: Path,
    proven_digest: str,
    tests_passed: int,
    steps: Sequence[tuple[str, float]],
    host_tests_passed: dict[str, int],
) -> Path:
    record = {
        "digest": proven_digest,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tests_passed": tests_passed,
        "host_tests_passed": host_tests_passed,
        "steps": [{"name": name, "seconds": round(seconds, 1)} for name, seconds in steps],
        "total_seconds": round(sum(seconds for _, seconds in steps), 1),
        "inputs": list(PROOF_INPUTS),
    }
    path = root / RECORD
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)
    return path


def standing_proof(root: Path = PROJECT) -> str | None:
    """The one line naming the proof that stands for this tree, or None if the tree needs a new one."""
    record = read_record(root)
    current = digest(root)
    if record is None or record.get("digest") != current:
        return None
    return (f"VM proof stands for this tree: inputs {current[:16]}, proven {record['date']}, "
            f"{record['tests_passed']} tests passed ({RECORD})")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["digest"]:
        print(digest())
        return 0
    if args == ["check"]:
        line = standing_proof()
        if line is None:
            record = read_record(PROJECT) or {}
            print(f"VM proof needed: inputs {digest()[:16]} differ from the record's "
                  f"{str(record.get('digest', 'none'))[:16]}")  # fmt: skip
            return 1
        print(line)
        return 0
    print("usage: proof_record.py digest | check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
