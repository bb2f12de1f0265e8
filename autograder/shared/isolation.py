"""Linux isolation primitives shared by the grading jail and the practice cluster's containers.

Both start code the grader does not trust (a student's kernel, a pod's command) as root inside
fresh namespaces, cover what it must not see, and then drop to an unprivileged uid.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
MNT_DETACH = 2
CLONE_NEWNS, CLONE_NEWPID, CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 24, 38, 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAPABILITY_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
# Programs an isolated process may name, as a container image's PATH would find them.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OSError(
            f"mount {' '.join(args)}: {done.stderr.strip() or f'exit code {done.returncode}'}"
        )


def unshare(flags: int) -> None:
    """Fresh namespaces for this process (a new PID namespace holds its next child)."""
    libc = ctypes.CDLL(None, use_errno=True)
    _checked(libc.unshare(flags), "make new namespaces")
    if flags & CLONE_NEWNS:  # nothing mounted below may reach the namespace it came from
        _checked(
            libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make the mounts private"
        )


def own_mounts() -> None:
    """A private mount namespace for this process: its mounts never show on the host, go with it."""
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
_forker = (
    os.getppid()
)  # in each fork's child: the pid of the process that forked it, as that one saw itself
os.register_at_fork(before=_note_forker, after_in_child=_take_forker)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Outside a PID namespace nothing else would stop this process when its starter dies.

    The parent may die before this call, and then no signal would ever come: this process stops now.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    parent = os.getppid()
    if parent not in (
        _forker,
        0,
    ):  # 0: the parent is outside this PID namespace, where its pid is not seen
        os.kill(os.getpid(), sig)


def loopback_up() -> None:
    """A new network namespace starts with loopback down; what runs inside listens on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as handle:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(handle, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(handle, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))


# What every program needs of the system, read-only: its programs, libraries and
# settings. No /home, /root, /srv, /var, /run, /opt or /mnt: a course, a grader's files
# or another student's are not there.
SYSTEM_TREES = tuple(
    Path(name) for name in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
)
ROOT_TMPFS = "size=1m,mode=755"


@dataclass(frozen=True)
class Root:
    """An allowlisted filesystem: system trees, `keep` read-only, `writable`, tmpfs in `scratch`."""

    keep: tuple[Path, ...]
    writable: Path | None = None
    scratch: tuple[tuple[Path, str], ...] = ()  # (path, tmpfs options): empty and private
    hidden: tuple[Path, ...] = ()  # inside a kept tree, yet not to be seen: covered
    shared: tuple[Path, ...] = ()  # writable too, beside `writable` (a class's nbgrader exchange)


def enter_root(root: Root) -> None:
    """In fresh mount namespaces, as root: make `root` this process's whole filesystem (pivot_root).

    Whatever is not kept is gone, not covered: no path leads to the course, the grader's home or
    another student's files, however it is spelled. Each kept path is bound at its own path through
    a handle taken before anything is mounted; every mount is read-only but `writable`.
    """
    trees = [tree for tree in SYSTEM_TREES if tree.is_dir() and not tree.is_symlink()]
    links = {tree: os.readlink(tree) for tree in SYSTEM_TREES if tree.is_symlink()}
    writable = [path for path in (root.writable, *root.shared) if path is not None]
    for path in writable:
        mount("--bind", str(path), str(path))  # a mount of its own, left writable
    _read_only_everywhere(but=writable)
    kept = _outermost([path.resolve() for path in (*trees, *root.keep) if path.exists()], writable)
    handles = {
        path: (os.open(path, os.O_PATH), path.is_dir()) for path in kept
    }  # before /tmp is covered
    staging = Path(
        "/tmp"
    )  # any folder will do: it is mounted over, and the process leaves it for the new root
    mount("-t", "tmpfs", "-o", ROOT_TMPFS, "jail-root", str(staging))
    for special in (Path("/proc"), Path("/sys"), Path("/dev")):
        (staging / special.name).mkdir()
        mount("--rbind", str(special), str(staging / special.name))
    for tree, target in links.items():
        (staging / tree.name).symlink_to(target)
    for (
        path,
        options,
    ) in root.scratch:  # before the kept paths: some may lie below them (a folder in /tmp)
        place = staging / path.relative_to("/")
        place.mkdir(parents=True, exist_ok=True)
        mount("-t", "tmpfs", "-o", options, "scratch", str(place))
    for path, (handle, folder) in sorted(handles.items(), key=lambda item: len(item[0].parts)):
        _bind_through(handle, staging / path.relative_to("/"), folder)
    for path in root.hidden:
        _hide(staging / path.relative_to("/"))
    mount("-o", "remount,bind,ro", str(staging))
    os.chdir(staging)
    subprocess.run([pivot_root() or "pivot_root", ".", "."], check=True, capture_output=True)
    _checked(ctypes.CDLL(None, use_errno=True).umount2(b".", MNT_DETACH), "let go of the old root")
    os.chdir("/")


