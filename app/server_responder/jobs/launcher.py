"""Starts jobs' processes from a small single-threaded process of its own, never a fork of the whole service.

The service starts one launcher (`Launcher.start`) and hands it, per job, over a control socket: the argv,
environment, cwd, umask and user, with the job's descriptors (a socket of the job's own, the stdout and stderr
pipes, the job cell's places: its cgroup2 directory and the `tasks` files of its v1 cgroups). Nothing of the job
runs before it is in its cgroups. The launcher answers on the job's socket with the pid and how the job got
there, later with the exit status, then closes it. A job gets into its cgroups one of two ways:

- `spawned` (during a run of jobs): the launcher joins the job's cgroups itself, takes the job user as its real
  ids only (its effective ids stay privileged) and posix_spawns with RESETIDS, so the child starts in them with
  the job user's ids from its exec on; then it goes back to its own ids and cgroups.
- `cloned` (the first job after a quiet spell of QUIET_SECONDS): clone3 with CLONE_INTO_CGROUP starts the child
  in the cgroup2 directory; the child joins the v1 ones, takes the job user's ids and execs. The launcher moves
  nowhere and keeps its ids. A clone of the launcher costs about a millisecond more than a spawn, but moving a
  process into a cgroup2 directory (`cgroup.procs`) takes a lock over every process on the machine whose first
  taker after a quiet spell waits out an RCU grace period: 7 to 10 ms here, on every job that follows a pause.
  Kernels without CLONE_INTO_CGROUP (before 5.7, or a seccomp filter that refuses clone3) always spawn.

Both move one thread through v1 `tasks` files, which takes no such lock.

The launcher also tidies a finished job's cgroups (`Launcher.tidy`): it removes their directories and makes the
next job's v1 ones with their limits, told which below the parents whose descriptors come with the request, and
answers on a socket of the request's own. Making and removing cgroups is kernel work that the service, on one
CPU, would wait for; the launcher does it on the others while the service answers the next request.

What the launcher is, every job inherits: no supplementary groups, no inheritable or ambient capabilities (so a
job's exec leaves it none), no_new_privs. It is not dumpable and dies with the service.

Between posix_spawn returning and the launcher taking back its real ids, a spawned job may signal it. Whatever
ends the launcher, the service starts another one, and each job it was running ends failed, saying so.
"""

from __future__ import annotations

import array
import ctypes
import errno
import math
import os
import platform
import select
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from server_responder.jobs import privileges
from server_responder.jobs.affinity import every_cpu, unpin_this_process

LAUNCHER_ENDED = "the job's launcher ended"
LAUNCHER_SILENT = "the job's launcher did not answer"
# One request: argv and environment; the largest a single argument or variable may be is 128 KiB anyway.
_REQUEST_MAX = 192 * 1024
_ANSWER_MAX = 4096
_FDS_MAX = 16
# How long a job waits for its launcher to answer (the first one includes the launcher's own start).
_ANSWER_SECONDS = 20.0
_STOP_SECONDS = 5.0
# Moving a process into a cgroup2 directory takes a lock whose first taker after a quiet spell waits out an RCU
# grace period (several milliseconds here); within about this long of the last move it is still quick.
QUIET_SECONDS = 0.015
CLONED, SPAWNED = "cloned", "spawned"


class LauncherEnded(RuntimeError):
    """The launcher went away before it could say whether, or as what, the job's process started."""


# ---- the service's side ----------------------------------------------------------------------------------------


