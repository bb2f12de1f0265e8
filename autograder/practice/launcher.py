"""A warm start for pods' containers: a fork server that imported the model server's libraries once.

A container used to be a new interpreter that imported Flask and numpy again: about 0.3 CPU-s for
each of the ~60 pods a graded submission starts. The launcher is one interpreter, started by the
runtime before any pod exists, that imports those libraries (never a pod's own code). Each
container is a fork of it that isolates itself (autograder/practice/container.py: namespaces,
covers, limits, its own uid) and then runs the pod's command: in the forked interpreter when the
command is `python <script>` or `python -m <module>`, by exec otherwise. The launcher reaps its
children and tells the runtime how each one ended.

Wire format, over a SOCK_SEQPACKET socket pair: the runtime sends `{"id", "argv", "env", "cwd",
"uid"}` with the container's stdout and stderr as passed file descriptors; the launcher answers
`{"id", "pid"}` or `{"id", "error"}`, and later `{"id", "exited": code}` (negative: a signal).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import runpy
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO, NoReturn, TypeVar

from autograder import isolation, processes
from autograder.practice import container

logger = logging.getLogger(__name__)
T = TypeVar("T")

PRELOADED = ("flask", "numpy")  # what the lesson's model server imports; libraries only, never an app
MESSAGE_SIZE = 1 << 20
# The launcher's own environment: one BLAS thread, so no thread exists when it forks.
LAUNCHER_ENV = {"PATH": isolation.SYSTEM_PATH, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class LaunchError(OSError):
    """The launcher could not start a container's process (no such program, no launcher)."""


