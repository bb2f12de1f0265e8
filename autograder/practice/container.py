"""How the practice runtime isolates a pod's container.

A process with no more rights than the student's code.

Run by a user, a container is that user's own process (the student's own code, with their rights),
limited by rlimits and given a clean environment. Run as root (the grader, CI), the container's
process (a fork of the launcher, autograder/practice/launcher.py) isolates itself before it runs
anything of the pod's: its own mount and network namespaces (only its loopback: no API server, etcd
or network to reach), a root of only the system's trees and the Python environment (no home, course
or other pod's files; isolation.enter_root), its working folder and scratch folders on small tmpfs
of its own (nothing it writes reaches the host's disk), then a uid of its own without capabilities.
The pod spec's volumes, hostNetwork, privileged and securityContext are never honoured, so none of
them can widen that.
"""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import socket
import sys
import zlib
from pathlib import Path

from autograder.shared import isolation

POD_UID_BASE = 1_800_000_000
POD_GID = 65534  # nogroup
LIMITS = {
    resource.RLIMIT_AS: 2 * 2**30,  # the model server (flask, numpy) needs ~150 MiB
    resource.RLIMIT_NPROC: 256,  # per uid: each pod has its own uid when isolated
    resource.RLIMIT_FSIZE: 64 * 2**20,
    resource.RLIMIT_NOFILE: 1024,
    resource.RLIMIT_CORE: 0,
}
# Scratch space of its own, empty and small; credentials in the system's trees are covered.
SCRATCH = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))
SCRATCH_TMPFS = "size=16m,nr_inodes=1024,mode=1777"
# The working folder (a copy of the image's app) is a tmpfs too: a container
# never writes the host's disk.
WORKDIR_TMPFS = "size=64m,nr_inodes=4096,mode=755"
SECRETS = (Path("/etc/kubernetes"), Path("/var/run/docker.sock"), Path("/run/docker.sock"))


def isolated() -> bool:
    """Whether containers get their own uid and network namespace: only root can, and must."""
    return os.geteuid() == 0


def isolation_summary() -> str:
    """What separates the pods' containers from the user running the practice cluster, plainly."""
    if isolated():
        return (
            "pod containers are isolated: each runs as a uid of its own without capabilities, in "
            "its own network namespace (loopback only), seeing only the system and the Python "
            "environment, writing only to small tmpfs of its own (working folder, /tmp)"
        )
    return (
        "pod containers are not isolated: not root, so they run as this user's own "
        f"processes (uid {os.getuid()}), limited in memory, file sizes and open files, with "
        "this user's rights and network"
    )


def pod_uid(pod_uid_text: str) -> int:
    """A uid per pod: RLIMIT_NPROC and file rights then separate the pods of different students."""
    return POD_UID_BASE + zlib.crc32(pod_uid_text.encode()) % 10**8


def limit() -> None:
    """Bound the container's memory, tasks, file sizes, open files; stop it if the runtime dies."""
    for kind, value in LIMITS.items():
        # RLIMIT_NPROC counts every task of the uid: only a pod's own uid may be bounded by it.
        if kind != resource.RLIMIT_NPROC or isolated():
            resource.setrlimit(kind, (value, value))
    isolation.die_with_parent()


def connect(pid: int | None, port: int, timeout: float) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` as process `pid` sees it (own loopback if isolated)."""
    if pid is None or not isolated():
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as own, open(f"/proc/{pid}/ns/net") as theirs:
        # Namespaces belong to a thread: enter theirs, make the socket there, come back.
        if libc.setns(theirs.fileno(), isolation.CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"cannot enter the network of process {pid}")
        try:
            sock = socket.socket()
        finally:
            libc.setns(own.fileno(), isolation.CLONE_NEWNET)
    sock.settimeout(timeout)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def _own_workdir(workdir: Path, uid: int) -> None:
    """Move the app's files onto a tmpfs of the container's own, owned by its uid."""
    handle = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        isolation.mount("-t", "tmpfs", "-o", WORKDIR_TMPFS, "workdir", str(workdir))
        shutil.copytree(f"/proc/self/fd/{handle}", workdir, symlinks=True, dirs_exist_ok=True)
    finally:
        os.close(handle)
    for path in [workdir, *workdir.rglob("*")]:
        os.chown(path, uid, POD_GID, follow_symlinks=False)


def isolate(uid: int, workdir: Path) -> None:
    """In the container's process, as root: namespaces, loopback, home hidden, limits, `uid`."""
    isolation.unshare(isolation.CLONE_NEWNS | isolation.CLONE_NEWNET)
    isolation.loopback_up()
    _own_workdir(workdir, uid)
    isolation.enter_root(
        isolation.Root(
            keep=(Path(sys.prefix), Path(sys.base_prefix)),
            writable=workdir,
            scratch=tuple((path, SCRATCH_TMPFS) for path in SCRATCH),
            hidden=SECRETS,
        )
    )
    limit()
    os.chdir(workdir)
    isolation.drop_privileges(uid, POD_GID)
    isolation.die_with_parent()  # a change of uid forgets the parent-death signal: set it again
