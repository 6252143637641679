"""Debian test boxes: debootstrap root filesystems booted with systemd-nspawn, each in its own network namespace.

Everything here is test set-up for the machine that runs the tests — a private network, root SSH with a
throw-away key, an apt proxy on the host — and none of it belongs in the roles.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import http.server
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CACHE_DIR = Path(os.environ.get("SERVER_RESPONDER_BOXES_CACHE", "/var/cache/server-responder-boxes"))
RUNS_DIR = Path(os.environ.get("SERVER_RESPONDER_BOXES_RUNS", "/var/tmp/server-responder-boxes"))
# What debootstrap puts in every box: enough for systemd, SSH and Ansible, nothing the roles install.
DEBOOTSTRAP_PACKAGES = (
    "systemd-sysv", "openssh-server", "python3", "python3-apt", "sudo", "dbus", "iproute2", "ca-certificates",
)
RUNS_KEPT_DAYS = 7
# A second run on the same machine waits this long for a box name held by the first one.
BOX_LOCK_WAIT_SECONDS = 1800
CONTROL_DIR = Path("/run/sr-boxes")
# The ansible-playbook of the Python running the tests (the project's venv), on the PATH or not.
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"


class BoxError(RuntimeError):
    """A box could not be built, booted or reached; the message says where its output is."""


@dataclass(frozen=True)
class BoxSpec:
    """One box: its Debian suite, nspawn machine name, SSH port and private /30 network."""

    suite: str
    ssh_port: int
    network: str

    @property
    def name(self) -> str:
        return f"sr-box-{self.suite}"

    @property
    def host_address(self) -> str:
        return str(ipaddress.ip_network(self.network)[1])

    @property
    def address(self) -> str:
        return str(ipaddress.ip_network(self.network)[2])

    @property
    def proxy_port(self) -> int:
        return self.ssh_port + 1


SPECS = {
    "bookworm": BoxSpec("bookworm", 2201, "10.77.201.0/30"),
    "trixie": BoxSpec("trixie", 2211, "10.77.211.0/30"),
}


def run(argv: Sequence[str], log: Path | None = None, timeout: float = 600, check: bool = True,
        input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run a host command, its output appended to log (or captured), raising BoxError when it fails."""
    with contextlib.ExitStack() as stack:
        if log is not None:
            sink = stack.enter_context(log.open("a"))
            sink.write(f"$ {' '.join(argv)}\n")
            sink.flush()
            out = err = sink
        else:
            out = err = subprocess.PIPE
        try:
            result = subprocess.run(argv, stdout=out, stderr=err, text=True, timeout=timeout,
                                    input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BoxError(f"{argv[0]} timed out after {timeout:.0f}s" + (f"; output in {log}" if log else "")) from None
    if check and result.returncode != 0:
        detail = f"output in {log}" if log else (result.stdout or "") + (result.stderr or "")
        raise BoxError(f"{' '.join(argv)} exited {result.returncode}: {detail}")
    return result


def host_mirror() -> str:
    """The Debian archive the host's own apt uses, read from its sources (never a hard-coded host)."""
    release = dict(
        line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line
    )
    codename = release.get("VERSION_CODENAME", "").strip('"')
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith(("#", " ")):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and codename in fields.get("suites", "").split():
                return fields["uris"].split()[0].rstrip("/")
    for path in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            match = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match and match.group(2) == codename:
                return match.group(1).rstrip("/")
    raise BoxError(f"no Debian mirror for {codename!r} in the host's apt sources")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_rootfs(suite: str, mirror: str) -> Path:
    """The cached root filesystem of a suite, built with debootstrap when this machine has none yet."""
    recipe = f"{suite} {mirror} {','.join(DEBOOTSTRAP_PACKAGES)}"
    root = CACHE_DIR / f"{suite}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with locked(CACHE_DIR / f".{suite}.lock"):
        if root.is_dir():
            return root
        partial = root.with_name(root.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        log = root.with_name(root.name + ".log")
        log.write_text("")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_PACKAGES)}",
             suite, str(partial), mirror], log=log, timeout=900)
        partial.rename(root)
    return root


def make_ssh_key(directory: Path) -> Path:
    key = directory / "id_ed25519"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sr-box", "-f", str(key)])
    return key


def prune_old_runs() -> None:
    if not RUNS_DIR.is_dir():
        return
    cutoff = time.time() - RUNS_KEPT_DAYS * 86400
    for entry in RUNS_DIR.iterdir():
        if entry.is_dir() and entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry, ignore_errors=True)


