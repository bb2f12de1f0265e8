"""A warm start for pods' containers: a fork server that imported the model server's libraries once.

A container used to be a new interpreter that imported Flask and numpy again: about 0.3 CPU-s for
each of the ~60 pods a graded submission starts. The launcher is the package's fork server
(autograder/shared/forkserver.py, the grader's too), started by the runtime before any pod exists,
that imports those libraries (never a pod's own code). Each container is a fork of it that isolates
itself (autograder/practice/container.py: namespaces, covers, limits, its own uid) and then runs the
pod's command: in the forked interpreter when the command is `python <script>` or
`python -m <module>`, by exec otherwise. A request is `{"argv", "env", "cwd", "uid"}`, with the
container's stdout and stderr; the server answers with the container's pid and, later, its end.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import runpy
import shutil
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import IO, NoReturn

from autograder import REPO_ROOT
from autograder.practice import container
from autograder.shared import forkserver, isolation, processes
from autograder.shared.forkserver import LaunchError

logger = logging.getLogger(__name__)

PRELOADED = (
    "flask",
    "numpy",
)  # what the lesson's model server imports; libraries only, never an app
# The launcher's own environment: one BLAS thread, so no thread exists when it forks.
LAUNCHER_ENV = {"PATH": isolation.SYSTEM_PATH, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


class Launched:
    """A container's main process as the runtime sees it: the part of `subprocess.Popen` it uses."""

    def __init__(self, process: forkserver.Launched, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid, self.stdout, self.stderr = process.pid, stdout, stderr
        self._process = process

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def poll(self) -> int | None:
        return self._process.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        return self._process.wait(timeout)

    def signal_group(self, number: int) -> None:
        """Signal the container's every process: its session's group, which this process leads."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, number)


class Launcher:
    """The runtime's end: starts the launcher at once (and again if it died), spawns containers."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "launcher.sock"
        self._server = self._start()  # now, from the thread that made it: it dies with that thread

    def spawn(self, argv: list[str], env: dict[str, str], cwd: Path, uid: int | None) -> Launched:
        """Start `argv` as a container's process: isolated as `uid` if given, else as this user."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        request = {"argv": argv, "env": env, "cwd": str(cwd), "uid": uid}
        try:
            launched = forkserver.spawn(self.socket, request, out_w, err_w)
            if launched is None:
                logger.warning("the pod launcher ended; a new one starts")
                self.close()
                self._server = self._start()
                launched = forkserver.spawn(self.socket, request, out_w, err_w)
            if launched is None:
                raise LaunchError("the pod launcher did not start: see the runtime's log")
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return Launched(launched, open(out_r, "rb"), open(err_r, "rb"))

    def close(self) -> None:
        """Stop the launcher: the containers it still runs die with it."""
        processes.stop(self._server, grace=1)

    def _start(self) -> subprocess.Popen:
        # From the package this runtime imported: in a classroom student's server, the lab runtime's
        # copy on PYTHONPATH, which the launcher's -I and its environment leave out.
        return forkserver.start(
            self.socket, "autograder.practice.launcher", env=LAUNCHER_ENV, import_from=REPO_ROOT
        )


def serve(path: Path) -> NoReturn:
    """The launcher at `path`: the model server's libraries imported once, each container a fork."""
    forkserver.serve(path, _preload, _fork)


def _preload() -> None:
    for name in PRELOADED:
        with suppress(ImportError):
            importlib.import_module(name)


def _fork(request: dict, stdout: int, stderr: int, client: int) -> int:
    """A container's process for `request`, forked from the launcher; its pid."""
    program = request["argv"][0]
    if shutil.which(program, path=request["env"].get("PATH")) is None:
        raise LaunchError(f'exec: "{program}": executable file not found in $PATH')
    return forkserver.fork_and_become(lambda: _contain(request), stdout, stderr, request["cwd"])


def _contain(request: dict) -> NoReturn:
    """In the fork: a session of its own (the container's process group), isolated; the command."""
    os.setsid()
    workdir = Path(request["cwd"])
    if request["uid"] is None:
        container.limit()
    else:
        container.isolate(request["uid"], workdir)
    _run(request["argv"], request["env"])


def _run(argv: list[str], env: dict[str, str]) -> NoReturn:
    """The pod's command: a Python script or module in this interpreter, anything else by exec."""
    os.environ.clear()
    os.environ.update(env)
    program, *args = argv
    python_settings = [
        name for name in env if name.startswith("PYTHON") and name != "PYTHONUNBUFFERED"
    ]
    if program == sys.executable and args and not python_settings:
        if args[0] == "-m" and len(args) > 1:
            processes.run_as_main(
                lambda: runpy.run_module(args[1], run_name="__main__", alter_sys=True),
                [args[1], *args[2:]],
                os.getcwd(),
            )
        if not args[0].startswith("-"):
            processes.run_as_main(
                lambda: runpy.run_path(args[0], run_name="__main__"),
                args,
                os.path.dirname(os.path.abspath(args[0])),
            )
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)  # as a new process starts: Python ignores them
    os.execvpe(program, argv, env)


def main(arguments: list[str] | None = None) -> NoReturn:
    parser = argparse.ArgumentParser(
        prog="python -I -m autograder.practice.launcher", description=__doc__
    )
    parser.add_argument("--serve", type=Path, required=True, help="listen at this socket")
    serve(parser.parse_args(arguments).serve)


if __name__ == "__main__":
    main()
