"""Prove the Vagrantfile and the Packer template on real virtual machines (QEMU, software emulation).

The steps run in order, each timed: a bootable Debian base image from debootstrap (cached), libvirt,
`packer build -only='qemu.*'` producing the libvirt box, `vagrant up` of that box, the host test suite over
Vagrant's SSH config, a job through HTTPS, `vagrant destroy`; then the same for a stock-style base box
provisioned by the Vagrantfile's own ansible provisioner. `close()` stops and removes whatever the proof
started (daemons, domains, networks, volumes, storage pool), by PID or by name, also after a failure.
"""

from __future__ import annotations

import concurrent.futures
import glob
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

PROJECT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("SR_IMAGE_CACHE", "/var/cache/server-responder-images"))
MAKE_BASE_IMAGE = PROJECT / "tests" / "images" / "make-base-image"
LIBVIRT = "qemu:///system"
MACHINE = "server-responder"
DOMAIN_PREFIX = "sr-vm-"
HTTPS_PORT = 8443
APP_PORT = 8480
CODENAMES = {"13": "trixie", "12": "bookworm"}
STOCK_BOXES = {"13": "debian/trixie64", "12": "debian/bookworm64"}
STEPS = (
    "base image",
    "libvirt",
    "packer build | stock box: vagrant up + ansible",
    "stock box: host tests",
    "stock box: job over https",
    "stock box: vagrant destroy",
    "packer box: vagrant up",
    "packer box: host tests",
    "packer box: job over https",
    "packer box: vagrant destroy",
)
JOB = {"type": "script", "language": "python", "script": "print(5+4)"}
# A box's own Vagrantfile is loaded before the project's; Vagrant needs the block, even an empty one.
BOX_VAGRANTFILE = 'Vagrant.configure("2") do |config|\nend\n'


class StepFailed(Exception):
    """A step of the proof did not succeed; the message says why and where its log is."""


@dataclass(frozen=True)
class StepTime:
    name: str
    seconds: float
    ok: bool