class Launcher:
    """The service's handle on its launcher process: started once, replaced when it ends, stopped at stop."""

    def __init__(self, homes: Sequence[Path], quiet_seconds: float = QUIET_SECONDS) -> None:
        # The cgroups the launcher goes back to after placing each job (where the service itself is).
        self.homes = [Path(home) for home in homes]
        # A job this long after the one before is cloned into its cgroup2 directory (0: every job; inf: none).
        self.quiet_seconds = quiet_seconds
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._generation = 0

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    def start(self) -> None:
        """Start the launcher without waiting for it: the first job's request waits in its socket."""
        with self._lock:
            if self._process is None:
                self._start()

    def stop(self) -> None:
        with self._lock:
            self._discard(kill=False)

    def spawn(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], umask: int | None,
              uid: int | None, gid: int | None, stdout: int, stderr: int,
              placement: Sequence[int]) -> LaunchedProcess:
        """Start argv; an exec failure is raised as the OSError it was, a lost launcher as LauncherEnded."""
        request = encode_request(argv, env, cwd, umask, uid, gid)
        if len(request) > _REQUEST_MAX:
            raise OSError(errno.E2BIG, os.strerror(errno.E2BIG), argv[0])
        channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            generation = self._send(request, [theirs.fileno(), stdout, stderr, *placement])
        except BaseException:
            channel.close()
            raise
        finally:
            theirs.close()
        channel.setblocking(False)  # for good: the job's end is polled for on it too
        try:
            answer = channel.recv(_ANSWER_MAX) if _readable(channel, _ANSWER_SECONDS) else None
        except OSError:
            answer = b""
        if not answer:
            channel.close()
            self.lost(generation, kill=answer is None)
            raise LauncherEnded(LAUNCHER_SILENT if answer is None else LAUNCHER_ENDED)
        kind, _, value = answer.partition(b" ")
        if kind != b"pid":
            channel.close()
            code, _, message = value.partition(b" ")
            raise OSError(int(code), message.decode(errors="replace"), argv[0])
        pid, _, placing = value.partition(b" ")
        return LaunchedProcess(int(pid), channel, self, generation, placing.decode())

    def tidy(self, steps: Sequence[TidyStep], parents: Sequence[int]) -> PendingTidy:
        """Have the launcher carry out `steps`, one below each of `parents` (directory descriptors), without
        waiting for it; a lost launcher is raised as LauncherEnded."""
        request = encode_tidy(steps)
        channel, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._send(request, [theirs.fileno(), *parents])
        except BaseException:
            channel.close()
            raise
        finally:
            theirs.close()
        channel.setblocking(False)
        return PendingTidy(channel)

    def lost(self, generation: int, kill: bool = False) -> None:
        """A job found its launcher gone (or stuck): the next one is started now, unless that was done already."""
        with self._lock:
            if generation == self._generation and self._process is not None:
                self._discard(kill=kill)
                self._start()

    def _send(self, request: bytes, descriptors: list[int]) -> int:
        rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", descriptors))]
        # Requests from many workers, one at a time: each is one message with its descriptors.
        with self._lock:
            for attempt in range(2):
                if self._control is None:
                    self._start()
                try:
                    self._control.sendmsg([request], rights, socket.MSG_NOSIGNAL)
                    return self._generation
                except TimeoutError:
                    self._discard(kill=True)
                    raise LauncherEnded(LAUNCHER_SILENT) from None
                except OSError:
                    # Ended before it read this request: nothing was started, so a new launcher may take it.
                    self._discard(kill=True)
            raise LauncherEnded(LAUNCHER_ENDED)

    def _start(self) -> None:
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # Started by the thread that asks: the launcher's death signal follows that thread, so only
            # threads that live as long as the job service start it.
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(os.getpid()), _cpu_list(every_cpu()),
                 repr(self.quiet_seconds), *map(str, self.homes)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/",
                env=_launcher_environment())
        except BaseException:
            control.close()
            raise
        finally:
            theirs.close()
        control.settimeout(_ANSWER_SECONDS)
        self._control = control
        self._generation += 1

    def _discard(self, kill: bool) -> None:
        """Close the control socket (a launcher that reads its end exits) and reap the process."""
        process, control = self._process, self._control
        self._process = self._control = None
        if control is not None:
            control.close()
        if process is None:
            return
        if kill:
            process.kill()
        try:
            process.wait(_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_list(cpus: frozenset[int] | None) -> str:
    """The CPUs the launcher and its jobs run on, as an argument: `-` for the ones it inherits."""
    return ",".join(map(str, sorted(cpus))) if cpus else "-"


def _launcher_environment() -> dict[str, str]:
    """Nothing of the service's secrets: only what finding the interpreter's modules may need."""
    environment = {"PATH": os.defpath, "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:
        environment["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return environment


def _readable(channel: socket.socket, timeout: float | None) -> bool:
    poller = select.poll()
    poller.register(channel, select.POLLIN)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


def _answer_if_any(channel: socket.socket) -> bytes | None:
    """The launcher's answer on a non-blocking channel: None while there is none yet, empty once it has gone."""
    try:
        return channel.recv(_ANSWER_MAX)
    except BlockingIOError:
        return None
    except OSError:
        return b""


def joining_file(cgroup: Path) -> Path:
    """What the single-threaded launcher writes `0` to, to move into `cgroup`: a v1 group's `tasks`, else (cgroup2)
    its `cgroup.procs`."""
    tasks = cgroup / "tasks"
    return tasks if tasks.exists() else cgroup / "cgroup.procs"


# ---- the messages ------------------------------------------------------------------------------------------------
# A request is NUL-separated fields (none of them can hold a NUL: exec would refuse it), the first its kind.
# `spawn`: cwd, umask, uid, gid (empty for none), the counts of arguments and variables, the arguments, then each
# variable's name and value. Answers are `pid <pid> <cloned|spawned>`, `error <errno> <text>` and
# `exit <status as Popen's returncode>`.
# `tidy`: the count of steps, then each step's directory to remove, directory to make (either empty for none),
# the count of files to write in the one made, and each file's name and text. Answers are `ok` and
# `error <errno> <text>` (the first failure; the other steps are carried out all the same).
_SPAWN, _TIDY = "spawn", "tidy"


@dataclass(frozen=True)
class TidyStep:
    """What the launcher does below one parent directory: remove `remove`, then make `make` and write `writes`
    (file name, text) in it. Names are single path components."""

    remove: str = ""
    make: str = ""
    writes: tuple[tuple[str, str], ...] = ()


def encode_tidy(steps: Sequence[TidyStep]) -> bytes:
    fields = [_TIDY, str(len(steps))]
    for step in steps:
        fields += [step.remove, step.make, str(len(step.writes))]
        for name, text in step.writes:
            fields += [name, text]
    return "\0".join(fields).encode()


def decode_tidy(fields: Sequence[str]) -> list[TidyStep]:
    steps, at = [], 2
    for _ in range(int(fields[1])):
        remove, make, count = fields[at:at + 3]
        at += 3
        writes = tuple(zip(fields[at:at + 2 * int(count):2], fields[at + 1:at + 2 * int(count):2]))
        at += 2 * int(count)
        for name in (remove, make, *(name for name, _ in writes)):
            if "/" in name or name in (".", ".."):
                raise ValueError(f"not a name in its parent: {name!r}")
        steps.append(TidyStep(remove, make, writes))
    if at != len(fields):
        raise ValueError("a tidy request of the wrong length")
    return steps


class PendingTidy:
    """The launcher's answer to a tidy request, once it has come."""

    def __init__(self, channel: socket.socket) -> None:
        self._channel = channel  # non-blocking
        self.error: str | None = None
        self._answered = False

    def answered(self, timeout: float = 0.0) -> bool:
        """Whether the launcher has answered (`error` then says what failed, or that it ended first)."""
        if self._answered:
            return True
        if self._channel.fileno() < 0:
            answer = b""  # closed unanswered: it will never know
        elif timeout and not _readable(self._channel, timeout):
            return False
        else:
            answer = _answer_if_any(self._channel)
            if answer is None:
                return False
        self._answered = True
        self._channel.close()
        if answer != b"ok":
            kind, _, value = answer.partition(b" ")
            self.error = value.decode(errors="replace") if kind == b"error" else LAUNCHER_ENDED
        return True

    def close(self) -> None:
        self._channel.close()


def encode_request(argv: Sequence[str], env: Mapping[str, str], cwd: Path | str, umask: int | None,
                   uid: int | None, gid: int | None) -> bytes:
    fields = [_SPAWN, str(cwd), _optional(umask), _optional(uid), _optional(gid), str(len(argv)), str(len(env)),
              *argv]
    for name, value in env.items():
        fields.append(name)
        fields.append(value)
    try:
        return "\0".join(fields).encode(errors="surrogateescape")
    except (TypeError, UnicodeError) as error:
        raise OSError(errno.EINVAL, f"{type(error).__name__}: {error}", argv[0] if argv else None) from None


def decode_request(data: bytes | memoryview) -> tuple[str, int | None, int | None, int | None, list[str],
                                                       dict[str, str]]:
    fields = str(data, "utf-8", "surrogateescape").split("\0")
    kind, cwd, umask, uid, gid, argc, envc = fields[:7]
    start, count = 7 + int(argc), int(envc)
    if kind != _SPAWN or len(fields) != start + 2 * count:
        raise ValueError("embedded null byte")
    return (cwd, _number(umask), _number(uid), _number(gid), fields[7:start],
            dict(zip(fields[start::2], fields[start + 1::2])))


def _optional(number: int | None) -> str:
    return "" if number is None else str(number)


def _number(text: str) -> int | None:
    return int(text) if text else None


class LaunchedProcess:
    """A job's first process as its launcher reports it: the same questions a Popen answers."""

    def __init__(self, pid: int, channel: socket.socket, launcher: Launcher, generation: int,
                 placing: str = "") -> None:
        self.pid = pid
        self.placing = placing  # how it got into its cells: cloned into them, or spawned from within
        self.returncode: int | None = None
        self.error: str | None = None
        self._channel = channel  # non-blocking
        self._launcher = launcher
        self._generation = generation
        self._ended = False

    @property
    def status_fd(self) -> int | None:
        """Readable once the launcher has something to say: the exit status, or its own end."""
        return self._channel.fileno() if self._channel.fileno() >= 0 else None

    def poll(self) -> bool:
        """Whether the process has ended, or its end can no longer be known."""
        if self._ended:
            return True
        answer = _answer_if_any(self._channel)
        if answer is None:
            return False
        self._end(answer)
        return True

    def wait(self, timeout: float | None = None) -> bool:
        if self._ended:
            return True
        _readable(self._channel, timeout)
        return self.poll()

    def abandon(self, reason: str) -> None:
        """The job's processes are gone but the launcher never said how the first ended: it is stuck."""
        if not self._ended:
            self._finish(reason)
            self._launcher.lost(self._generation, kill=True)

    def close(self) -> None:
        if not self._ended:
            self._finish(LAUNCHER_ENDED)
        self._channel.close()

    def _end(self, answer: bytes) -> None:
        kind, _, value = answer.partition(b" ")
        if kind == b"exit":
            self.returncode = int(value)
            self._finish(None)
        else:
            self._finish(LAUNCHER_ENDED)
            self._launcher.lost(self._generation)

    def _finish(self, error: str | None) -> None:
        self._ended = True
        self.error = error


# ---- the launcher's side ---------------------------------------------------------------------------------------


class _Server:
    """The launcher's loop: requests on the control socket, children's ends through SIGCHLD."""

    def __init__(self, control: socket.socket, homes: Sequence[str], quiet_seconds: float) -> None:
        self.control = control
        self.quiet_seconds = quiet_seconds
        self.can_clone_into_cgroup = _CLONE3 is not None
        self.last_spawn = -math.inf
        self.uid, self.gid = os.getuid(), os.getgid()
        self.homes: dict[int, int] = {}
        for home in homes:
            descriptor = os.open(joining_file(Path(home)), os.O_WRONLY | os.O_CLOEXEC)
            hierarchy = os.fstat(descriptor).st_dev
            if hierarchy in self.homes:
                os.close(descriptor)  # controllers mounted together: one hierarchy, one way back
            else:
                self.homes[hierarchy] = descriptor
        self.devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        # Each job's channel descriptor, by the pid of its first process.
        self.children: dict[int, int] = {}
        # What the launcher ignores a job would inherit: back to the defaults, as for any process started fresh.
        self.defaults = {signal.SIGPIPE, signal.SIGXFSZ} | {
            number for number in signal.valid_signals() if signal.getsignal(number) == signal.SIG_IGN}
        # The service's umask, for jobs that ask for none; the launcher makes no files, so it keeps the last one.
        self.own_umask = os.umask(0o077)
        self.umask = self.own_umask
        os.umask(self.umask)
        # One buffer for every request, rather than a new one each time.
        self.buffer = bytearray(_REQUEST_MAX)
        self.view = memoryview(self.buffer)
        self.ancillary_size = socket.CMSG_SPACE(_FDS_MAX * 4)

    def run(self) -> None:
        wakeup_read, wakeup_write = os.pipe()
        os.set_blocking(wakeup_read, False)
        os.set_blocking(wakeup_write, False)
        signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda number, frame: None)
        poller = select.poll()
        poller.register(self.control, select.POLLIN)
        poller.register(wakeup_read, select.POLLIN)
        while True:
            for descriptor, _ in poller.poll():
                if descriptor == wakeup_read:
                    _drain(wakeup_read)
                    self.reap()
                elif not self.take_request():
                    return

    def take_request(self) -> bool:
        """Serve one request; False once the service has closed the control socket."""
        try:
            size, ancillary, flags, _ = self.control.recvmsg_into(
                [self.buffer], self.ancillary_size, socket.MSG_CMSG_CLOEXEC)
        except InterruptedError:
            return True
        descriptors = array.array("i")
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                descriptors.frombytes(payload[:len(payload) - len(payload) % descriptors.itemsize])
        if not size and not descriptors:
            return False
        if not descriptors or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            for descriptor in descriptors:
                os.close(descriptor)
            return True
        if bytes(self.view[:len(_TIDY) + 1]) == _TIDY.encode() + b"\0":
            self.tidy(bytes(self.view[:size]), descriptors)
            return True
        if len(descriptors) < 3:
            for descriptor in descriptors:
                os.close(descriptor)
            return True
        channel = descriptors[0]
        try:
            pid, placing = self.spawn(decode_request(self.view[:size]), descriptors[1], descriptors[2],
                                      descriptors[3:])
        except OSError as error:
            _tell(channel, b"error %d %s" % (error.errno or errno.EIO, _text(error.strerror or str(error))))
            os.close(channel)
        except Exception as error:
            _tell(channel, b"error %d %s" % (errno.EINVAL, _text(f"{type(error).__name__}: {error}")))
            os.close(channel)
        else:
            self.children[pid] = channel
            _tell(channel, b"pid %d %s" % (pid, placing.encode()))
        finally:
            for descriptor in descriptors[1:]:
                os.close(descriptor)
        return True

    def tidy(self, request: bytes, descriptors: Sequence[int]) -> None:
        """Carry out a tidy request's steps, each below its parent (the descriptors after the answer's), and answer
        `ok` or the first failure."""
        channel, parents = descriptors[0], descriptors[1:]
        failure = None
        try:
            steps = decode_tidy(request.decode(errors="surrogateescape").split("\0"))
            if len(steps) != len(parents):
                raise ValueError("a tidy request with a parent per step")
            for step, parent in zip(steps, parents):
                try:
                    _carry_out(step, parent)
                except OSError as error:
                    failure = failure or b"error %d %s" % (error.errno or errno.EIO, _text(str(error)))
        except (ValueError, IndexError) as error:
            failure = b"error %d %s" % (errno.EINVAL, _text(str(error)))
        finally:
            for parent in parents:
                os.close(parent)
        _tell(channel, failure or b"ok")
        os.close(channel)

    def spawn(self, request: tuple, stdout: int, stderr: int, placement: Sequence[int]) -> tuple[int, str]:
        """Start the job's first process in its cells, and say how: `cloned` into them after a quiet spell (a
        clone costs more than a spawn, a cgroup2 move then far more), `spawned` from within them during a run
        of jobs."""
        now = time.monotonic()
        quiet, self.last_spawn = now - self.last_spawn >= self.quiet_seconds, now
        cells = [(descriptor, os.fstat(descriptor)) for descriptor in placement]
        cgroup2 = [descriptor for descriptor, info in cells if stat.S_ISDIR(info.st_mode)]
        if len(cgroup2) > 1:
            raise OSError(errno.EINVAL, "a job has one cgroup2 directory")
        if quiet and cgroup2 and self.can_clone_into_cgroup:
            tasks = [descriptor for descriptor in placement if descriptor not in cgroup2]
            try:
                return self.clone(request, stdout, stderr, cgroup2[0], tasks), CLONED
            except _NoCloneIntoCgroup:
                self.can_clone_into_cgroup = False
        return self.spawn_from_cells(request, stdout, stderr, cells), SPAWNED

    def spawn_from_cells(self, request: tuple, stdout: int, stderr: int,
                         cells: Sequence[tuple[int, os.stat_result]]) -> int:
        """Join the job's cells (descriptors with what fstat says of them), posix_spawn the job as the job user,
        come back."""
        cwd, umask, uid, gid, argv, env = request
        returns = [self._home_of(info) for _, info in cells]
        joined: list[int] = []
        try:
            # In the job's cgroups before the child exists: it starts there, before any job code runs.
            for (descriptor, info), home in zip(cells, returns):
                _join(descriptor, stat.S_ISDIR(info.st_mode))
                joined.append(home)
            os.chdir(cwd)
            wanted = umask if umask is not None else self.own_umask
            if wanted != self.umask:
                os.umask(wanted)
                self.umask = wanted
            switched = uid is not None
            try:
                if switched:
                    # Real ids only: RESETIDS makes them the child's effective ids before its exec.
                    os.setresgid(gid, -1, -1)
                    os.setresuid(uid, -1, -1)
                executable = _executable(argv[0], env)
                return os.posix_spawn(
                    executable, argv, env, resetids=True, setsid=True, setsigdef=self.defaults, setsigmask=(),
                    file_actions=[(os.POSIX_SPAWN_DUP2, self.devnull, 0), (os.POSIX_SPAWN_DUP2, stdout, 1),
                                  (os.POSIX_SPAWN_DUP2, stderr, 2)])
            finally:
                if switched:
                    self._take_back_ids()
        finally:
            os.chdir("/")
            for home in joined:
                os.write(home, b"0")

    def clone(self, request: tuple, stdout: int, stderr: int, cgroup2: int, tasks: Sequence[int]) -> int:
        """Clone the job's first process into its cgroup2 directory; the child joins the v1 cells, takes the job
        user's ids and execs. The launcher itself moves nowhere and keeps its ids."""
        child = _Child(self, request, stdout, stderr, tasks)
        report_read, report_write = os.pipe()  # close-on-exec: it reads empty once the child has exec'd
        try:
            pid = _clone_into(cgroup2)
            if pid == 0:
                child.become_job(report_write)  # never returns
        except BaseException:
            os.close(report_read)  # no child: nothing will be reported
            raise
        finally:
            os.close(report_write)
        try:
            failure = _read_all(report_read)
        finally:
            os.close(report_read)
        if failure:
            code = int(failure)
            raise OSError(code, os.strerror(code))  # the child has exited; its end is reaped, for no one
        return pid

    def _home_of(self, cell: os.stat_result) -> int:
        home = self.homes.get(cell.st_dev)
        if home is None:
            raise OSError(errno.EXDEV, "the launcher has no cgroup of its own in that hierarchy to come back to")
        return home

    def _take_back_ids(self) -> None:
        try:
            os.setresuid(self.uid, -1, -1)
            os.setresgid(self.gid, -1, -1)
        except OSError as error:
            # Never serve another job as someone else.
            _fatal(f"could not take back its own ids: {error}")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            channel = self.children.pop(pid, None)
            if channel is not None:
                _tell(channel, b"exit %d" % os.waitstatus_to_exitcode(status))
                os.close(channel)


def _carry_out(step: TidyStep, parent: int) -> None:
    if step.remove:
        try:
            os.rmdir(step.remove, dir_fd=parent)
        except FileNotFoundError:
            pass
    if step.make:
        os.mkdir(step.make, dir_fd=parent)
        for name, text in step.writes:
            descriptor = os.open(f"{step.make}/{name}", os.O_WRONLY | os.O_CLOEXEC, dir_fd=parent)
            try:
                os.write(descriptor, text.encode())
            finally:
                os.close(descriptor)


def _join(placement: int, directory: bool) -> None:
    """Move this (single-threaded) process into a cell: a cgroup2 directory's `cgroup.procs`, a v1 `tasks` file."""
    if directory:
        procs = os.open("cgroup.procs", os.O_WRONLY | os.O_CLOEXEC, dir_fd=placement)
        try:
            os.write(procs, b"0")
        finally:
            os.close(procs)
    else:
        os.write(placement, b"0")


class _Child:
    """What a cloned job's first process does before its exec: everything that makes it the job's."""

    def __init__(self, server: _Server, request: tuple, stdout: int, stderr: int, tasks: Sequence[int]) -> None:
        self.server = server
        self.cwd, self.umask, self.uid, self.gid, self.argv, self.env = request
        self.stdout, self.stderr, self.tasks = stdout, stderr, tasks

    def become_job(self, report: int) -> None:
        """In the child, never returning; an error before the exec is written to `report` as its errno."""
        code = errno.EINVAL
        try:
            for descriptor in self.tasks:
                os.write(descriptor, b"0")  # its one thread into the v1 cells
            signal.set_wakeup_fd(-1)
            for number in self.server.defaults | {signal.SIGCHLD}:
                signal.signal(number, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            os.setsid()
            os.dup2(self.server.devnull, 0)
            os.dup2(self.stdout, 1)
            os.dup2(self.stderr, 2)
            os.chdir(self.cwd)
            os.umask(self.umask if self.umask is not None else self.server.own_umask)
            if self.uid is not None:
                os.setresgid(self.gid, self.gid, self.gid)
                os.setresuid(self.uid, self.uid, self.uid)
            os.execve(_executable(self.argv[0], self.env), self.argv, self.env)
        except OSError as error:
            code = error.errno or errno.EIO
        except BaseException:
            pass
        try:
            os.write(report, b"%d" % code)
        finally:
            os._exit(127)


class _NoCloneIntoCgroup(Exception):
    """This kernel, or its seccomp filter, has no clone3 with CLONE_INTO_CGROUP."""


# clone3 with CLONE_INTO_CGROUP (Linux 5.7): a fork whose child starts in the cgroup2 directory given.
_CLONE_INTO_CGROUP = 0x200000000
_CLONE3 = {"x86_64": 435, "aarch64": 435}.get(platform.machine())
# What clone3 answers where it cannot clone into a cgroup: absent, refused by a filter, or too old for the flag.
_NO_CLONE_INTO_CGROUP = {errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG}


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls", "set_tid",
        "set_tid_size", "cgroup")]


if _CLONE3 is not None:
    # PyDLL keeps the interpreter lock across the call: the child comes back holding it, as its only thread.
    _syscall = ctypes.PyDLL(None, use_errno=True).syscall
    _syscall.restype = ctypes.c_long
    _syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]


