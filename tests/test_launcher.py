"""The pod launcher runs a container's command as a new process would, outliving no mistake."""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from autograder import REPO_ROOT
from autograder.practice import container
from autograder.practice.launcher import Launcher, LaunchError
from conftest import ask_as_nobody

APP = """
import os, sys
print("argv", sys.argv, "path0", sys.path[0] == os.getcwd(), "env", os.environ.get("GREETING"),
      flush=True)
print("to stderr", file=sys.stderr)
raise SystemExit(int(sys.argv[1]))
"""


@pytest.fixture
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path_factory.mktemp("launcher"))  # beside the app, as a router's
    yield launcher
    launcher.close()


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(APP)
    return tmp_path


def test_a_python_script_runs_in_the_fork_with_its_argv_env_path_and_exit_code(
    launcher: Launcher, app: Path
) -> None:
    process = launcher.spawn(
        [sys.executable, "app.py", "5"], {"GREETING": "hi", "PATH": "/usr/bin:/bin"}, app, None
    )
    assert process.stdout.read().decode() == "argv ['app.py', '5'] path0 True env hi\n"
    assert process.stderr.read().decode() == "to stderr\n"
    assert process.wait(10) == 5 and process.poll() == 5


def test_another_program_is_executed_with_only_the_pods_environment(
    launcher: Launcher, app: Path
) -> None:
    process = launcher.spawn(
        ["sh", "-c", 'echo "$GREETING ${HOME:-no home}"; exit 7'],
        {"GREETING": "hi", "PATH": "/usr/bin:/bin"},
        app,
        None,
    )
    assert process.stdout.read().decode() == "hi no home\n"
    assert process.wait(10) == 7


def test_a_missing_program_is_refused_with_the_runtimes_message(
    launcher: Launcher, app: Path
) -> None:
    with pytest.raises(LaunchError, match='exec: "no-such-program": executable file not found'):
        launcher.spawn(["no-such-program"], {"PATH": "/usr/bin:/bin"}, app, None)


def test_a_killed_launcher_takes_its_containers_along_and_the_next_spawn_starts_a_new_one(
    launcher: Launcher, app: Path
) -> None:
    running = launcher.spawn(["sleep", "60"], {"PATH": "/usr/bin:/bin"}, app, None)
    container = psutil.Process(running.pid)
    first = container.parent().parent()  # its parent is the launcher's fork that answers for it
    first.send_signal(signal.SIGKILL)
    assert running.wait(10) == -signal.SIGKILL
    _, alive = psutil.wait_procs([container], timeout=10)
    assert not alive, "the container outlived its launcher"
    again = launcher.spawn([sys.executable, "app.py", "0"], {"PATH": "/usr/bin:/bin"}, app, None)
    assert again.wait(10) == 0 and psutil.Process().children()[0].pid != first.pid


SNOOP = """
import os, pathlib, sys
for place in sys.argv[1:]:
    path = pathlib.Path(place)
    try:
        seen = sorted(os.listdir(path)) if path.is_dir() else len(path.read_bytes())
        print("read", place, seen, flush=True)
    except OSError as error:
        print("refused", place, error.strerror, flush=True)
"""


@pytest.mark.root
def test_an_isolated_container_finds_no_course_home_or_other_file_of_the_machine(
    launcher: Launcher, app: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (app / "snoop.py").write_text(SNOOP)
    elsewhere = Path("/var/tmp") / f"another-pod-{app.name}"  # world-readable, outside any home
    elsewhere.write_text("another pod's file")
    neighbour = tmp_path_factory.mktemp(
        "another-pods-workdir"
    )  # beside this pod's own working folder
    (neighbour / "app.py").write_text("its code")
    places = [
        REPO_ROOT / "source" / "lesson01",
        REPO_ROOT / "nbgrader_config.py",
        Path.home() / ".kube",
        Path.home() / ".cache",
        elsewhere,
        neighbour,
        Path("/run"),
        Path("/srv"),
    ]
    try:
        process = launcher.spawn(
            [sys.executable, "snoop.py", *map(str, places)],
            {"PATH": "/usr/bin:/bin"},
            app,
            container.pod_uid(app.name),
        )
        lines = process.stdout.read().decode().splitlines()
        assert process.wait(10) == 0, process.stderr.read().decode()
    finally:
        elsewhere.unlink()
    assert lines == [f"refused {place} No such file or directory" for place in places]


@pytest.mark.root
def test_a_process_of_another_uid_is_refused_a_container() -> None:
    """Root's launcher starts a container as root when asked with no uid: no other user may ask."""
    shared = Path(tempfile.mkdtemp(prefix="launcher-shared-"))  # any user reaches it
    shared.chmod(0o1777)
    launcher = Launcher(shared / "launcher")
    try:
        # Past the folder only root may enter: the server itself must refuse.
        launcher.socket.parent.chmod(0o755)
        launcher.socket.chmod(0o666)
        escape = ["sh", "-c", f"touch {shared / 'escaped'}"]
        env = {"PATH": "/usr/bin:/bin"}
        request = {"argv": escape, "env": env, "cwd": str(shared), "uid": None}
        code = ask_as_nobody(launcher.socket, request)
        escaped = (shared / "escaped").exists()
    finally:
        launcher.close()
        shutil.rmtree(shared)
    assert code == 127 and not escaped
