"""How the practice runtime starts a pod's container: a process with no more rights than the student's code.

Run by a user, a container is that user's own process (the student's own code, with their rights),
limited by rlimits and given a clean environment. Run as root (the grader, CI), it is started as
`unshare --mount --net python -I -m autograder.practice.container ...`: in its own network
namespace (only its loopback: no API server, etcd or network to reach), with the grader's home
covered by an empty tmpfs (kubeconfigs, certificates, caches), then dropped by `setpriv` to a uid
of its own without capabilities. The pod spec's volumes, hostNetwork, privileged and
securityContext are never honoured, so none of them can widen that.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pwd
import resource
import socket
import sys
import zlib
from pathlib import Path

from autograder import isolation

CLONE_NEWNET = 0x40000000
POD_UID_BASE = 1_800_000_000
POD_GID = 65534  # nogroup
LIMITS = {
    resource.RLIMIT_AS: 2 * 2**30,  # the model server (flask, numpy) needs ~150 MiB
    resource.RLIMIT_NPROC: 256,  # per uid: each pod has its own uid when isolated
    resource.RLIMIT_FSIZE: 64 * 2**20,
    resource.RLIMIT_NOFILE: 1024,
    resource.RLIMIT_CORE: 0,
}
# Outside the home: shared scratch space gets a fresh tmpfs, credentials are covered.
SCRATCH = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"))
SECRETS = (Path("/etc/kubernetes"), Path("/var/run/docker.sock"), Path("/run/docker.sock"))
# Programs a container's command may name, as the image's PATH would find them.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def isolated() -> bool:
    """Whether containers get their own uid and network namespace: only root can, and must."""
    return os.geteuid() == 0


def isolation_summary() -> str:
    """What separates the pods' containers from the user running the practice cluster, in plain words."""
    if isolated():
        return ("pod containers are isolated: each runs as a uid of its own without capabilities, in its own "
                "network namespace (loopback only), with a private /tmp and the home and credentials covered")
    return (f"pod containers are not isolated: not root, so they run as this user's own processes (uid "
            f"{os.getuid()}), limited in memory, file sizes and open files, with this user's rights and network")


def pod_uid(pod_uid_text: str) -> int:
    """A uid per pod: RLIMIT_NPROC and file rights then separate the pods of different students."""
    return POD_UID_BASE + zlib.crc32(pod_uid_text.encode()) % 10**8


def limit() -> None:
    """Bound the container's memory, tasks, file sizes and open files, and stop it when the runtime dies."""
    for kind, value in LIMITS.items():
        # RLIMIT_NPROC counts every task of the uid: only a pod's own uid may be bounded by it.
        if kind != resource.RLIMIT_NPROC or isolated():
            resource.setrlimit(kind, (value, value))
    isolation.die_with_parent()


def argv(command: list[str], uid: int, workdir: Path) -> list[str]:
    """The full command line that starts `command` as a container, isolated when the runtime is root."""
    command = [sys.executable if command[0] in ("python", "python3", "python3.11") else command[0], *command[1:]]
    if not isolated():
        return command
    return ["unshare", "--mount", "--net", "--propagation", "private", sys.executable, "-I", "-m",
            "autograder.practice.container", "--uid", str(uid), "--workdir", str(workdir), "--", *command]


def _cover(keep: list[Path], workdir: Path) -> None:
    """Inside the new mount namespace: an empty home over the grader's and a private /tmp, /var/tmp and
    /dev/shm (no file the grader or another pod left there), with only `keep` put back, and no
    credential outside the home."""
    home = Path(pwd.getpwuid(os.getuid()).pw_dir).resolve()  # $HOME is already the container's
    if home != Path("/") and home.is_dir():
        isolation.cover(home, "size=1m,mode=755", keep, writable=workdir)
    for path in SCRATCH:
        if path.is_dir():
            isolation.cover(path, "size=64m,mode=1777", keep, writable=workdir)
    for path in SECRETS:
        if path.is_dir():
            isolation.mount("-t", "tmpfs", "-o", "size=4k,mode=000", "hidden", str(path))
        elif path.exists():
            isolation.mount("--bind", "/dev/null", str(path))


def connect(pid: int | None, port: int, timeout: float) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` as the container with `pid` sees it (its own loopback when isolated)."""
    if pid is None or not isolated():
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as own, open(f"/proc/{pid}/ns/net") as theirs:
        # Namespaces belong to a thread: enter theirs, make the socket there, come back.
        if libc.setns(theirs.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"cannot enter the network of process {pid}")
        try:
            sock = socket.socket()
        finally:
            libc.setns(own.fileno(), CLONE_NEWNET)
    sock.settimeout(timeout)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def _inside(uid: int, workdir: Path, command: list[str]) -> None:
    """In the new namespaces, still root: loopback up, home covered, limits set; then become the pod's uid."""
    isolation.loopback_up()
    _cover([Path(sys.prefix), Path(sys.base_prefix), workdir], workdir)
    limit()
    os.chdir(workdir)
    os.execvp("setpriv", [*isolation.unprivileged(uid, POD_GID), *command])


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -I -m autograder.practice.container", description=__doc__)
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(arguments)
    _inside(args.uid, args.workdir, args.command)
    return 127


if __name__ == "__main__":
    sys.exit(main())
