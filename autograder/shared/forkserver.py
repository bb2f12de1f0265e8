"""A warm start: one interpreter that imported a process's libraries once, forked for each process.

One server module for the grader and the practice pod runtime. A grading worker (nbgrader,
nbconvert, the kubernetes client) and a grading kernel (ipykernel, matplotlib, the kubernetes
client) each spend about 2 CPU-s importing before they do anything; a submission starts one worker
and ~8 kernels, and ~60 pods' containers (Flask, numpy: ~0.3 CPU-s each). The class run starts a
server for workers, each worker one for its kernels (grading/worker.py, grading/jail.py), and the
practice runtime one for its containers (practice/launcher.py). For each connection the server
forks a child, which forks the process asked for (`launch`: a worker, a jailed kernel, a container),
tells the client its pid and then how it ended. Only a client of the server's own uid may ask
(SO_PEERCRED: root alone for the grader's), and the socket lies in a folder only that uid may
enter; a client that goes away, or closes its connection, takes its process with it.

Wire format, over a SOCK_SEQPACKET unix socket, one connection per process: the client sends one
JSON request with the process's stdout and stderr as passed descriptors; the server's child answers
`{"pid": pid}` once the process runs (or `{"error": text}` when it could not start it), then
`{"exited": code}` (negative: a signal). The generic client is
`python -I -m autograder.shared.forkserver --socket PATH --module MODULE -- ARGS` (request
`{"argv": ARGS, "cwd", "env"}`); without a server it becomes `python -I -m MODULE ARGS`.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import gc
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from autograder.shared import isolation, processes, waiting

logger = logging.getLogger(__name__)
MESSAGE_SIZE = 1 << 20
SO_ACCEPTCON = 0x10000  # a socket's flag in /proc/net/unix once it listens
# `python -I -m MODULE ARGS` with FOLDER first on sys.path:
# `python -I -c RUN_FROM FOLDER MODULE ARGS`.
RUN_FROM = (
    "import runpy, sys; _, folder, module, *args = sys.argv; sys.path.insert(0, folder); "
    "sys.argv[:] = [module, *args]; runpy.run_module(module, run_name='__main__', alter_sys=True)"
)
# Run in the child that holds a connection: (request, stdout, stderr, the client's
# pid) -> the process's pid.
Launch = Callable[[dict, int, int, int], int]


def start(
    path: Path,
    module: str,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    import_from: Path | None = None,
) -> subprocess.Popen:
    """Start `python -I -m module --serve path` in a root-only folder; it dies with this thread.

    `import_from` goes first on its sys.path: the folder a caller imported this package from when
    -I would not find it (a classroom student's server has it from PYTHONPATH: the lab runtime).

    It runs in a session of its own: a Ctrl-C at the terminal is the caller's to handle (it stops
    the     server), not a KeyboardInterrupt in the server and in every process it forked.
    Returns once it listens (its clients then queue while it imports), or has ended: clients then
    start cold.
    """
    path.parent.mkdir(mode=0o700, exist_ok=True)
    path.unlink(missing_ok=True)  # a server that died left its socket: the new one binds afresh
    run = ["-m", module] if import_from is None else ["-c", RUN_FROM, str(import_from), module]
    server = subprocess.Popen(
        [sys.executable, "-I", *run, "--serve", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        cwd="/",
        env=env,
        start_new_session=True,
        preexec_fn=isolation.die_with_parent,
    )
    waiting.poll(
        lambda: listening(path),
        lambda listens: listens or server.poll() is not None,
        timeout,
        interval=0.02,
    )
    return server


@contextlib.contextmanager
def running(path: Path, module: str, env: dict[str, str] | None = None) -> Iterator[Path]:
    """A server (`start`) while the block runs; its socket's path."""
    server = start(path, module, env)
    try:
        yield path
    finally:
        processes.stop(server, grace=1)


@contextlib.contextmanager
def forked(path: Path, serve: Callable[[Path], NoReturn], timeout: float = 30) -> Iterator[Path]:
    """`running`, with the server a fork of this process: it starts with all this one imported.

    The fork keeps none of this process's open files, event loop or exit handlers; it dies with
    this thread.
    """
    path.parent.mkdir(mode=0o700, exist_ok=True)

    def server() -> NoReturn:
        # Nothing of this process's state that outlived its files: an event loop polling a closed
        # descriptor, exit handlers (temporary folders' clean-up) that are not the server's to run.
        asyncio.set_event_loop_policy(None)
        atexit._clear()
        serve(path)

    pid = fork_and_become(server, os.open(os.devnull, os.O_WRONLY), 2, "/")
    try:
        waiting.poll(
            lambda: listening(path),
            lambda listens: listens or os.waitpid(pid, os.WNOHANG)[0] != 0,
            timeout,
            interval=0.02,
        )
        yield path
    finally:
        processes.stop(pid, grace=1)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def listening(path: Path) -> bool:
    """Whether a server listens at `path`: bound only, it would refuse a client."""
    with open("/proc/net/unix") as table:
        next(table)  # Num RefCount Protocol Flags Type St Inode Path
        rows = (line.rstrip("\n").split(maxsplit=7) for line in table)
        return any(
            len(row) == 8 and int(row[3], 16) & SO_ACCEPTCON and row[7] == str(path) for row in rows
        )


