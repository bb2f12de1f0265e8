"""A warm start for the grader's processes: one interpreter that imported their libraries, forked for each.

A grading worker (nbgrader, nbconvert, the kubernetes client) and a grading kernel (ipykernel,
matplotlib, the kubernetes client) each spend about 2 CPU-s importing before they do anything; a
submission starts one worker and ~8 kernels. The class run starts a server for workers and each
worker one for its kernels, as root with `python -I`, and the command each process used to be is
a small client instead: it hands the server its request with its stdout and stderr, and waits. For
each client the server forks a child, which forks the process asked for (`launch`: a worker, a
jailed kernel) and reports how it ended. Only root may ask (SO_PEERCRED) and the socket lies in a
folder only root may enter; a client that goes away takes its process with it.

Wire format, over a SOCK_SEQPACKET unix socket: the client sends one JSON request with its stdout
and stderr as passed descriptors; the server's child answers `{"exited": code}` (negative: a signal).
The generic client is `python -I -m autograder.shared.forkserver --socket PATH --module MODULE -- ARGS`
(request `{"argv": ARGS, "cwd", "env"}`); without a server it becomes `python -I -m MODULE ARGS`.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from autograder.shared import isolation, processes, waiting

logger = logging.getLogger(__name__)
MESSAGE_SIZE = 1 << 20
# Run in the child that holds a connection: (request, stdout, stderr, the client's pid) -> the process's pid.
Launch = Callable[[dict, int, int, int], int]


def start(path: Path, module: str, env: dict[str, str] | None = None, timeout: float = 30) -> subprocess.Popen:
    """Start `python -I -m module --serve path`, in a folder only root may enter; it dies with this thread.

    It runs in a session of its own: a Ctrl-C at the terminal is the caller's to handle (it stops the
    server), not a KeyboardInterrupt in the server and in every process it forked.
    Returns once it listens (its clients then queue while it imports), or has ended: clients then start cold.
    """
    path.parent.mkdir(mode=0o700, exist_ok=True)
    server = subprocess.Popen([sys.executable, "-I", "-m", module, "--serve", str(path)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, cwd="/", env=env, start_new_session=True,
                              preexec_fn=isolation.die_with_parent)
    waiting.poll(path.exists, lambda listens: listens or server.poll() is not None, timeout, interval=0.02)
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

    The fork keeps none of this process's open files, event loop or exit handlers; it dies with this thread.
    """
    path.parent.mkdir(mode=0o700, exist_ok=True)
    pid = os.fork()
    if pid == 0:
        try:
            isolation.die_with_parent()
            become({"cwd": "/", "env": dict(os.environ)}, os.open(os.devnull, os.O_WRONLY), 2)
            # Nothing of this process's state that outlived its files: an event loop polling a closed
            # descriptor, exit handlers (temporary folders' clean-up) that are not the server's to run.
            asyncio.set_event_loop_policy(None)
            atexit._clear()
            serve(path)
        finally:
            os._exit(1)
    try:
        waiting.poll(path.exists, lambda listens: listens or os.waitpid(pid, os.WNOHANG)[0] != 0, timeout,
                     interval=0.02)
        yield path
    finally:
        processes.stop(pid, grace=1)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def serve(path: Path, warm: Callable[[], None], launch: Launch) -> NoReturn:
    """The server: listen first (clients may queue), import, then fork a child per root client."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(str(path))
    path.chmod(0o600)
    listener.listen(64)
    warm()
    gc.freeze()  # the imported objects stay shared with every fork instead of being copied by its collector
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the children reap themselves
    while True:
        connection, _ = listener.accept()
        pid, uid = _peer(connection)
        if uid != 0:
            logger.warning("fork server %s: refused a client running as uid %d (pid %d)", path, uid, pid)
        elif os.fork() == 0:
            listener.close()
            _answer(connection, pid, launch)
        connection.close()


def ask(path: Path, request: dict) -> int | None:
    """The client: the process's exit code once it ends (127: it could not start), or None when no server listens."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        return None
    with connection:
        try:
            socket.send_fds(connection, [json.dumps(request).encode()], [1, 2])
            reply = connection.recv(MESSAGE_SIZE)
        except OSError:  # the server closed on us: it refused, or it ended
            reply = b""
    return json.loads(reply)["exited"] if reply else 127


def become(request: dict, stdout: int, stderr: int) -> None:
    """In a fork: the client's output, folder and environment (`cwd`, `env`), nothing of the server's open."""
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the server's socket, the client's connection
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])


def _peer(connection: socket.socket) -> tuple[int, int]:
    """The pid and uid of the process at the other end, as the kernel vouches for them."""
    pid, uid, _ = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                            struct.calcsize("3i")))
    return pid, uid


def _answer(connection: socket.socket, peer: int, launch: Launch) -> NoReturn:
    """In the child: start the process; kill it if the client goes; tell the client how it ended."""
    code = 127
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        isolation.die_with_parent()
        message, fds, _, _ = socket.recv_fds(connection, MESSAGE_SIZE, 2)
        if len(fds) != 2:
            raise ValueError("a request comes with the client's stdout and stderr")
        launched = launch(json.loads(message), fds[0], fds[1], peer)
        for fd in fds:
            os.close(fd)
        with os.fdopen(os.pidfd_open(launched), "rb", buffering=0) as ended:
            readable, _, _ = select.select([connection.fileno(), ended.fileno()], [], [])
            gone = ended.fileno() not in readable
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
    """The generic client: the server's fork runs ARGS, or this process becomes `python -I -m MODULE ARGS`."""
    parser = argparse.ArgumentParser(prog="python -I -m autograder.shared.forkserver", description=__doc__)
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