def _clone_into(cgroup: int) -> int:
    """Fork into `cgroup`: 0 in the child. Only for a single-threaded process, as the launcher is (no other
    thread's locks are copied mid-use)."""
    arguments = _CloneArgs(flags=_CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup)
    pid = _syscall(_CLONE3, ctypes.byref(arguments), ctypes.sizeof(arguments))
    if pid < 0:
        code = ctypes.get_errno()
        if code in _NO_CLONE_INTO_CGROUP:
            raise _NoCloneIntoCgroup(os.strerror(code))
        raise OSError(code, os.strerror(code))
    return pid


def _read_all(descriptor: int) -> bytes:
    chunks = []
    while chunk := os.read(descriptor, 64):
        chunks.append(chunk)
    return b"".join(chunks)


def _executable(name: str, env: Mapping[str, str]) -> str:
    """argv[0] looked up in the job's own PATH, as the job user (access() checks the real ids)."""
    if "/" in name:
        return name
    found_unusable = False
    for directory in env.get("PATH", os.defpath).split(os.pathsep):
        candidate = f"{directory}/{name}" if directory else name
        if os.path.isfile(candidate):
            if os.access(candidate, os.X_OK):
                return candidate
            found_unusable = True
    code = errno.EACCES if found_unusable else errno.ENOENT
    raise OSError(code, os.strerror(code))