def serve(path: Path, warm: Callable[[], None], launch: Launch) -> NoReturn:
    """The server: listen first (clients may queue), import, then fork a child per client."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    path.chmod(0o600)
    listener.listen(64)
    warm()
    # The imported objects stay shared with every fork instead of being copied by its collector.
    gc.freeze()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the children reap themselves
    while True:
        connection, _ = listener.accept()
        pid, uid = _peer(connection)
        if uid != os.geteuid():
            logger.warning(
                "fork server %s: refused a client running as uid %d (pid %d)", path, uid, pid
            )
        elif os.fork() == 0:
            listener.close()
            _answer(connection, pid, launch)
        connection.close()


class LaunchError(OSError):
    """The server could not start the process (no such program), refused the client, or ended."""


class Launched:
    """A process the server started for this client: its pid, and its exit code once it ended."""

    def __init__(self, connection: socket.socket, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._connection = connection

    def poll(self) -> int | None:
        return self.wait(timeout=0)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the process ends (None while it runs); a server's end killed it."""
        if self.returncode is None and readable([self._connection.fileno()], timeout):
            reply = _received(self._connection)
            self.returncode = json.loads(reply)["exited"] if reply else -signal.SIGKILL
            self.close()
        return self.returncode

    def close(self) -> None:
        """Let go of the process: the server kills it if it still runs."""
        self._connection.close()


def spawn(path: Path, request: dict, stdout: int, stderr: int) -> Launched | None:
    """Ask the server at `path` for `request`'s process with this output; None when none listens."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        return None
    try:
        socket.send_fds(connection, [json.dumps(request).encode()], [stdout, stderr])
        reply = json.loads(_received(connection) or b'{"error": "the server refused or ended"}')
    except BaseException:
        connection.close()
        raise
    if "error" in reply:
        connection.close()
        raise LaunchError(reply["error"])
    return Launched(connection, reply["pid"])


def ask(path: Path, request: dict) -> int | None:
    """The client: the process's exit code (127: it did not start); None when no server listens."""
    try:
        launched = spawn(path, request, 1, 2)
    except LaunchError:
        return 127
    if launched is None:
        return None
    try:
        return launched.wait()
    finally:
        launched.close()


def _received(connection: socket.socket) -> bytes:
    try:
        return connection.recv(MESSAGE_SIZE)
    except OSError:  # the server closed on us: it refused, or it ended
        return b""


def become(stdout: int, stderr: int, cwd: str | Path, env: dict[str, str] | None = None) -> None:
    """In a fork: the client's output, folder (and `env`, if given); none of the server's files."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the server's socket, the client's connection
    os.chdir(cwd)
    if env is not None:
        os.environ.clear()
        os.environ.update(env)


def fork_and_become(
    run: Callable[[], object],
    stdout: int,
    stderr: int,
    cwd: str | Path,
    env: dict[str, str] | None = None,
) -> int:
    """A child that dies with this process, `become`s the client's process and runs `run`; its pid.

    What `run` raises goes to the child's stderr, and it exits 127, as a command that could not run.
    """
    pid = os.fork()
    if pid == 0:
        try:
            isolation.die_with_parent()
            become(stdout, stderr, cwd, env)
            run()
        except BaseException:
            with contextlib.suppress(BaseException):
                os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(127)
    return pid


def _peer(connection: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end, as the kernel vouches for them."""
    pid, uid, _ = struct.unpack(
        "3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    )
    return pid, uid


def readable(fds: list[int], timeout: float | None) -> set[int]:
    """Which of `fds` can be read or have ended, once one can or `timeout` seconds have passed.

    poll, not select: select refuses a descriptor past 1023, which the pod runtime's many pipes and
    sockets reach in a long run (its ValueError ended the runtime, and no pod started after it).
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return {fd for fd, _ in poller.poll(None if timeout is None else timeout * 1000)}


def _answer(connection: socket.socket, peer: int, launch: Launch) -> NoReturn:
    """In the child: start the process; kill it if the client goes; tell the client how it ended."""
    code = 127
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        isolation.die_with_parent()
        message, fds, _, _ = socket.recv_fds(connection, MESSAGE_SIZE, 2)
        if len(fds) != 2:
            raise ValueError("a request comes with the client's stdout and stderr")
        try:
            launched = launch(json.loads(message), fds[0], fds[1], peer)
        except OSError as error:
            connection.send(json.dumps({"error": str(error)}).encode())
            raise
        finally:
            for fd in fds:
                os.close(fd)
        connection.send(json.dumps({"pid": launched}).encode())
        with os.fdopen(os.pidfd_open(launched), "rb", buffering=0) as ended:
            gone = ended.fileno() not in readable([connection.fileno(), ended.fileno()], None)
        if gone:  # the client is gone (or says something): its process goes too
            os.kill(launched, signal.SIGKILL)
        code = os.waitstatus_to_exitcode(os.waitpid(launched, 0)[1])
        connection.send(json.dumps({"exited": code}).encode())
    except BrokenPipeError:
        pass  # the client went first: nobody is left to tell
    except BaseException as error:
        logger.warning("fork server: nothing started for client %d: %s", peer, error)
    os._exit(0 if code == 0 else 1)


def main(argv: list[str] | None = None) -> int:
    """The generic client: the server's fork runs ARGS, or this process becomes the module."""
    parser = argparse.ArgumentParser(
        prog="python -I -m autograder.shared.forkserver", description=__doc__
    )
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--module", required=True, help="what runs, cold, when no server listens")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args(argv)
    args = options.args[1:] if options.args[:1] == ["--"] else options.args
    code = ask(options.socket, {"argv": args, "cwd": os.getcwd(), "env": dict(os.environ)})
    if code is None:
        logger.warning("fork server: none at %s; %s starts cold", options.socket, options.module)
        os.execv(sys.executable, [sys.executable, "-I", "-m", options.module, *args])
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
