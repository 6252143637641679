"""Where a job's processes live: detected once at start, one handle per job to place, signal, kill and measure them.

The strategies, best first (`STRATEGIES`):
- `cgroup2`: a delegated cgroup v2 subtree with controllers (systemd `Delegate=yes`): each job in its own child
  with memory, pids and CPU limits; `cgroup.kill` ends everything in it.
- `cgroup2-kill`: a writable cgroup v2 hierarchy without controllers (hybrid hosts): each job in its own child, so
  `cgroup.kill` still ends everything; memory and pids limits come from cgroup v1 hierarchies when they are
  writable (`cgroup2-kill+v1-limits`).
- `subreaper`: no writable cgroup. The service is a child subreaper, so daemonising descendants come back to it;
  a job's processes are found by session, process group and a `/proc` ancestry walk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from server_responder.jobs import privileges
from server_responder.jobs.affinity import every_cpu
from server_responder.jobs.launcher import Launcher, LauncherEnded, PendingTidy, TidyStep

log = logging.getLogger("server_responder.jobs")

_LIMIT_CONTROLLERS = ("memory", "pids", "cpu")
_V1_LIMIT_CONTROLLERS = ("memory", "pids")
# How long a killed cgroup may take to empty before it is left for the next start to remove.
_EMPTY_WAIT_SECONDS = 5.0
_POLL_SECONDS = 0.02
# Job cgroups made ahead of the jobs that will use them: at most this many wait at a time, or one per worker.
_PREPARED_MIN = 2
_PREPARED_PREFIX = "prepared-"


@dataclass(frozen=True)
class Limits:
    """What each job may use; 0 means no limit (a CPU weight always applies where the controller exists)."""

    memory_max: int
    pids_max: int
    cpu_weight: int

    @classmethod
    def of(cls, settings: Any) -> Limits:
        return cls(settings.job_memory_max, settings.job_pids_max, settings.job_cpu_weight)

    def in_force(self, controllers: Iterable[str]) -> dict[str, int]:
        """The limits that apply where these controllers can be used."""
        controllers = set(controllers)
        shown: dict[str, int] = {}
        if "memory" in controllers and self.memory_max:
            shown["memory_max"] = self.memory_max
        if "pids" in controllers and self.pids_max:
            shown["pids_max"] = self.pids_max
        if "cpu" in controllers:
            shown["cpu_weight"] = self.cpu_weight
        return shown


@dataclass(frozen=True)
class JobStats:
    oom_killed: bool = False
    peak_memory_bytes: int | None = None


class JobCell(Protocol):
    """One job's processes, wherever this machine keeps them."""

    # What starts the job's processes: the job's launcher, or (None) the service itself.
    launcher: Launcher | None
    # No process of the job can leave it: once it is empty, nothing of the job runs anywhere.
    sealed: bool

    def placement(self) -> list[int]:
        """Where the job's first process starts, as descriptors closed by the caller: files written `0` to, or a
        cgroup2 directory (cloned into, or its `cgroup.procs` written), before any job code runs."""

    def started(self, pid: int) -> None:
        """The job's first process exists (pid)."""

    def watch(self) -> None:
        """Called while the job runs, to notice processes that might otherwise be missed."""

    def signal_all(self, signum: int) -> None: ...

    def kill_all(self) -> None: ...

    def empty(self) -> bool: ...

    def end(self) -> None:
        """Kill whatever is left and wait (a bounded time) until nothing is: before the job is final."""

    def stats(self) -> JobStats: ...

    def remove(self) -> None:
        """What held the job goes (ending whatever is left first); may come after the job is final."""


class Containment(Protocol):
    kind: str

    def limits_in_force(self) -> dict[str, int]: ...

    def job(self, job_id: str) -> JobCell: ...

    def recover(self) -> list[str]:
        """Kill and remove what jobs of a previous instance left; the job ids found."""

    def start(self) -> None:
        """At the job service's start: what starts jobs' processes (a launcher) begins, without being waited for."""

    def stop(self) -> None:
        """At the job service's stop, once the workers are done."""

    def close(self) -> None:
        """At stop, once the workers are done: nothing of any job is left, nor the service's cgroups."""


