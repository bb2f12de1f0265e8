"""The grader's warm starts: a worker from the run's fork server acts as the command it replaces."""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import resource
import socket
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import psutil
import pytest

from autograder.grading.worker import autograde as worker
from autograder.shared import forkserver, processes


def _client(socket: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-I",
        "-m",
        "autograder.shared.forkserver",
        "--socket",
        str(socket),
        "--module",
        worker.WORKER_MODULE,
        "--",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture
def worker_server(tmp_path: Path) -> Path:
    with forkserver.running(tmp_path / "server" / "workers.sock", worker.WORKER_MODULE) as socket:
        yield socket


def test_a_forked_worker_writes_to_the_clients_own_output_and_exits_with_its_code(
    worker_server: Path,
) -> None:
    helped = _client(worker_server, "--help")
    refused = _client(worker_server, "--request")
    assert (helped.returncode, refused.returncode) == (0, 2)
    assert helped.stdout.startswith("usage: python -m autograder.grading.worker.autograde")
    assert "expected one argument" in refused.stderr
    assert "starts cold" not in helped.stderr + refused.stderr


def test_a_client_holding_over_1023_descriptors_learns_how_its_process_ended(
    worker_server: Path,
) -> None:
    """As the pod runtime does in a long run: its many pipes and sockets pass select()'s limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 2048)), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with open(os.devnull, "wb") as sink:
            request = {"argv": ["--help"], "cwd": "/", "env": dict(os.environ)}
            launched = forkserver.spawn(worker_server, request, sink.fileno(), sink.fileno())
        assert launched is not None
        assert launched.wait(timeout=60) == 0
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_without_a_server_the_client_runs_the_module_itself(tmp_path: Path) -> None:
    cold = _client(tmp_path / "nobody-listens.sock", "--help")
    assert cold.returncode == 0 and cold.stdout.startswith(
        "usage: python -m autograder.grading.worker.autograde"
    )
    assert "starts cold" in cold.stderr


def test_the_server_runs_as_long_as_its_block(tmp_path: Path) -> None:
    with forkserver.running(tmp_path / "server" / "workers.sock", worker.WORKER_MODULE) as socket:
        [server] = [child for child in psutil.Process().children() if "--serve" in child.cmdline()]
        assert socket.exists() and oct(socket.parent.stat().st_mode & 0o777) == "0o700"
    assert not server.is_running()


ELSEWHERE = """import sys
from pathlib import Path
from autograder.shared import forkserver
forkserver.serve(Path(sys.argv[2]), lambda: None, lambda *request: 0)
"""


def test_a_server_imports_its_module_from_the_folder_it_is_given(tmp_path: Path) -> None:
    """As a classroom student's pod launcher imports the lab runtime's copy, which -I leaves out."""
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "elsewhere_server.py").write_text(ELSEWHERE)
    given = forkserver.start(
        tmp_path / "given" / "s.sock", "elsewhere_server", import_from=tmp_path / "runtime"
    )
    not_given = forkserver.start(tmp_path / "not-given" / "s.sock", "elsewhere_server")
    try:
        assert forkserver.listening(tmp_path / "given" / "s.sock") and given.poll() is None
        assert not_given.wait(timeout=30) == 1
    finally:
        processes.stop(given, grace=1)


def _report_and_exit(report: Path, socket: Path) -> NoReturn:
    """A server that tells whether an event loop runs in it, then exits as a forked program does."""
    try:
        asyncio.get_event_loop().run_until_complete(asyncio.sleep(0))
        report.write_text("a loop of its own runs")
    except Exception as error:
        report.write_text(f"the parent's loop: {error!r}")
    socket.touch()
    processes.run_as_main(lambda: None, ["server"], None)


def test_a_forked_server_has_none_of_this_processs_event_loop_or_exit_handlers(
    tmp_path: Path,
) -> None:
    ran_here = tmp_path / "exit-handler-ran"
    report = tmp_path / "report"
    asyncio.set_event_loop(
        asyncio.new_event_loop()
    )  # as jupyter_client leaves one after starting kernels
    atexit.register(ran_here.touch)  # as a temporary folder's clean-up is registered
    try:
        with forkserver.forked(
            tmp_path / "server" / "kernels.sock", functools.partial(_report_and_exit, report)
        ):
            psutil.wait_procs(psutil.Process().children(), timeout=10)
    finally:
        atexit.unregister(ran_here.touch)
        asyncio.get_event_loop().close()
        asyncio.set_event_loop(None)
    assert report.read_text() == "a loop of its own runs"
    assert not ran_here.exists()


def test_a_socket_counts_as_a_server_only_once_it_listens(tmp_path: Path) -> None:
    """A client finding a socket only bound is refused (it starts cold): start() waits for it."""
    path = tmp_path / "with a space" / "server.sock"
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(str(path))
        bound = forkserver.listening(path)
        listener.listen(1)
        listens = forkserver.listening(path)
    assert (bound, listens, forkserver.listening(path)) == (False, True, False)
