"""Linux isolation primitives shared by the grading jail and the practice cluster's containers.

Both start code the grader does not trust (a student's kernel, a pod's command) as root inside
fresh namespaces, cover what it must not see, and then drop to an unprivileged uid.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAPABILITY_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def unshare(flags: int) -> None:
    """Fresh namespaces for this process (a new PID namespace holds its next child); new mounts stay private."""
    libc = ctypes.CDLL(None, use_errno=True)
    _checked(libc.unshare(flags), "make new namespaces")
    if flags & CLONE_NEWNS:  # nothing mounted below may reach the namespace it came from
        _checked(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make the mounts private")


def own_mounts() -> None:
    """A private mount namespace for this process: its mounts never show on the host and go with it."""
    unshare(CLONE_NEWNS)


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A fresh tmpfs on `path` while the block runs (call `own_mounts` first)."""
    mount("-t", "tmpfs", "-o", options, "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False, capture_output=True)


def _note_forker() -> None:
    global _forking
    _forking = os.getpid()


def _take_forker() -> None:
    global _forker
    _forker = _forking


_forking = 0
_forker = os.getppid()  # in each fork's child: the pid of the process that forked it, as that one saw itself
os.register_at_fork(before=_note_forker, after_in_child=_take_forker)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Outside a PID namespace nothing else would stop this process when the one that started it dies.

    The parent may die before this call, and then no signal would ever come: this process stops now.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    parent = os.getppid()
    if parent not in (_forker, 0):  # 0: the parent is outside this PID namespace, where its pid is not seen
        os.kill(os.getpid(), sig)


def loopback_up() -> None:
    """A new network namespace starts with loopback down; what runs inside listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as handle:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(handle, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(handle, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


def cover(top: Path, options: str, keep: list[Path], writable: Path | None = None,
          hidden: list[Path] | None = None) -> None:
    """Mount a fresh tmpfs on `top`, then mount back the kept paths below it (read-only but `writable`).

    A path, even canonicalized, would lead into the new tmpfs: keep a handle on each and mount it
    back through the handle itself, parents first. A bind carries no mounts from below it, so a
    path holding a hidden one is not kept.
    """
    hidden = hidden or []
    kept = sorted({path for path in (entry.resolve() for entry in keep if entry.exists())
                   if path.is_relative_to(top) and not any(h.is_relative_to(path) for h in hidden)},
                  key=lambda path: len(path.parts))
    handles = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in kept}
    mount("-t", "tmpfs", "-o", options, "covered", str(top))
    for path, handle in handles.items():
        path.mkdir(parents=True, exist_ok=True)
        mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{handle}", str(path))
        if path != writable:
            mount("-o", "remount,bind,ro", str(path))
        os.close(handle)


def drop_privileges(uid: int, gid: int) -> None:
    """In this process, what `unprivileged` does for a command: `uid`, no groups, no capability ever again.

    Checked afterwards in /proc: a process that kept any capability must not go on.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    _empty_bounding_set(libc)
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # setresuid empties the permitted and effective sets; the inheritable one is emptied here.
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    _checked(libc.capset(header, (ctypes.c_uint32 * 6)()), "clear the inheritable capabilities")
    _checked(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")
    status = dict(line.split(":\t", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":\t" in line)
    kept = [name for name in CAPABILITY_FIELDS if int(status[name], 16)]
    if kept or status["NoNewPrivs"].strip() != "1" or os.getuid() != uid:
        raise PermissionError(f"privileges not dropped: {kept or status['NoNewPrivs']}")


def renounce_capabilities() -> None:
    """Every capability given up for good, the uid kept: root becomes an ordinary user of its own files."""
    libc = ctypes.CDLL(None, use_errno=True)
    _empty_bounding_set(libc)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    _checked(libc.capset(header, (ctypes.c_uint32 * 6)()), "clear the capabilities")


def _empty_bounding_set(libc: ctypes.CDLL) -> None:
    """No program this process starts can gain a capability, whatever its uid or setuid bit."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for capability in range(last + 1):
        _checked(libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0), "drop a capability from the bounding set")
    _checked(libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear the ambient capabilities")


def _checked(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot {what}: {os.strerror(error)}")


def unprivileged(uid: int, gid: int) -> list[str]:
    """The command prefix that runs a program as `uid`, with no capability it could ever regain."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--bounding-set=-all",
            "--inh-caps=-all", "--no-new-privs", "--"]
