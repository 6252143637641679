"""The process controls Python has no call for: prctl and the capability sets, through libc."""

from __future__ import annotations

import ctypes

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_libc = ctypes.CDLL(None, use_errno=True)
prctl = _libc.prctl
prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
capset = _libc.capset
_capget = _libc.capget


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


# Built once: the child between fork and exec may only make system calls, not build objects.
NO_CAPS_HEADER = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
NO_CAPS_DATA = (CapData * 2)()


def drop_all_capabilities() -> int:
    return capset(ctypes.byref(NO_CAPS_HEADER), NO_CAPS_DATA)


def errno() -> int:
    return ctypes.get_errno()


def keep_no_capabilities_across_exec() -> None:
    """Empty the ambient and inheritable sets: what this process runs gets none of its capabilities; its own
    effective and permitted sets stay."""
    if prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0:
        raise OSError(errno(), "could not clear the ambient capabilities")
    header = CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (CapData * 2)()
    if _capget(ctypes.byref(header), data) != 0:
        raise OSError(errno(), "could not read the capabilities")
    for half in data:
        half.inheritable = 0
    if capset(ctypes.byref(header), data) != 0:
        raise OSError(errno(), "could not clear the inheritable capabilities")