def _terminate(pid: int, grace: float = 30) -> None:
    """SIGTERM (systemd-nspawn then shuts its container down cleanly), SIGKILL after the grace period."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)


class AptProxy(http.server.ThreadingHTTPServer):
    """A plain-HTTP forward proxy for the box's apt, on the box's private link, to the host's mirror only.

    Downloaded .deb files are kept in the cache directory, so later runs fetch each package once.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], allowed_hosts: set[str], cache: Path, log: Path) -> None:
        self.allowed_hosts = allowed_hosts
        self.cache = cache
        self.log = log
        self.log_lock = threading.Lock()
        cache.mkdir(parents=True, exist_ok=True)
        super().__init__(address, _ProxyHandler)
        self.thread = threading.Thread(target=self.serve_forever, name="apt-proxy", daemon=True)

    def start(self) -> AptProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def note(self, line: str) -> None:
        with self.log_lock, self.log.open("a") as sink:
            sink.write(line + "\n")


_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
               "te", "trailers", "transfer-encoding", "upgrade", "content-length"}


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: AptProxy

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._forward(with_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._forward(with_body=False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        self.server.note(format % args)

    def _forward(self, with_body: bool) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in self.server.allowed_hosts:
            self.send_error(403, "only the Debian mirror is reachable through this proxy")
            return
        cached = None
        if "/pool/" in url.path and url.path.endswith(".deb"):
            cached = self.server.cache / hashlib.sha256(url.path.encode()).hexdigest()
        if cached is not None and cached.is_file():
            self._answer(200, [("Content-Type", "application/vnd.debian.binary-package")],
                         cached.read_bytes(), with_body)
            return
        headers = {key: value for key, value in self.headers.items() if key.lower() not in _HOP_BY_HOP}
        headers.pop("Host", None)
        connection = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=120)
        try:
            connection.request(self.command, url.path + (f"?{url.query}" if url.query else ""), headers=headers)
            response = connection.getresponse()
            body = response.read()
        except OSError as error:
            self.send_error(502, f"mirror unreachable: {error}")
            return
        finally:
            connection.close()
        if cached is not None and response.status == 200 and with_body:
            partial = cached.with_suffix(f".{threading.get_ident()}.partial")
            partial.write_bytes(body)
            partial.replace(cached)
        kept = [(key, value) for key, value in response.getheaders() if key.lower() not in _HOP_BY_HOP]
        self._answer(response.status, kept, body, with_body)

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes, with_body: bool) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)


@dataclass
class PlaybookRun:
    returncode: int
    seconds: float
    changed: int | None
    failed: int | None
    output: str

    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change, from Ansible's default output."""
        names, task = [], ""
        for line in self.output.splitlines():
            header = re.match(r"(?:TASK|RUNNING HANDLER) \[(.*)\]", line)
            if header:
                task = header.group(1)
            elif line.startswith("changed:"):
                names.append(task)
        return names