def pivot_root() -> str | None:
    """util-linux's pivot_root, wherever the system keeps it (an isolated PATH may lack sbin)."""
    return shutil.which("pivot_root", path="/usr/sbin:/sbin:/usr/bin:/bin")


def _mount_points() -> list[str]:
    """This namespace's mount points, in /proc/self/mountinfo's order."""
    with open("/proc/self/mountinfo") as table:
        return [line.split()[4].replace("\\040", " ") for line in table]


def _read_only_everywhere(but: list[Path]) -> None:
    """Every mount of this namespace read-only (but some): binds from them and submounts too.

    A mount the host takes away meanwhile (a container that ended: its overlay leaves this
    namespace too) is skipped; any other failure raises.
    """
    spared = {str(path) for path in but}
    for point in dict.fromkeys(_mount_points()):
        if not point.startswith(PSEUDO_FILESYSTEMS) and point not in spared:
            try:
                mount("-o", "remount,bind,ro", point)
            except OSError:
                if point in _mount_points():
                    raise


def _outermost(paths: list[Path], writable: list[Path]) -> list[Path]:
    """The paths no other one holds (a bind shows what is below it), and each `writable` alone."""
    ordered = sorted(set(paths), key=lambda path: len(path.parts))
    kept: list[Path] = []
    for path in ordered:
        if not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return [*kept, *(path.resolve() for path in writable)]


def _bind_through(handle: int, target: Path, folder: bool) -> None:
    """Bind what `handle` was opened on (a `folder` or file), with mounts below it, at `target`."""
    if folder:
        target.mkdir(parents=True, exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    mount("--no-canonicalize", "--rbind", f"/proc/{os.getpid()}/fd/{handle}", str(target))
    os.close(handle)


def _hide(path: Path) -> None:
    """Cover a secret inside a kept tree: an empty, unreadable folder or an empty file."""
    if path.is_dir():
        mount("-t", "tmpfs", "-o", "size=4k,mode=000", "hidden", str(path))
    elif path.exists():
        mount("--bind", "/dev/null", str(path))


def drop_privileges(uid: int, gid: int) -> None:
    """In this process, what `unprivileged` does for a command.

    `uid`, no groups, no capability ever again.

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
    status = dict(
        line.split(":\t", 1)
        for line in Path("/proc/self/status").read_text().splitlines()
        if ":\t" in line
    )
    kept = [name for name in CAPABILITY_FIELDS if int(status[name], 16)]
    if kept or status["NoNewPrivs"].strip() != "1" or os.getuid() != uid:
        raise PermissionError(f"privileges not dropped: {kept or status['NoNewPrivs']}")


def renounce_capabilities() -> None:
    """Every capability given up for good, uid kept: root becomes an ordinary user of its files."""
    libc = ctypes.CDLL(None, use_errno=True)
    _empty_bounding_set(libc)
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    _checked(libc.capset(header, (ctypes.c_uint32 * 6)()), "clear the capabilities")


def _empty_bounding_set(libc: ctypes.CDLL) -> None:
    """No program this process starts can gain a capability, whatever its uid or setuid bit."""
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    for capability in range(last + 1):
        _checked(
            libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0),
            "drop a capability from the bounding set",
        )
    _checked(
        libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0),
        "clear the ambient capabilities",
    )


def _checked(result: int, what: str) -> None:
    if result != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"cannot {what}: {os.strerror(error)}")


def unprivileged(uid: int, gid: int) -> list[str]:
    """The command prefix that runs a program as `uid`, with no capability it could ever regain."""
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--bounding-set=-all",
        "--inh-caps=-all",
        "--no-new-privs",
        "--",
    ]