def _text(message: str) -> bytes:
    return message.encode(errors="backslashreplace")


def _tell(channel: int, message: bytes) -> None:
    try:
        os.write(channel, message)  # SIGPIPE is ignored here: a job side that has gone is an EPIPE
    except OSError:
        pass  # the job's side has gone: nobody is left to tell


def _drain(descriptor: int) -> None:
    try:
        while os.read(descriptor, 512):
            pass
    except BlockingIOError:
        pass


def _fatal(message: str) -> None:
    sys.stderr.write(f"server-responder launcher: {message}\n")
    sys.stderr.flush()
    os._exit(70)


def _become_launcher(parent: int) -> None:
    """What every job inherits from the launcher, and what keeps the launcher itself out of their reach."""
    if privileges.prctl(privileges.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != parent:
        _fatal("its service is gone")
    if privileges.prctl(privileges.PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        _fatal("could not make itself non-dumpable")
    if privileges.prctl(privileges.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _fatal("could not set no_new_privs")
    try:
        privileges.keep_no_capabilities_across_exec()
    except OSError as error:
        _fatal(str(error))
    try:
        os.setgroups([])
    except PermissionError:
        pass  # an unprivileged service: its jobs keep its groups, as they would from the service itself
    # It ends with the service (its death signal) or when the service closes the control socket, not on a
    # terminal's or a stop's signals, which would fail the jobs it is running before the service interrupts them.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a job's side gone is an error on a write, not the launcher's end
    os.chdir("/")


def main(arguments: Sequence[str]) -> None:
    control_fd, parent, cpus, quiet_seconds, *homes = arguments
    _become_launcher(int(parent))
    if cpus != "-":
        unpin_this_process(frozenset(int(cpu) for cpu in cpus.split(",")))
    control = socket.socket(fileno=int(control_fd))
    control.set_inheritable(False)
    try:
        server = _Server(control, homes, float(quiet_seconds))
    except OSError as error:
        _fatal(f"could not open its own cgroups: {error}")
    server.run()


if __name__ == "__main__":
    main(sys.argv[1:])