class Box:
    """A copy of a cached root filesystem booted with systemd-nspawn, reached over SSH on a private link."""

    def __init__(self, spec: BoxSpec, rootfs: Path, workdir: Path, key: Path, mirror: str) -> None:
        self.spec = spec
        self.source_rootfs = rootfs
        self.workdir = workdir
        self.root = workdir / "rootfs"
        self.logs = workdir / "logs"
        self.key = key
        self.mirror = mirror
        self.process: subprocess.Popen | None = None
        self.proxy: AptProxy | None = None
        self.ssh_config = workdir / "ssh_config"
        self.inventory = workdir / "inventory.yml"
        self.ansible_cfg = workdir / "ansible.cfg"
        self.boots = 0
        self._lock: Any = None
        # Unix socket paths are short: SSH connection sharing lives under /run, not in the work directory.
        self.control_dir = CONTROL_DIR / spec.name

    @property
    def name(self) -> str:
        return self.spec.name

    # Set-up and teardown.

    def create(self) -> Box:
        self.logs.mkdir(parents=True, exist_ok=True)
        self._hold_name()
        self._stop_leftovers()
        run(["cp", "-a", "--reflink=auto", str(self.source_rootfs), str(self.root)], log=self.logs / "setup.log")
        self._configure_rootfs()
        self._network_up()
        mirror_host = urllib.parse.urlsplit(self.mirror).hostname or ""
        self.proxy = AptProxy((self.spec.host_address, self.spec.proxy_port), {mirror_host},
                              CACHE_DIR / "debs", self.logs / "apt-proxy.log").start()
        self._write_client_files()
        return self

    def destroy(self) -> None:
        """Stop the box by its PID, remove its network and its root filesystem; its logs stay."""
        try:
            with contextlib.suppress(Exception):
                self.stop()
            if self.proxy is not None:
                self.proxy.stop()
                self.proxy = None
            self._stop_leftovers()
            shutil.rmtree(self.root, ignore_errors=True)
            shutil.rmtree(self.control_dir, ignore_errors=True)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    def _hold_name(self) -> None:
        """Hold the box's name (machine, network namespace, addresses) for this run, waiting for another run."""
        CONTROL_DIR.mkdir(parents=True, exist_ok=True)
        self._lock = (CONTROL_DIR / f"{self.name}.lock").open("w")
        deadline = time.monotonic() + BOX_LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BoxError(f"{self.name} is held by another run for over {BOX_LOCK_WAIT_SECONDS}s") from None
                time.sleep(2)

    def _pid_file(self) -> Path:
        return RUNS_DIR / f"{self.name}.pid"

    def _stop_leftovers(self) -> None:
        """Anything left under this box's name, while this run holds the name, was left by a run that died:
        its systemd-nspawn (by its recorded PID) and whatever still runs in the box's network namespace."""
        pid_file = self._pid_file()
        if pid_file.is_file():
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if cmdline[0].endswith(b"systemd-nspawn") and f"--machine={self.name}".encode() in cmdline:
                    _terminate(pid)
            pid_file.unlink(missing_ok=True)
        if Path(f"/run/netns/{self.name}").exists():
            for pid in run(["ip", "netns", "pids", self.name], check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
        self._network_down()

    def _configure_rootfs(self) -> None:
        root, spec = self.root, self.spec
        (root / "etc/hostname").write_text(f"{self.name}\n")
        hosts = (root / "etc/hosts").read_text() if (root / "etc/hosts").exists() else "127.0.0.1\tlocalhost\n"
        (root / "etc/hosts").write_text(hosts + f"127.0.1.1\t{self.name}\n")
        (root / "etc/ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/ssh/sshd_config.d/sr-box.conf").write_text(
            f"Port {spec.ssh_port}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n"
        )
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(self.key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        (root / "etc/apt/apt.conf.d/00sr-box-proxy").write_text(
            f'Acquire::http::Proxy "http://{spec.host_address}:{spec.proxy_port}/";\n'
            'Acquire::http::Pipeline-Depth "0";\n'
            'Acquire::Languages "none";\n'
        )

    def _network_up(self) -> None:
        spec, log = self.spec, self.logs / "setup.log"
        network = ipaddress.ip_network(spec.network)
        for line in run(["ip", "-o", "-4", "address", "show"]).stdout.splitlines():
            fields = line.split()
            if ipaddress.ip_interface(fields[3]).network.overlaps(network):
                raise BoxError(f"{spec.network} is already used on this machine ({fields[1]}); pick another")
        run(["ip", "netns", "add", self.name], log=log)
        run(["ip", "link", "add", self.name, "type", "veth", "peer", "name", "host0", "netns", self.name], log=log)
        run(["ip", "address", "add", f"{spec.host_address}/{network.prefixlen}", "dev", self.name], log=log)
        run(["ip", "link", "set", self.name, "up"], log=log)
        inside = ["ip", "-n", self.name]
        run([*inside, "address", "add", f"{spec.address}/{network.prefixlen}", "dev", "host0"], log=log)
        run([*inside, "link", "set", "host0", "up"], log=log)
        run([*inside, "link", "set", "lo", "up"], log=log)

    def _network_down(self) -> None:
        run(["ip", "link", "delete", self.name], check=False)
        run(["ip", "netns", "delete", self.name], check=False)

    def _write_client_files(self) -> None:
        spec = self.spec
        self.ssh_config.write_text(
            f"Host {self.name}\n"
            f"  HostName {spec.address}\n  Port {spec.ssh_port}\n  User root\n"
            f"  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"
            f"  ControlMaster auto\n  ControlPath {self.control_dir}/%C\n  ControlPersist 120\n"
            "  ConnectTimeout 5\n  ServerAliveInterval 5\n"
        )
        self.inventory.write_text(json.dumps({"all": {"hosts": {self.name: {
            "ansible_host": spec.address,
            "ansible_port": spec.ssh_port,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.key),
            "ansible_python_interpreter": "/usr/bin/python3",
        }}}}, indent=2))
        shutil.rmtree(self.control_dir, ignore_errors=True)
        (self.control_dir / "ansible").mkdir(parents=True)
        (self.workdir / "ansible-tmp").mkdir(exist_ok=True)
        self.ansible_cfg.write_text(
            "[defaults]\n"
            f"inventory = {self.inventory}\n"
            "host_key_checking = False\n"
            "retry_files_enabled = False\n"
            "nocows = True\n"
            "forks = 1\n"
            f"local_tmp = {self.workdir}/ansible-tmp\n"
            "[ssh_connection]\n"
            "pipelining = True\n"
            "ssh_args = -o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=no -o IdentitiesOnly=yes -o LogLevel=ERROR -o ConnectTimeout=10 "
            "-o ServerAliveInterval=5 -o ServerAliveCountMax=6\n"
            f"control_path_dir = {self.control_dir}/ansible\n"
        )

    # Booting and stopping.

    def boot(self, timeout: float = 90) -> float:
        """Boot the box and wait until systemd has finished starting it; returns the seconds it took."""
        started = time.monotonic()
        self.boots += 1
        console = (self.logs / f"console-{self.boots}.log").open("w")
        # CAP_NET_ADMIN, as any machine's root has, for the role's firewall rules; the namespace is the box's own.
        self.process = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--boot", f"--directory={self.root}", f"--machine={self.name}",
             "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{self.name}", "--link-journal=no",
             "--capability=CAP_NET_ADMIN", "--resolv-conf=off", "--console=read-only"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
        )
        console.close()
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        self._pid_file().write_text(str(self.process.pid))
        deadline = started + timeout
        while True:
            if self.process.poll() is not None:
                raise BoxError(f"systemd-nspawn exited {self.process.returncode}; console in {console.name}")
            if time.monotonic() > deadline:
                raise BoxError(f"no SSH on {self.name} after {timeout:.0f}s; console in {console.name}")
            if self.ssh("true", check=False, timeout=10).returncode == 0:
                break
            time.sleep(0.5)
        state = self.ssh("systemctl is-system-running --wait", check=False, timeout=max(5, deadline - time.monotonic()))
        if state.stdout.strip() not in ("running", "degraded"):
            raise BoxError(f"{self.name} did not finish booting: {state.stdout.strip()}; console in {console.name}")
        if state.stdout.strip() == "degraded":
            failed = self.ssh("systemctl --failed --no-legend", check=False).stdout
            with (self.logs / "setup.log").open("a") as sink:
                sink.write(f"boot {self.boots} degraded:\n{failed}\n")
        return time.monotonic() - started

    def wait_stopped(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 60) -> None:
        """Shut the box down by the PID of systemd-nspawn: SIGTERM (a clean shutdown), then SIGKILL."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            if self.wait_stopped(timeout) is None:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._pid_file().unlink(missing_ok=True)
        run(["ssh", "-F", str(self.ssh_config), "-O", "exit", self.name], check=False)

    # Talking to the box.

    def ssh(self, command: str, check: bool = True, timeout: float = 60,
            input_text: str | None = None) -> subprocess.CompletedProcess:
        return run(["ssh", "-F", str(self.ssh_config), self.name, command], check=check, timeout=timeout,
                   input_text=input_text)

    def write_file(self, path: str, content: str, owner: str, mode: str) -> None:
        user, _, group = owner.partition(":")
        self.ssh(f"install -D -o {user} -g {group or user} -m {mode} /dev/stdin {path}", input_text=content)

    def playbook(self, playbook: Path, extra_vars: dict, log: Path, timeout: float = 900) -> PlaybookRun:
        vars_file = self.workdir / f"{log.stem}-vars.json"
        vars_file.write_text(json.dumps(extra_vars))
        env = dict(os.environ, ANSIBLE_CONFIG=str(self.ansible_cfg), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
                   PYTHONUNBUFFERED="1")
        started = time.monotonic()
        with log.open("w") as sink:
            try:
                result = subprocess.run([str(ANSIBLE_PLAYBOOK), str(playbook), "-e", f"@{vars_file}"], env=env,
                                        stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        timeout=timeout, cwd=playbook.parent.parent)
                returncode = result.returncode
            except subprocess.TimeoutExpired:
                returncode = -1
        seconds = time.monotonic() - started
        output = log.read_text()
        recap = re.search(rf"^{re.escape(self.name)}\s*:.*?changed=(\d+).*?failed=(\d+)", output, re.M)
        return PlaybookRun(returncode, seconds, int(recap.group(1)) if recap else None,
                           int(recap.group(2)) if recap else None, output)




TIMINGS: list[tuple[str, str, float]] = []
OUTCOMES: list[tuple[str, str, str]] = []


@dataclass
class BoxRun:
    """A booted box and the steps run on it; after a failed step the later ones are skipped."""

    box: Box
    failed_step: str | None = None
    passed_steps: list[str] = field(default_factory=list)
    last_playbook: PlaybookRun | None = None

    @property
    def suite(self) -> str:
        return self.box.spec.suite

    def log(self, step: str) -> Path:
        return self.box.logs / (step.replace(" ", "-") + ".log")

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        if self.failed_step is not None:
            pytest.skip(f"step {self.failed_step!r} failed on {self.box.name}")
        try:
            yield
        except BaseException:
            self.failed_step = name
            raise
        self.passed_steps.append(name)

    def time(self, what: str, seconds: float) -> None:
        TIMINGS.append((self.suite, what, seconds))

    def outcome(self, what: str, summary: str) -> None:
        OUTCOMES.append((self.suite, what, summary))