class Launched:
    """A container's main process as the runtime sees it: the part of `subprocess.Popen` it uses."""

    def __init__(self, launcher: Launcher, ident: int, pid: int, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid, self.stdout, self.stderr = pid, stdout, stderr
        self.returncode: int | None = None
        self._launcher, self._ident = launcher, ident

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._launcher.exit_code(self._ident, timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        if self.returncode is None:
            self.returncode = self._launcher.exit_code(self._ident, timeout=timeout)
        return self.returncode

    def signal_group(self, number: int) -> None:
        """Signal the container's every process: its session's group, which this process leads."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, number)


class Launcher:
    """The runtime's end: starts the launcher on first use (and again if it died), spawns, learns exits."""

    def __init__(self) -> None:
        self._channel: socket.socket | None = None
        self._requests = threading.Lock()
        self._changed = threading.Condition()
        self._replies: dict[int, dict] = {}
        self._exits: dict[int, int] = {}
        self._running: set[int] = set()
        self._pending: set[int] = set()
        self._next = 0
        with self._requests:
            self._connected()  # now, from the thread that made it: the launcher dies with that thread

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path, uid: int | None) -> Launched:
        """Start `argv` as a container's process: isolated as `uid` when given, else as this user."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            with self._requests:
                channel = self._connected()
                self._next += 1
                ident = self._next
                with self._changed:
                    self._pending.add(ident)
                request = {"id": ident, "argv": argv, "env": env, "cwd": str(cwd), "uid": uid}
                socket.send_fds(channel, [json.dumps(request).encode()], [out_w, err_w])
            reply = self._await(lambda: self._replies.pop(ident, None), timeout=60)
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        if reply is None or "error" in reply:
            os.close(out_r)
            os.close(err_r)
            raise LaunchError((reply or {}).get("error", "the launcher did not answer"))
        return Launched(self, ident, reply["pid"], open(out_r, "rb"), open(err_r, "rb"))

    def exit_code(self, ident: int, timeout: float | None) -> int | None:
        """How process `ident` ended, once it has; None while it runs."""
        return self._await(lambda: self._exits.pop(ident, None), timeout)

    def _await(self, found: Callable[[], T | None], timeout: float | None) -> T | None:
        """The first thing `found` returns that is not None, within `timeout` (None: wait for ever)."""
        results: list[T] = []

        def arrived() -> bool:
            if not results and (value := found()) is not None:
                results.append(value)
            return bool(results)

        with self._changed:
            self._changed.wait_for(arrived, timeout)
        return results[0] if results else None

    def _connected(self) -> socket.socket:
        if self._channel is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            subprocess.Popen([sys.executable, "-I", "-m", "autograder.practice.launcher", "--fd", str(theirs.fileno())],
                             pass_fds=[theirs.fileno()], env=LAUNCHER_ENV, cwd="/", stdin=subprocess.DEVNULL,
                             preexec_fn=isolation.die_with_parent)
            theirs.close()
            self._channel = ours
            threading.Thread(target=self._listen, args=(ours,), daemon=True, name="launcher").start()
        return self._channel

    def _listen(self, channel: socket.socket) -> None:
        """Route the launcher's messages; if it dies, its containers died with it."""
        while message := _received(channel):
            answer = json.loads(message)
            with self._changed:
                if "exited" in answer:
                    self._exits[answer["id"]] = answer["exited"]
                    self._running.discard(answer["id"])
                else:
                    self._pending.discard(answer["id"])
                    self._replies[answer["id"]] = answer
                    if "pid" in answer:
                        self._running.add(answer["id"])
                self._changed.notify_all()
        logger.warning("the pod launcher ended; a new one starts with the next container")
        with self._requests, self._changed:
            channel.close()
            self._channel = None
            for ident in self._running:
                self._exits[ident] = -signal.SIGKILL  # the launcher's children die with it
            self._running.clear()
            for ident in self._pending:
                self._replies[ident] = {"error": "the pod launcher ended before it started the container"}
            self._changed.notify_all()


def _received(channel: socket.socket) -> bytes:
    try:
        return channel.recv(MESSAGE_SIZE)
    except OSError:
        return b""


def serve(channel: socket.socket) -> None:
    """The launcher's loop: fork a container per request, report each child's end, stop with the runtime."""
    waker, wake = os.pipe()
    os.set_blocking(wake, False)
    signal.set_wakeup_fd(wake)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([channel.fileno(), waker], [], [])
        if waker in readable:
            with suppress(BlockingIOError):
                os.read(waker, 4096)
        if channel.fileno() in readable:
            message, fds, _, _ = socket.recv_fds(channel, MESSAGE_SIZE, 2)
            if not message:
                return
            request = json.loads(message)
            try:
                pid = _fork(request, *fds)
            except OSError as error:
                channel.send(json.dumps({"id": request["id"], "error": str(error)}).encode())
            else:
                children[pid] = request["id"]
                channel.send(json.dumps({"id": request["id"], "pid": pid}).encode())
            finally:
                for fd in fds:
                    os.close(fd)
        _reap(channel, children)  # every time: a child may have ended before it was listed


def _reap(channel: socket.socket, children: dict[int, int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            channel.send(json.dumps({"id": children.pop(pid), "exited": os.waitstatus_to_exitcode(status)}).encode())


def _fork(request: dict, stdout: int, stderr: int) -> int:
    program = request["argv"][0]
    if shutil.which(program, path=request["env"].get("PATH")) is None:
        raise LaunchError(f'exec: "{program}": executable file not found in $PATH')
    pid = os.fork()
    if pid == 0:
        _child(request, stdout, stderr)
    return pid


def _child(request: dict, stdout: int, stderr: int) -> NoReturn:
    """In the fork: own session, stdio, nothing else open; isolated; then the pod's command."""
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        workdir = Path(request["cwd"])
        if request["uid"] is None:
            container.limit()
            os.chdir(workdir)
        else:
            container.isolate(request["uid"], workdir)
        _run(request["argv"], request["env"])
    except BaseException:
        with suppress(BaseException):
            os.write(2, traceback.format_exc().encode())
    os._exit(127)


def _run(argv: list[str], env: dict[str, str]) -> NoReturn:
    """The pod's command: a Python script or module in this interpreter, anything else by exec."""
    os.environ.clear()
    os.environ.update(env)
    program, *args = argv
    python_settings = [name for name in env if name.startswith("PYTHON") and name != "PYTHONUNBUFFERED"]
    if program == sys.executable and args and not python_settings:
        if args[0] == "-m" and len(args) > 1:
            processes.run_as_main(lambda: runpy.run_module(args[1], run_name="__main__", alter_sys=True),
                        [args[1], *args[2:]], os.getcwd())
        if not args[0].startswith("-"):
            processes.run_as_main(lambda: runpy.run_path(args[0], run_name="__main__"), args,
                        os.path.dirname(os.path.abspath(args[0])))
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)  # as a new process starts: Python ignores them
    os.execvpe(program, argv, env)


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -I -m autograder.practice.launcher", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="this end of the runtime's socket pair")
    args = parser.parse_args(arguments)
    for name in PRELOADED:
        with suppress(ImportError):
            importlib.import_module(name)
    serve(socket.socket(fileno=args.fd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
