"""Build the wheelhouse of Server Responder and its dependencies on the controller, for one target box.

usage: build_wheelhouse.py SOURCE_DIR WHEELHOUSE_DIR PYTHON_VERSION MACHINE

The app's wheel is built from a copy of the source tree (so stale build/ output never reaches it) with
SOURCE_DATE_EPOCH fixed, so unchanged sources give a byte-identical wheel. Its dependencies are downloaded
as wheels for the target's CPython (e.g. 3.13) and machine (e.g. x86_64, glibc of Debian 12 or later), since
some of them are compiled. MANIFEST lists each wheel's SHA-256: the box reinstalls when it changes.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "wheelhouse", "*.egg-info", "__pycache__", ".pytest_cache",
    ".cache", "data", "logs", "node_modules",
)
# Debian 12 has glibc 2.36, so any manylinux wheel up to 2_36 runs on Debian 12 and 13.
GLIBC_MINORS = range(17, 37)


def platforms(machine: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{machine}" for minor in GLIBC_MINORS]
    return tags + [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]


def pip(*args: str) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH="315532800", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "pip", *args], check=True, env=env, stdout=subprocess.DEVNULL)


def build(source: Path, scratch: Path, python_version: str, machine: str) -> list[Path]:
    tree = scratch / "source"
    shutil.copytree(source, tree, ignore=IGNORED)
    wheels = scratch / "wheels"
    pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(tree))
    (app,) = wheels.glob("*.whl")
    target = ["--python-version", python_version, "--implementation", "cp", "--only-binary=:all:"]
    for platform in platforms(machine):
        target += ["--platform", platform]
    pip("download", "--quiet", "--dest", str(wheels), *target, str(app))
    return sorted(wheels.glob("*.whl"))


def publish(wheels: list[Path], wheelhouse: Path) -> None:
    """Replace the wheelhouse's content, touching no file whose bytes are unchanged."""
    wheelhouse.mkdir(parents=True, exist_ok=True)
    names = {wheel.name for wheel in wheels}
    for stale in wheelhouse.iterdir():
        if stale.name not in names and stale.name != "MANIFEST":
            stale.unlink()
    lines = []
    for wheel in wheels:
        data = wheel.read_bytes()
        target = wheelhouse / wheel.name
        if not target.is_file() or target.read_bytes() != data:
            shutil.copyfile(wheel, target)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {wheel.name}\n")
    manifest = wheelhouse / "MANIFEST"
    if not manifest.is_file() or manifest.read_text() != "".join(lines):
        manifest.write_text("".join(lines))


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    source, wheelhouse = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    if not (source / "pyproject.toml").is_file():
        print(f"{source} has no pyproject.toml", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="server-responder-wheels-") as scratch:
        wheels = build(source, Path(scratch), argv[2], argv[3])
        publish(wheels, wheelhouse)
    print(f"{len(wheels)} wheels for CPython {argv[2]} on {argv[3]} in {wheelhouse}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