def vagrant_insecure_key() -> Path:
    keys = sorted(glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant"))
    if not keys:
        raise StepFailed("Vagrant's insecure private key not found: install Debian's vagrant package")
    return Path(keys[-1])


def junit_passed(report: Path) -> int:
    """How many tests a pytest JUnit XML report counts as passed."""
    root = ElementTree.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    not_passed = sum(int(suite.get(name, 0)) for name in ("failures", "errors", "skipped"))
    return int(suite.get("tests", 0)) - not_passed


def multiplexed(ssh_config: str, control_dir: Path) -> str:
    """An ssh config whose hosts share one master connection each, its socket in control_dir."""
    shared = (f"  ControlMaster auto\n  ControlPath {control_dir}/%C\n  ControlPersist 600\n"
              "  ServerAliveInterval 15\n")  # fmt: skip
    return re.sub(r"^(Host .+\n)", lambda host: host.group(1) + shared, ssh_config, flags=re.MULTILINE)


def app_version() -> str:
    with open(PROJECT / "pyproject.toml", "rb") as pyproject:
        return tomllib.load(pyproject)["project"]["version"]


class ImageProof:
    """The VM proof, one step at a time; use as a context manager so `close()` always runs."""

    def __init__(
        self,
        workdir: Path,
        *,
        debian: str = "13",
        playbook: str = "ansible/site.yml",
        infra_suite: str = "tests/infra",
        api_token_path: str = "/var/lib/server-responder/api_token",
        report: Callable[[str], None] = print,
    ) -> None:
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.debian = debian
        self.playbook = playbook
        self.infra_suite = infra_suite
        self.api_token_path = api_token_path
        self.report = report
        self.times: list[StepTime] = []
        self.host_tests_passed: dict[str, int] = {}
        self.failed: str | None = None
        self._main_log = self.logs / "proof.log"
        self._local = threading.local()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._daemons: list[subprocess.Popen[bytes]] = []
        self._before: dict[str, set[str]] = {}
        self._pool_defined = False
        self._pool_started = False
        self._base_image = CACHE / "unset"
        self._stock_box = CACHE / "unset"
        self._packer_box = workdir / "unset"
        self._vagrant_state: dict[str, str] = {}
        venv_bin = str(Path(sys.executable).parent)
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{venv_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
            VAGRANT_HOME=str(workdir / "vagrant-home"),
            VAGRANT_CHECKPOINT_DISABLE="1",
            VAGRANT_DEFAULT_PROVIDER="libvirt",
            CHECKPOINT_DISABLE="1",
            PACKER_CACHE_DIR=str(workdir / "packer-cache"),
            PYTHONUNBUFFERED="1",
            SR_DEBIAN=debian,
            SR_SOFTWARE_VIRT="1",
            SR_HTTPS_PORT=str(HTTPS_PORT),
            SR_APP_PORT=str(APP_PORT),
        )
        # The two provisioning runs are the slow part; each keeps one core busy, so they run side by side.
        actions: list[Callable[[], None]] = [
            self.build_base_image,
            self.start_libvirt,
            lambda: self._side_by_side(
                {"packer build": self.packer_build, "stock box: vagrant up + ansible": lambda: self.vagrant_up("stock")}
            ),
            lambda: self.host_tests("stock"),
            lambda: self.job_over_https("stock"),
            lambda: self.vagrant_destroy("stock"),
            lambda: self.vagrant_up("packer"),
            lambda: self.host_tests("packer"),
            lambda: self.job_over_https("packer"),
            lambda: self.vagrant_destroy("packer"),
        ]
        self.steps = dict(zip(STEPS, actions, strict=True))

    def __enter__(self) -> ImageProof:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, name: str) -> StepTime:
        """Run one step and time it; raise StepFailed if it, or an earlier step, failed."""
        if self.failed is not None:
            raise StepFailed(f"not run: step {self.failed!r} failed")
        self._note(f"--- step {name}")
        started = time.monotonic()
        try:
            self.steps[name]()
        except BaseException:
            self.failed = name
            raise
        finally:
            took = StepTime(name, time.monotonic() - started, self.failed != name)
            self.times.append(took)
            self.report(f"[images] {name}: {'ok' if took.ok else 'FAILED'} in {took.seconds:.1f} s")
        return took

    def run_all(self, skip: Sequence[str] = ()) -> None:
        for name in self.steps:
            if name not in skip:
                self.run(name)

    # Steps.

    def build_base_image(self) -> None:
        digest = hashlib.sha256(MAKE_BASE_IMAGE.read_bytes()).hexdigest()[:12]
        stem = f"debian-{self.debian}-base-{digest}"
        self._base_image = CACHE / f"{stem}.qcow2"
        box_digest = hashlib.sha256(BOX_VAGRANTFILE.encode()).hexdigest()[:8]
        self._stock_box = CACHE / f"{stem}-libvirt-{box_digest}.box"
        CACHE.mkdir(parents=True, exist_ok=True)
        for stale in CACHE.glob(f"debian-{self.debian}-base-*"):
            if stale not in (self._base_image, self._stock_box):
                stale.unlink()
        if self._base_image.exists():
            self.report(f"[images] reusing {self._base_image}")
        else:
            self._sh(MAKE_BASE_IMAGE, CODENAMES[self.debian], self._base_image, timeout=1500)
        if not self._stock_box.exists():
            self._write_libvirt_box(self._base_image, self._stock_box)

    def start_libvirt(self) -> None:
        if not self._virsh_answers():
            for daemon in ("virtlogd", "libvirtd"):
                log = open(self.logs / f"{daemon}.log", "ab")
                self._daemons.append(
                    subprocess.Popen([daemon], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                )
                self._note(f"started {daemon} pid {self._daemons[-1].pid}")
                if daemon == "virtlogd":
                    self._wait_for(lambda: Path("/run/libvirt/virtlogd-sock").exists(), 30, "virtlogd socket")
            self._wait_for(self._virsh_answers, 60, "libvirtd")
        for stale in self._names("list", "--all"):
            if stale.startswith(DOMAIN_PREFIX):
                self._remove_domain(stale)
        self._before = {
            "networks": self._names("net-list", "--all"),
            "pools": self._names("pool-list", "--all"),
        }
        if "default" not in self._before["pools"]:
            self._virsh("pool-define-as", "default", "dir", "--target", "/var/lib/libvirt/images")
            self._pool_defined = True
            self._virsh("pool-build", "default")
        if "default" not in self._names("pool-list"):
            self._virsh("pool-start", "default")
            self._pool_started = True
        self._before["volumes"] = self._volumes()

    def packer_build(self) -> None:
        output = self.workdir / "packer"
        version = app_version()
        self._sh(
            "packer", "build", "-color=false", "-only=qemu.*",
            "-var", f"app_version={version}",
            "-var", f"debian_release={self.debian}",
            "-var", f"qemu_base_image={self._base_image}",
            "-var", "qemu_accelerator=tcg",
            "-var", f"qemu_ssh_private_key_file={self._private_key()}",
            "-var", f"ansible_playbook={self.playbook}",
            "-var", f"testinfra_python={sys.executable}",
            "-var", f"testinfra_suite={self.infra_suite}",
            "-var", f"output_directory={output}",
            "packer/packer-1.6",
            timeout=2700,
        )  # fmt: skip
        self._packer_box = output / f"server-responder-{version}-debian-{self.debian}-libvirt.box"
        if not self._packer_box.is_file():
            raise StepFailed(f"packer build made no box at {self._packer_box}")
        manifest = json.loads((output / "manifest.json").read_text())
        self._note(f"manifest: {json.dumps(manifest['builds'])}")

    def vagrant_up(self, which: str) -> None:
        env = self._vagrant_env(which)
        if which == "stock":
            self._sh("vagrant", "box", "add", "--force", "--name", STOCK_BOXES[self.debian], self._stock_box,
                     env=env, timeout=600)  # fmt: skip
        self._vagrant_state[which] = "up"
        self._sh("vagrant", "up", "--provider=libvirt", MACHINE, env=env, timeout=2400)

    def host_tests(self, which: str) -> None:
        ssh_config = self.workdir / f"ssh-config-{which}"
        answer = self._sh("vagrant", "ssh-config", MACHINE, env=self._vagrant_env(which), timeout=300, capture=True)
        # One SSH connection carries every check: a handshake under software emulation costs seconds.
        mux_dir = Path(tempfile.mkdtemp(prefix="sr-ssh-"))
        ssh_config.write_text(multiplexed(answer, mux_dir))
        junit = self.workdir / f"host-tests-{which}.xml"
        try:
            self._sh(
                sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--confcutdir={self.infra_suite}",
                self.infra_suite, "--sudo", f"--hosts=ssh://{MACHINE}", f"--ssh-config={ssh_config}",
                f"--junitxml={junit}", timeout=1200,
            )  # fmt: skip
        finally:
            self._sh("ssh", "-F", ssh_config, "-O", "exit", MACHINE, timeout=60, check=False)
            shutil.rmtree(mux_dir, ignore_errors=True)
        self.host_tests_passed[which] = junit_passed(junit)

    def job_over_https(self, which: str) -> None:
        token = self._sh(
            "vagrant", "ssh", MACHINE, "-c", f"sudo cat {self.api_token_path}",
            env=self._vagrant_env(which), timeout=300, capture=True,
        ).strip()  # fmt: skip
        answer = self._sh(
            "curl", "-sSk", "--max-time", "180", "-H", f"Authorization: Bearer {token}",
            "-H", "Content-Type: application/json", "--data", json.dumps(JOB),
            f"https://127.0.0.1:{HTTPS_PORT}/jobs?wait=120",
            timeout=240, capture=True,
        )  # fmt: skip
        job = json.loads(answer)
        self._note(f"job: {answer}")
        if job.get("status") != "succeeded" or job.get("stdout") != "9\n":
            raise StepFailed(f"the job through HTTPS did not print 9: {answer}")

    def vagrant_destroy(self, which: str) -> None:
        self._sh("vagrant", "destroy", "-f", MACHINE, env=self._vagrant_env(which), timeout=600)
        self._vagrant_state[which] = "destroyed"
        self._remove_new_volumes()

    # Clean-up.

    def close(self) -> None:
        """Stop and remove what the proof started; every part is tried even if another fails."""
        for process in list(self._running):
            self._quietly(lambda p=process: self._end_group(p))
        for which, state in self._vagrant_state.items():
            if state == "up":
                self._quietly(lambda w=which: self._sh("vagrant", "destroy", "-f", MACHINE,
                                                       env=self._vagrant_env(w), timeout=600))  # fmt: skip
            self._quietly(lambda w=which: self._stop_leftover_forwards(w))
        if self._before:
            for domain in self._names("list", "--all"):
                if domain.startswith(DOMAIN_PREFIX):
                    self._quietly(lambda d=domain: self._remove_domain(d))
            for network in self._names("net-list", "--all") - self._before["networks"]:
                self._quietly(lambda n=network: self._virsh("net-destroy", n, check=False))
                self._quietly(lambda n=network: self._virsh("net-undefine", n))
            self._quietly(self._remove_new_volumes)
            if self._pool_started:
                self._quietly(lambda: self._virsh("pool-destroy", "default"))
            if self._pool_defined:
                self._quietly(lambda: self._virsh("pool-undefine", "default"))
        for daemon in reversed(self._daemons):
            self._quietly(lambda p=daemon: self._stop(p))
        self._daemons.clear()
        for bulky in ("packer", "packer-cache", "vagrant-home"):
            shutil.rmtree(self.workdir / bulky, ignore_errors=True)

    # Helpers.

    def _side_by_side(self, actions: dict[str, Callable[[], None]]) -> None:
        def timed(name: str, action: Callable[[], None]) -> str | None:
            self._local.log = self.logs / (name.split(":")[0].replace(" ", "-") + ".log")
            started = time.monotonic()
            failure = None
            try:
                action()
            except Exception as error:
                failure = f"{name}: {error}"
            self.report(f"[images]   {name}: {'FAILED' if failure else 'ok'} in {time.monotonic() - started:.1f} s")
            return failure

        pool = concurrent.futures.ThreadPoolExecutor(len(actions))
        try:
            failures = [f for f in pool.map(timed, actions, actions.values()) if f]
        except BaseException:
            for process in list(self._running):
                self._end_group(process)
            raise
        finally:
            pool.shutdown(wait=True)
        if failures:
            raise StepFailed("\n".join(failures))

    def _vagrant_env(self, which: str) -> dict[str, str]:
        env = dict(self.env)
        if which == "packer":
            env["SR_BOX"] = str(self._packer_box)
        env["VAGRANT_DOTFILE_PATH"] = str(self.workdir / f"vagrant-{which}")
        env["VAGRANT_CWD"] = str(PROJECT)
        return env

    def _private_key(self) -> Path:
        # ssh refuses a key that others can read, as Debian ships Vagrant's insecure one.
        key = self.workdir / "insecure_private_key"
        shutil.copyfile(vagrant_insecure_key(), key)
        key.chmod(0o600)
        return key

    def _write_libvirt_box(self, image: Path, box: Path) -> None:
        info = json.loads(self._sh("qemu-img", "info", "--output=json", image, timeout=60, capture=True))
        metadata = {"provider": "libvirt", "format": "qcow2", "virtual_size": -(-info["virtual-size"] // 2**30)}
        partial = box.with_name(box.name + ".partial")
        with tarfile.open(partial, "w") as archive:
            for name, text in (("metadata.json", json.dumps(metadata)), ("Vagrantfile", BOX_VAGRANTFILE)):
                member = tarfile.TarInfo(name)
                member.size = len(text.encode())
                archive.addfile(member, io.BytesIO(text.encode()))
            archive.add(image, arcname="box.img")
        partial.rename(box)

    def _virsh_answers(self) -> bool:
        try:
            probe = subprocess.run(["virsh", "-c", LIBVIRT, "version"], capture_output=True, timeout=20)
        except subprocess.TimeoutExpired:
            return False
        return probe.returncode == 0

    def _virsh(self, *args: str, check: bool = True) -> str:
        return self._sh("virsh", "-c", LIBVIRT, *args, timeout=120, capture=True, check=check)

    def _names(self, *listing: str) -> set[str]:
        return {line.strip() for line in self._virsh(*listing, "--name").splitlines() if line.strip()}

    def _volumes(self) -> set[str]:
        table = self._virsh("vol-list", "default").splitlines()[2:]
        return {line.split()[0] for line in table if line.strip()}

    def _remove_domain(self, domain: str) -> None:
        self._virsh("destroy", domain, check=False)
        self._virsh("undefine", domain, "--remove-all-storage", "--nvram", check=False)

    def _remove_new_volumes(self) -> None:
        if "volumes" in self._before and "default" in self._names("pool-list"):
            for volume in self._volumes() - self._before["volumes"]:
                self._virsh("vol-delete", volume, "--pool", "default", check=False)

    def _stop_leftover_forwards(self, which: str) -> None:
        # vagrant-libvirt forwards ports with ssh processes whose PIDs it records under the dotfile path.
        for pid_file in (self.workdir / f"vagrant-{which}").glob("machines/*/libvirt/*pid*"):
            for word in pid_file.read_text().split():
                if word.isdigit() and b"ssh" in Path(f"/proc/{word}/cmdline").read_bytes():
                    os.kill(int(word), signal.SIGTERM)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)
        self._note(f"stopped pid {process.pid}")

    def _wait_for(self, ready: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ready():
            if time.monotonic() > deadline:
                raise StepFailed(f"{what} not ready after {seconds} s")
            time.sleep(1)

    def _quietly(self, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as error:  # clean-up goes on with the next part
            self._note(f"clean-up: {error}")

    @property
    def _log(self) -> Path:
        return getattr(self._local, "log", self._main_log)

    def _note(self, line: str) -> None:
        with open(self._log, "a") as log:
            log.write(line + "\n")

    def _sh(
        self,
        *argv: object,
        timeout: float,
        env: dict[str, str] | None = None,
        capture: bool = False,
        check: bool = True,
    ) -> str:
        """Run a command from the project root, output logged; its whole process group dies on timeout."""
        words = [str(arg) for arg in argv]
        # The VM's token goes on curl's command line; the log shows the header without it.
        self._note("$ " + " ".join(re.sub(r"^(Authorization: \w+ ).+", r"\1***", word) for word in words))
        with open(self._log, "ab") as log:
            process = subprocess.Popen(
                words,
                cwd=PROJECT,
                env=env or self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
                start_new_session=True,
            )
            self._running.add(process)
            try:
                out, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._end_group(process)
                raise StepFailed(f"{words[0]} timed out after {timeout} s; log: {self._log}") from None
            except BaseException:
                self._end_group(process)
                raise
            finally:
                self._running.discard(process)
        if check and process.returncode != 0:
            raise StepFailed(f"{' '.join(words[:3])} exited {process.returncode}:\n{self._tail()}\nlog: {self._log}")
        return out.decode() if capture else ""

    def _end_group(self, process: subprocess.Popen[bytes]) -> None:
        """End a command and everything it started (its own session): SIGTERM, then SIGKILL."""
        for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.communicate(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue

    def _tail(self, lines: int = 40) -> str:
        return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debian", choices=sorted(CODENAMES), default="13")
    parser.add_argument("--playbook", default="ansible/site.yml", help="relative to the project root")
    parser.add_argument("--infra-suite", default="tests/infra", help="relative to the project root")
    parser.add_argument("--skip", action="append", default=[], choices=STEPS, metavar="STEP", help="leave a step out")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the VM proof needs root (debootstrap, libvirt)", file=sys.stderr)
        return 2
    # A stop request unwinds through close(), so nothing the proof started outlives it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    workdir = Path(tempfile.mkdtemp(prefix="sr-image-proof-", dir="/var/tmp"))
    started = time.monotonic()
    with ImageProof(workdir, debian=args.debian, playbook=args.playbook, infra_suite=args.infra_suite) as proof:
        try:
            proof.run_all(skip=args.skip)
        except StepFailed as failure:
            print(f"[images] FAILED: {failure}", file=sys.stderr)
    print(f"[images] total {time.monotonic() - started:.1f} s; logs in {workdir / 'logs'}")
    return 1 if proof.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
