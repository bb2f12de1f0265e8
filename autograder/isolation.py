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
from pathlib import Path

PR_SET_PDEATHSIG = 1
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Outside a PID namespace nothing else would stop this process when the one that started it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


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


def unprivileged(uid: int, gid: int) -> list[str]:
    """The command prefix that runs a program as `uid`, with no capability it could ever regain."""
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--bounding-set=-all",
            "--inh-caps=-all", "--no-new-privs", "--"]
