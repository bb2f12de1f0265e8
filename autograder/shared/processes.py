"""The lab's background processes, stopped and found one way everywhere (psutil, not /proc)."""

from __future__ import annotations

import atexit
import io
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import psutil


def stop(process: subprocess.Popen | int, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL once `grace` seconds pass; a process already gone is fine."""
    try:
        target = psutil.Process(process if isinstance(process, int) else process.pid)
        target.terminate()
        target.wait(grace)
    except psutil.TimeoutExpired:
        target.kill()
        target.wait()
    except psutil.NoSuchProcess:
        pass
    if isinstance(process, subprocess.Popen):
        process.wait()  # reap it, so no zombie stays behind


def kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants, also in sessions of their own (a kernel's)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass


def kill_uid(uid: int) -> None:
    """SIGKILL every process running as `uid`: what a jailed kernel left running is found so."""
    for process in psutil.process_iter(["uids"]):
        try:
            if process.info["uids"] and process.info["uids"].real == uid:
                process.kill()
        except psutil.NoSuchProcess:
            pass


def run_as_main(main: Callable[[], object], args: list[str], first_path: str | None) -> NoReturn:
    """In a forked interpreter, run `main` as `python` would.

    Its sys.argv and sys.path[0], unbuffered output, its atexit handlers and its exit code. With
    `first_path` None, sys.path is left as it is.
    """
    sys.argv = list(args)
    if first_path is not None:
        sys.path.insert(0, first_path)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = io.TextIOWrapper(
            io.FileIO(fd, "w", closefd=False), write_through=True, errors="backslashreplace"
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    code = 0
    try:
        main()
    except SystemExit as leaving:
        code = leaving.code if isinstance(leaving.code, int) else (0 if leaving.code is None else 1)
        if not isinstance(leaving.code, (int, type(None))):
            print(leaving.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    os._exit(code)


class PidFile:
    """A daemon's pid on disk, believed only while that pid runs a command containing `marker`."""

    def __init__(self, path: Path, marker: str) -> None:
        self.path, self.marker = path, marker

    def write(self, pid: int | None = None) -> None:
        self.path.write_text(str(pid or os.getpid()))

    def read(self) -> int | None:
        """The live daemon's pid, or None (no file, a stale pid, or a reused pid running other)."""
        try:
            pid = int(self.path.read_text())
            running = " ".join(psutil.Process(pid).cmdline())
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return pid if self.marker in running else None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
