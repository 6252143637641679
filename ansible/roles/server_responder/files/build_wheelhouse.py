"""Build the wheelhouse of Server Responder and its dependencies on the controller, for one target box.

usage: build_wheelhouse.py SOURCE_DIR WHEELHOUSE_DIR PYTHON_VERSION MACHINE

The app's wheel is built from a copy of the source tree (so stale build/ output never reaches it) with
SOURCE_DATE_EPOCH fixed, so unchanged sources give a byte-identical wheel. Its dependencies are downloaded
as wheels for the target's CPython (e.g. 3.13) and machine (e.g. x86_64, glibc of Debian 12 or later), since
some of them are compiled. MANIFEST lists each wheel's SHA-256: the box reinstalls when it changes.
Everything is also packed into WHEELHOUSE_DIR.tar (reproducibly), which is what travels to the box.
While the source tree is unchanged the wheelhouse is reused; delete it to fetch newer dependencies.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "venv", "build", "dist", "wheelhouse", "*.egg-info", "__pycache__", ".pytest_cache",
    ".cache", "data", "logs", "node_modules",
)
# Debian 12 has glibc 2.36, so any manylinux wheel up to 2_36 runs on Debian 12 and 13.
GLIBC_MINORS = range(17, 37)
EPOCH = 315532800


def source_digest(source: Path, python_version: str, machine: str) -> str:
    """What the wheelhouse is built from: every file of the tree that the build copies, and the target."""
    digest = hashlib.sha256(f"{python_version} {machine}\n".encode())
    digest.update(Path(__file__).read_bytes())
    for directory, dirs, files in os.walk(source):
        ignored = IGNORED(directory, dirs + files)
        dirs[:] = sorted(name for name in dirs if name not in ignored)
        for name in sorted(name for name in files if name not in ignored):
            path = Path(directory, name)
            digest.update(f"{path.relative_to(source)}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def platforms(machine: str) -> list[str]:
    tags = [f"manylinux_2_{minor}_{machine}" for minor in GLIBC_MINORS]
    return tags + [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]


def pip(*args: str) -> None:
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH), PIP_DISABLE_PIP_VERSION_CHECK="1")
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
        if stale.name not in names and stale.name not in ("MANIFEST", ".source-digest"):
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
    pack(wheelhouse, [wheel.name for wheel in wheels] + ["MANIFEST"])


def pack(wheelhouse: Path, names: list[str]) -> None:
    """WHEELHOUSE.tar with fixed owners, modes and times: the same wheels give the same bytes."""
    partial = wheelhouse.with_name(wheelhouse.name + ".tar.partial")
    with tarfile.open(partial, "w", format=tarfile.GNU_FORMAT) as archive:
        for name in sorted(names):
            info = archive.gettarinfo(wheelhouse / name, arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mode = 0o644
            info.mtime = EPOCH
            with (wheelhouse / name).open("rb") as handle:
                archive.addfile(info, handle)
    target = wheelhouse.with_name(wheelhouse.name + ".tar")
    if target.is_file() and target.read_bytes() == partial.read_bytes():
        partial.unlink()
    else:
        partial.replace(target)


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    source, wheelhouse = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    if not (source / "pyproject.toml").is_file():
        print(f"{source} has no pyproject.toml", file=sys.stderr)
        return 2
    digest = source_digest(source, argv[2], argv[3])
    stamp = wheelhouse / ".source-digest"
    packed = wheelhouse.with_name(wheelhouse.name + ".tar")
    if stamp.is_file() and stamp.read_text() == digest and packed.is_file():
        print(f"{packed} is up to date with {source}")
        return 0
    with tempfile.TemporaryDirectory(prefix="server-responder-wheels-") as scratch:
        wheels = build(source, Path(scratch), argv[2], argv[3])
        publish(wheels, wheelhouse)
    stamp.write_text(digest)
    print(f"{len(wheels)} wheels for CPython {argv[2]} on {argv[3]} in {packed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