def child_setup(placement: Iterable[int], death_signal: bool = True) -> Callable[[], None]:
    """What a job's process does between fork and exec: join its cgroups, give up every capability and the
    means to regain any, die with the thread that started it, and run on every CPU the service may use. Only
    system calls, and no lock taken."""
    descriptors = tuple(placement)
    cpus = every_cpu()

    def setup() -> None:
        for descriptor in descriptors:
            os.write(descriptor, b"0")
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        privileges.drop_all_capabilities()
        privileges.prctl(privileges.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if death_signal:
            privileges.prctl(privileges.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return setup


def make_service_undumpable() -> None:
    """Jobs of the service's own user can then neither ptrace it nor read its /proc files (environ included)."""
    if privileges.prctl(privileges.PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        log.warning("could not make the service non-dumpable", extra={"event": "containment.dumpable_error"})


# ---- what the machine offers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostView:
    """The files detection reads; a test points them at a fake tree."""

    proc_cgroup: Path = Path("/proc/self/cgroup")
    mountinfo: Path = Path("/proc/self/mountinfo")
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True)
class CgroupPlaces:
    """The cgroup2 mount and own path, and each v1 controller's mount and own path."""

    unified_mount: Path | None
    unified_path: str | None
    v1: dict[str, Path]

    @property
    def unified_dir(self) -> Path | None:
        if self.unified_mount is None or self.unified_path is None:
            return None
        return self.unified_mount / self.unified_path.lstrip("/")


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """`hierarchy:controllers:path` lines to {controller: path}; the cgroup2 line is the key ``""``."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


def parse_mountinfo(text: str) -> tuple[Path | None, dict[str, Path]]:
    """The cgroup2 mount point and each v1 controller's mount point (only mounts of a hierarchy's root)."""
    unified: Path | None = None
    v1: dict[str, Path] = {}
    for line in text.splitlines():
        left, separator, right = line.partition(" - ")
        if not separator:
            continue
        fields_left, fields_right = left.split(), right.split()
        if len(fields_left) < 5 or len(fields_right) < 3 or fields_left[3] != "/":
            continue
        mount_point = Path(fields_left[4].replace("\\040", " "))
        fs_type, super_options = fields_right[0], fields_right[2].split(",")
        if fs_type == "cgroup2" and unified is None:
            unified = mount_point
        elif fs_type == "cgroup":
            for controller in super_options:
                if controller in _LIMIT_CONTROLLERS:
                    v1.setdefault(controller, mount_point)
    return unified, v1


def cgroup_places(view: HostView) -> CgroupPlaces:
    own = parse_proc_cgroup(_read(view.proc_cgroup))
    unified, v1_mounts = parse_mountinfo(_read(view.mountinfo))
    v1 = {controller: mount / own[controller].lstrip("/") for controller, mount in v1_mounts.items()
          if controller in own}
    return CgroupPlaces(unified, own.get(""), v1)


def data_dir_tag(data_dir: Path) -> str:
    """Names this data dir's cgroups: services on one machine don't collide, a restart finds its leftovers."""
    return "server-responder-" + hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]


# ---- cgroup files ------------------------------------------------------------------------------------------------


_READ_BYTES = 65536


def _read(path: Path | str) -> str:
    # Plain system calls: cgroup files are read several times per job, and buffered text files cost twice as much.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        chunks = []
        # A read of a file (cgroup and /proc ones included, which fill a read as far as they have text) that
        # returns less than was asked has reached the end: no further read to be told so.
        while chunk := os.read(descriptor, _READ_BYTES):
            chunks.append(chunk)
            if len(chunk) < _READ_BYTES:
                break
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(descriptor)


def _write(path: Path | str, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(descriptor, value.encode())
    finally:
        os.close(descriptor)


def _keyed(text: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in text.splitlines() if line.strip())
    return {pair[0]: pair[1].strip() if len(pair) > 1 else "" for pair in pairs}


def _number(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _pids_in(directory: Path) -> list[int]:
    return [int(line) for line in _read(directory / "cgroup.procs").split() if line.isdigit()]


def _populated(directory: Path) -> bool:
    events = _keyed(_read(directory / "cgroup.events"))
    if "populated" in events:
        return events["populated"] != "0"
    return bool(_pids_in(directory))


def _kill_cgroup2(directory: Path) -> None:
    try:
        _write(directory / "cgroup.kill", "1")
        return
    except FileNotFoundError:
        pass  # A kernel before 5.14: kill what is listed until nothing is (no new process outruns a SIGKILL loop).
    except OSError:
        return
    deadline = time.monotonic() + _EMPTY_WAIT_SECONDS
    while _pids_in(directory) and time.monotonic() < deadline:
        for pid in _pids_in(directory):
            _signal(pid, signal.SIGKILL)


def _wait_until_empty(directories: Iterable[Path], timeout: float = _EMPTY_WAIT_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    directories = list(directories)
    while any(_populated(directory) for directory in directories if directory.exists()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_SECONDS)
    return True


def _remove_dirs(directories: Iterable[Path]) -> None:
    for directory in directories:
        try:
            directory.rmdir()
        except FileNotFoundError:
            pass
        except OSError as error:
            log.warning("job cgroup not removed", extra={"event": "containment.remove_error",
                                                         "path": str(directory), "error": str(error)})


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class CgroupCell:
    """A job's cgroup2 directory (for kill and emptiness) and any v1 directories that carry its limits."""

    sealed = True

    def __init__(self, unified: Path, v1: dict[str, Path] | None = None, launcher: Launcher | None = None,
                 remover: Callable[[CgroupCell], None] | None = None) -> None:
        self.unified = unified
        self.v1 = v1 or {}
        self.launcher = launcher
        # What removes the emptied directories, when not the cell itself.
        self._remover = remover
        self._started = False
        # Only the service puts processes in a job's cgroup: once its first process has started and the cgroup has
        # been seen empty, it stays empty, and is not read again.
        self._emptied = False
        self._removed = False

    def placement(self) -> list[int]:
        # The cgroup2 directory itself (a job may be cloned into it), and the v1 `tasks` files.
        return [os.open(self.unified, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC),
                *(os.open(directory / "tasks", os.O_WRONLY | os.O_CLOEXEC) for directory in self.v1.values())]

    def started(self, pid: int) -> None:
        self._started = True

    def watch(self) -> None:
        pass

    def signal_all(self, signum: int) -> None:
        for pid in _pids_in(self.unified):
            _signal(pid, signum)

    def kill_all(self) -> None:
        if not self._emptied:
            _kill_cgroup2(self.unified)

    def empty(self) -> bool:
        if self._emptied:
            return True
        empty = not _populated(self.unified)
        self._emptied = empty and self._started
        return empty

    def end(self) -> None:
        if not self.empty():
            self.kill_all()
            _wait_until_empty([self.unified])

    def stats(self) -> JobStats:
        memory = self.v1.get("memory")
        if memory is not None:
            oom = _keyed(_read(memory / "memory.oom_control")).get("oom_kill", "0")
            return JobStats(oom not in ("", "0"), _number(_read(memory / "memory.max_usage_in_bytes")))
        events = _keyed(_read(self.unified / "memory.events"))
        return JobStats(events.get("oom_kill", "0") not in ("", "0"), _number(_read(self.unified / "memory.peak")))

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        self.end()
        if not self._emptied:
            # The v1 groups empty with the cgroup2 one (they hold the same processes): seen empty, that is known.
            _wait_until_empty(self.v1.values())
        if self._remover is not None:
            self._remover(self)
        else:
            _remove_dirs(self.directories)

    @property
    def directories(self) -> list[Path]:
        return [self.unified, *self.v1.values()]


def _recover_cgroups(parent: Path, v1_parents: Iterable[Path] = ()) -> list[str]:
    """Kill and remove every job cgroup under `parent` (and the matching v1 ones): a previous instance's."""
    found = sorted(child for child in _children(parent))
    for child in found:
        _kill_cgroup2(parent / child)
    _wait_until_empty(parent / child for child in found)
    _remove_dirs(parent / child for child in found)
    for v1_parent in v1_parents:
        leftovers = sorted(_children(v1_parent))
        for child in leftovers:
            for pid in _pids_in(v1_parent / child):
                _signal(pid, signal.SIGKILL)
        _wait_until_empty(v1_parent / child for child in leftovers)
        _remove_dirs(v1_parent / child for child in leftovers)
        found.extend(child for child in leftovers if child not in found)
    # Directories prepared for jobs that never started are removed, but they were no job's.
    return [name for name in found if not name.startswith(_PREPARED_PREFIX)]


def _children(directory: Path) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(directory) if entry.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _make_job_dir(directory: Path) -> Path:
    directory.mkdir(exist_ok=True)
    return directory


# ---- strategy a: a delegated cgroup2 subtree, with the controllers it has -------------------------------------------------


@dataclass
class DelegatedCgroups:
    """`<own>/service` holds the service, `<own>/jobs/<job id>` each job, with limits (no internal processes)."""

    root: Path
    controllers: tuple[str, ...]
    limits: Limits
    kind: str = "cgroup2"
    launcher: Launcher | None = None

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    def set_up(self, pid: int) -> None:
        service = _make_job_dir(self.root / "service")
        _write(service / "cgroup.procs", str(pid))
        _make_job_dir(self.jobs_dir)
        if self.controllers:
            enable = " ".join(f"+{controller}" for controller in self.controllers)
            _write(self.root / "cgroup.subtree_control", enable)
            _write(self.jobs_dir / "cgroup.subtree_control", enable)

    def limits_in_force(self) -> dict[str, int]:
        return self.limits.in_force(self.controllers)

    def job(self, job_id: str) -> JobCell:
        directory = _make_job_dir(self.jobs_dir / job_id)
        limits = self.limits_in_force()
        if "memory_max" in limits:
            _write(directory / "memory.max", str(limits["memory_max"]))
            if (directory / "memory.swap.max").exists():
                # Without this the limit only moves the job's memory to swap.
                _write(directory / "memory.swap.max", "0")
        if "pids_max" in limits:
            _write(directory / "pids.max", str(limits["pids_max"]))
        if "cpu_weight" in limits:
            _write(directory / "cpu.weight", str(limits["cpu_weight"]))
        return CgroupCell(directory, launcher=self.launcher)

    def recover(self) -> list[str]:
        return _recover_cgroups(self.jobs_dir)

    def start(self) -> None:
        _start_launcher(self.launcher)

    def stop(self) -> None:
        _stop_launcher(self.launcher)

    def close(self) -> None:
        self.stop()
        self.recover()


def delegated_cgroups(settings: Any, view: HostView) -> DelegatedCgroups | None:
    places = cgroup_places(view)
    own = places.unified_dir
    if own is None or places.unified_path in (None, "/"):
        return None
    available = _read(own / "cgroup.controllers").split()
    controllers = tuple(controller for controller in _LIMIT_CONTROLLERS if controller in available)
    # Delegated without controllers (a container that keeps them in cgroup v1): the same layout, kill only.
    if not os.access(own / "cgroup.subtree_control", os.W_OK):
        return None
    if own.name == "service" and (own.parent / "jobs").is_dir():
        return None  # Already set up by an instance still alive in this cgroup: not ours to take.
    if set(_pids_in(own)) - {view.pid}:
        return None  # Others share the cgroup: the service could not leave it without breaking their limits.
    strategy = DelegatedCgroups(own, controllers, Limits.of(settings), launcher=Launcher([own / "service"]))
    strategy.set_up(view.pid)
    return strategy


# ---- strategy b: a writable cgroup2 hierarchy for kill only, limits from cgroup v1 where writable -------------


@dataclass
class KillOnlyCgroups:
    """`<own>/server-responder-<tag>/<job id>` for kill; `<v1 own>/server-responder-<tag>/<job id>` for limits.

    The v1 directories, with their limits, are made ahead of a job (`prepared-<n>`, after a job's end rather
    than before the next one's start) and renamed to the job's id when it starts; cgroup2 cannot rename, so
    that one is made per job. The launcher removes a finished job's directories and makes the next job's
    (`Launcher.tidy`), off the service's CPU; the service does it itself when the launcher cannot."""

    parent: Path
    v1_parents: dict[str, Path]
    limits: Limits
    launcher: Launcher | None = None
    prepared_max: int = _PREPARED_MIN
    # Prepared v1 directories, each with the launcher's answer when it is the one making them.
    _prepared: list[tuple[dict[str, Path], PendingTidy | None]] = field(default_factory=list, init=False,
                                                                        repr=False)
    # Removals the launcher has not answered yet, with the directories it was to remove (the cgroup2 one first).
    _removing: list[tuple[PendingTidy, list[Path]]] = field(default_factory=list, init=False, repr=False)
    _answers_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _prepared_count: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _memsw: bool | None = field(default=None, init=False, repr=False)
    _parent_descriptors: list[int] | None = field(default=None, init=False, repr=False)

    @property
    def kind(self) -> str:
        return "cgroup2-kill+v1-limits" if self.v1_parents else "cgroup2-kill"

    def limits_in_force(self) -> dict[str, int]:
        return self.limits.in_force(self.v1_parents)

    def job(self, job_id: str) -> JobCell:
        self._removed_before(job_id)
        unified = _make_job_dir(self.parent / job_id)
        v1 = self._take_prepared(job_id)
        if v1 is None:
            v1 = self._make_v1(job_id)
        return CgroupCell(unified, v1, self.launcher, self._remove)

    def _removed_before(self, job_id: str) -> None:
        """A job run again under its id starts once its last run's directories are gone, not before the
        launcher removes them."""
        # Held while answers are taken: a removal another job's thread has taken but not yet carried out here
        # (the launcher having failed it) is done before this run's directories are made.
        with self._answers_lock:
            with self._lock:
                earlier = [pending for pending, directories in self._removing if directories[0].name == job_id]
            for pending in earlier:
                pending.answered(_EMPTY_WAIT_SECONDS)
            if earlier:
                self._handle_answers()  # what the launcher could not remove goes now

    def _v1_layout(self) -> dict[str, list[tuple[str, str]]]:
        """The v1 directories a job gets, by controller, with the limit files written in each."""
        limits = self.limits_in_force()
        layout: dict[str, list[tuple[str, str]]] = {}
        if "memory" in self.v1_parents:  # peak memory is measured with or without a limit
            layout["memory"] = []
            if "memory_max" in limits:
                layout["memory"].append(("memory.limit_in_bytes", str(limits["memory_max"])))
                if self._memsw is None:
                    self._memsw = (self.v1_parents["memory"] / "memory.memsw.limit_in_bytes").exists()
                if self._memsw:
                    layout["memory"].append(("memory.memsw.limit_in_bytes", str(limits["memory_max"])))
        if "pids_max" in limits:
            layout["pids"] = [("pids.max", str(limits["pids_max"]))]
        return layout

    def _make_v1(self, name: str) -> dict[str, Path]:
        v1: dict[str, Path] = {}
        for controller, writes in self._v1_layout().items():
            directory = v1[controller] = _make_job_dir(self.v1_parents[controller] / name)
            for file, text in writes:
                _write(directory / file, text)
        return v1

    def _take_prepared(self, job_id: str) -> dict[str, Path] | None:
        with self._lock:
            # The oldest made, not one the launcher may still be making: a job waits for none of them.
            ready = next((entry for entry in self._prepared if entry[1] is None or entry[1].answered()), None)
            if ready is None:
                return None
            self._prepared.remove(ready)
        prepared, making = ready
        if making is not None and making.error is not None:
            log.warning("job cgroup not prepared", extra={"event": "containment.prepare_error",
                                                          "error": making.error})
            _remove_dirs(prepared.values())
            return None
        renamed: dict[str, Path] = {}
        try:
            for controller, directory in prepared.items():
                target = directory.parent / job_id
                os.rename(directory, target)
                renamed[controller] = target
        except OSError:
            _remove_dirs([*renamed.values(), *(directory for controller, directory in prepared.items()
                                               if controller not in renamed)])
            return None
        return renamed

    def _remove(self, cell: CgroupCell) -> None:
        """A job's emptied cgroups go, and the next job's v1 ones are made: by the launcher, without waiting for
        it; here, when the launcher cannot take the request."""
        self._take_answers()
        name = self._next_prepared_name()
        layout = self._v1_layout() if name else {}
        steps = [TidyStep(remove=cell.unified.name)]
        for controller in self.v1_parents:
            steps.append(TidyStep(remove=cell.v1[controller].name if controller in cell.v1 else "",
                                  make=name if controller in layout else "",
                                  writes=tuple(layout.get(controller, ()))))
        try:
            pending = self.launcher.tidy(steps, self._parents()) if self.launcher is not None else None
        except (LauncherEnded, OSError):
            pending = None
        if pending is None:
            _remove_dirs(cell.directories)
            if name:
                self._prepare(name)
            return
        with self._lock:
            self._removing.append((pending, cell.directories))
            if name:
                self._prepared.append(({controller: self.v1_parents[controller] / name for controller in layout},
                                       pending))

    def _parents(self) -> list[int]:
        """Descriptors of the cgroup2 parent and each v1 one, in that order, opened once."""
        with self._lock:
            if self._parent_descriptors is None:
                self._parent_descriptors = [os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                                            for parent in (self.parent, *self.v1_parents.values())]
            return self._parent_descriptors

    def _take_answers(self, timeout: float = 0.0) -> None:
        """The launcher's answers to removals so far; what it could not remove is removed here."""
        with self._answers_lock:
            self._handle_answers(timeout)

    def _handle_answers(self, timeout: float = 0.0) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            removing, self._removing = self._removing, []
        waiting = []
        for pending, directories in removing:
            if not pending.answered(max(0.0, deadline - time.monotonic())):
                waiting.append((pending, directories))
            elif pending.error is not None:
                _remove_dirs(directories)  # says what is still in the way, if anything
        with self._lock:
            self._removing.extend(waiting)

    def _next_prepared_name(self) -> str:
        with self._lock:
            if not self.v1_parents or len(self._prepared) >= self.prepared_max:
                return ""
            self._prepared_count += 1
            return f"{_PREPARED_PREFIX}{self._prepared_count}"

    def _prepare(self, name: str) -> None:
        """The next job's v1 directories, made now rather than when it starts."""
        try:
            prepared = self._make_v1(name)
        except OSError as error:
            _remove_dirs(directory / name for directory in self.v1_parents.values())
            log.warning("job cgroup not prepared", extra={"event": "containment.prepare_error", "error": str(error)})
            return
        with self._lock:
            self._prepared.append((prepared, None))

    def settle(self, timeout: float = _EMPTY_WAIT_SECONDS) -> None:
        """Wait for the launcher's answers to every request so far (no more than `timeout`)."""
        self._take_answers(timeout)
        with self._lock:
            making = [pending for _, pending in self._prepared if pending is not None]
        for pending in making:
            pending.answered(timeout)

    def recover(self) -> list[str]:
        self.settle()
        with self._lock:
            prepared, self._prepared = self._prepared, []
            removing, self._removing = self._removing, []
        for pending in [making for _, making in prepared if making is not None] + [
                pending for pending, _ in removing]:
            pending.close()
        return _recover_cgroups(self.parent, self.v1_parents.values())

    def start(self) -> None:
        _start_launcher(self.launcher)

    def stop(self) -> None:
        _stop_launcher(self.launcher)

    def close(self) -> None:
        self.stop()
        self.recover()
        with self._lock:
            descriptors, self._parent_descriptors = self._parent_descriptors or [], None
        for descriptor in descriptors:
            os.close(descriptor)
        _remove_dirs([self.parent, *self.v1_parents.values()])


def kill_only_cgroups(settings: Any, view: HostView) -> KillOnlyCgroups | None:
    places = cgroup_places(view)
    own = places.unified_dir
    if own is None:
        return None
    tag = data_dir_tag(settings.data_dir)
    try:
        parent = _make_job_dir(own / tag)
        if not os.access(parent / "cgroup.procs", os.W_OK):
            return None
    except OSError:
        return None
    v1_parents: dict[str, Path] = {}
    # Each hierarchy a job joins costs its start a migration; v1 cpu shares are not worth one.
    for controller, directory in places.v1.items():
        if controller not in _V1_LIMIT_CONTROLLERS:
            continue
        try:
            candidate = _make_job_dir(directory / tag)
        except OSError:
            continue
        if os.access(candidate / "cgroup.procs", os.W_OK):
            v1_parents[controller] = candidate
    # The launcher comes back to the service's own cgroups after placing each job.
    homes = [parent.parent, *(directory.parent for directory in v1_parents.values())]
    # Jobs starting at once each find theirs.
    prepared_max = max(_PREPARED_MIN, getattr(settings, "workers", _PREPARED_MIN))
    return KillOnlyCgroups(parent, v1_parents, Limits.of(settings), Launcher(homes), prepared_max)


def _start_launcher(launcher: Launcher | None) -> None:
    if launcher is not None:
        launcher.start()


def _stop_launcher(launcher: Launcher | None) -> None:
    if launcher is not None:
        launcher.stop()


# ---- strategy c: a child subreaper and the /proc process tree ---------------------------------------------------


@dataclass(frozen=True)
class ProcessEntry:
    pid: int
    ppid: int
    pgrp: int
    session: int
    state: str
    start_time: int


def process_entry(pid: int) -> ProcessEntry | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = stat.rsplit(")", 1)[1].split()
    # After the command: state ppid pgrp session ... starttime (field 22 of the whole line).
    return ProcessEntry(pid, int(rest[1]), int(rest[2]), int(rest[3]), rest[0], int(rest[19]))


def process_table() -> list[ProcessEntry]:
    entries = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            entry = process_entry(int(name))
            if entry is not None:
                entries.append(entry)
    return entries


def _alive(entry: ProcessEntry | None) -> bool:
    return entry is not None and entry.state not in ("Z", "X")


def _same_process(pid: int, start_time: int) -> ProcessEntry | None:
    entry = process_entry(pid)
    return entry if entry is not None and entry.start_time == start_time else None


class ProcessTreeCell:
    """A job's processes as its sessions, process groups and descendants, each kept as (pid, start time) so a
    reused pid is never taken for one of them. Without cgroups this is the best that can be done."""

    launcher = None  # started by the service itself: it is their subreaper
    sealed = False  # a process that slips past the tracking is not in it

    def __init__(self, record: Path | None = None, on_removed: Callable[[ProcessTreeCell], None] | None = None,
                 service_pid: int | None = None) -> None:
        self.record = record
        self._on_removed = on_removed
        self._service_pid = service_pid if service_pid is not None else os.getpid()
        self.leaders: set[int] = set()
        self.members: dict[int, int] = {}
        self._lock = threading.Lock()
        self._watched_at = 0.0
        self._removed = False

    def placement(self) -> list[int]:
        return []

    def started(self, pid: int) -> None:
        entry = process_entry(pid)
        with self._lock:
            self.leaders.add(pid)
            if entry is not None:
                self._add([entry])

    def watch(self) -> None:
        self._watched_at = time.monotonic()
        table = process_table()
        with self._lock:
            known = set(self.members)
            children: dict[int, list[ProcessEntry]] = {}
            for entry in table:
                children.setdefault(entry.ppid, []).append(entry)
            found = [entry for entry in table
                     if entry.session in self.leaders or entry.pgrp in self.leaders
                     or (entry.pid in known and self.members[entry.pid] == entry.start_time)]
            seen = {entry.pid for entry in found}
            queue = list(found)
            while queue:
                entry = queue.pop()
                for child in children.get(entry.pid, ()):
                    if child.pid not in seen:
                        seen.add(child.pid)
                        found.append(child)
                        queue.append(child)
            self._add(entry for entry in found if entry.pid != self._service_pid)

    def _add(self, entries: Iterable[ProcessEntry]) -> None:
        new = [entry for entry in entries if self.members.get(entry.pid) != entry.start_time]
        for entry in new:
            self.members[entry.pid] = entry.start_time
        if new and self.record is not None:
            # Outside the workspace: what a restart after a crash kills if it is still the same process.
            descriptor = os.open(self.record, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            try:
                os.write(descriptor, "".join(f"{entry.pid} {entry.start_time}\n" for entry in new).encode())
            finally:
                os.close(descriptor)

    def _living(self) -> list[ProcessEntry]:
        with self._lock:
            members = dict(self.members)
        living = []
        for pid, start_time in members.items():
            entry = _same_process(pid, start_time)
            if _alive(entry):
                living.append(entry)
            elif entry is not None and entry.ppid == self._service_pid and pid not in self.leaders:
                _reap(pid)  # a reparented descendant: the service is its parent now
        return living

    def signal_all(self, signum: int) -> None:
        self.watch()
        for entry in self._living():
            _signal(entry.pid, signum)

    def kill_all(self) -> None:
        # Rounds, since a process may fork between a walk and its kill.
        deadline = time.monotonic() + _EMPTY_WAIT_SECONDS
        while time.monotonic() < deadline:
            self.watch()
            living = self._living()
            if not living:
                return
            for entry in living:
                _signal(entry.pid, signal.SIGKILL)

    def empty(self) -> bool:
        if time.monotonic() - self._watched_at > _POLL_SECONDS:
            self.watch()  # a walk of /proc is not cheap: one per poll is enough
        return not self._living()

    def stats(self) -> JobStats:
        return JobStats()

    def end(self) -> None:
        # All of it before the job is final: the service ends orphans once no job is left.
        self.remove()

    def remove(self) -> None:
        if self._removed:
            return
        self._removed = True
        if not self.empty():
            self.kill_all()
        self._living()
        if self.record is not None:
            self.record.unlink(missing_ok=True)
        if self._on_removed is not None:
            self._on_removed(self)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class Subreaper:
    """No cgroup to be had: orphans of every job are reparented to the service, which ends them with their job."""

    kind = "subreaper"

    def __init__(self, records: Path, pid: int | None = None) -> None:
        self.records = records
        self.pid = pid if pid is not None else os.getpid()
        self._cells: set[ProcessTreeCell] = set()
        self._lock = threading.Lock()

    def set_up(self) -> None:
        if privileges.prctl(privileges.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("could not become a child subreaper: daemonising job processes may escape",
                        extra={"event": "containment.subreaper_error", "errno": privileges.errno()})

    def limits_in_force(self) -> dict[str, int]:
        return {}

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def job(self, job_id: str) -> JobCell:
        self.records.mkdir(parents=True, exist_ok=True)
        cell = ProcessTreeCell(self.records / f"{job_id}.pids", self._removed, self.pid)
        with self._lock:
            self._cells.add(cell)
        return cell

    def _removed(self, cell: ProcessTreeCell) -> None:
        with self._lock:
            self._cells.discard(cell)
            idle = not self._cells
        if idle:
            self.end_orphans()

    def end_orphans(self) -> None:
        """With no job running, any process reparented to the service from a session of its own belongs to a job
        that has ended; the service's own children share its session."""
        own_session = os.getsid(0)
        for _ in range(3):
            orphans = [entry for entry in process_table()
                       if entry.ppid == self.pid and entry.session != own_session]
            if not orphans:
                return
            for entry in orphans:
                if _alive(entry):
                    _signal(entry.pid, signal.SIGKILL)
            for entry in orphans:
                _reap_blocking(entry.pid)

    def close(self) -> None:
        self.recover()
        self.end_orphans()

    def recover(self) -> list[str]:
        found = []
        for record in sorted(self.records.glob("*.pids")):
            found.append(record.stem)
            for line in _read(record).splitlines():
                pid_text, _, start_text = line.partition(" ")
                if not (pid_text.isdigit() and start_text.isdigit()):
                    continue
                entry = _same_process(int(pid_text), int(start_text))
                if _alive(entry):
                    _signal(entry.pid, signal.SIGKILL)
                    _kill_session(entry.pid)
            record.unlink(missing_ok=True)
        return found


def _kill_session(leader: int) -> None:
    for entry in process_table():
        if entry.session == leader or entry.pgrp == leader:
            _signal(entry.pid, signal.SIGKILL)


def _reap_blocking(pid: int) -> None:
    deadline = time.monotonic() + _EMPTY_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(_POLL_SECONDS)


def subreaper(settings: Any, view: HostView) -> Subreaper:
    strategy = Subreaper(settings.work_dir, view.pid)
    strategy.set_up()
    return strategy


# Best first; the first that this machine allows is the one used.
STRATEGIES: tuple[tuple[str, Callable[[Any, HostView], Containment | None]], ...] = (
    ("cgroup2", delegated_cgroups),
    ("cgroup2-kill", kill_only_cgroups),
    ("subreaper", subreaper),
)


def detect_containment(settings: Any, view: HostView | None = None) -> Containment:
    view = view or HostView()
    for name, strategy in STRATEGIES:
        try:
            found = strategy(settings, view)
        except OSError as error:
            log.warning("containment not available", extra={"event": "containment.unavailable", "kind": name,
                                                            "error": str(error)})
            continue
        if found is not None:
            return found
    raise RuntimeError("no containment strategy applies")  # subreaper always does


def containment_status(containment: Containment, run_as: Any | None) -> dict[str, Any]:
    """What `/health` and the start-up log say: the containment, the limits in force, who jobs run as."""
    service_uid = os.geteuid()
    if run_as is not None:
        job_user = run_as.name
    else:
        try:
            job_user = pwd.getpwuid(service_uid).pw_name
        except KeyError:
            job_user = str(service_uid)
    return {"kind": containment.kind, "limits": containment.limits_in_force(), "job_user": job_user,
            "jobs_share_service_user": run_as is None or run_as.uid == service_uid}
