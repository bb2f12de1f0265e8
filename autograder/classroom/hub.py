"""The hub's process: started in the background by `classroom up`, stopped by `classroom down`."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import requests

from autograder.classroom import setup
from autograder.classroom.layout import ASSIGNMENT, DEFAULT_ROOT, Classroom
from autograder.shared.errors import LabError
from autograder.shared.waiting import poll

logger = logging.getLogger(__name__)

HUB = str(Path(sys.executable).parent / "jupyterhub")


def running_pid(room: Classroom) -> int | None:
    """The hub's pid when its pid file names a live jupyterhub."""
    file = room.hub / "jupyterhub.pid"
    try:
        process = psutil.Process(int(file.read_text()))
        return process.pid if "jupyterhub" in " ".join(process.cmdline()) else None
    except (OSError, ValueError, psutil.Error):
        return None


def start(room: Classroom, timeout: float = 120) -> None:
    """Start the hub (unless it runs) and wait until its API answers."""
    if running_pid(room):
        return
    log = room.hub / "jupyterhub.log"
    environment = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [HUB, "-f", str(room.hub / "jupyterhub_config.py")],
            cwd=room.hub,
            env=environment,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        if process.poll() is not None:
            raise LabError(
                f"jupyterhub exited with {process.returncode}; its log:\n{log.read_text()[-3000:]}"
            )
        try:
            return requests.get(f"{room.url}hub/api", timeout=2).ok
        except requests.ConnectionError:
            return False

    if not poll(answers, bool, timeout, interval=0.5):
        process.terminate()
        raise LabError(f"jupyterhub did not answer at {room.url} within {timeout:.0f} s; see {log}")


def stop(room: Classroom, timeout: float = 60) -> bool:
    """Stop the hub (it stops the users' servers as it ends), then each student's practice cluster.
    Whether the hub was running."""
    pid = running_pid(room)
    if pid is not None:
        process = psutil.Process(pid)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
    for (
        student
    ) in room.students:  # one student's broken runtime never keeps the others' clusters up
        try:
            setup.as_user(
                room,
                student,
                "python",
                "-m",
                "autograder",
                "cluster",
                "down",
                "--provider",
                "practice",
            )
        except LabError as error:
            logger.warning("could not stop %s's practice cluster: %s", student, error)
    return pid is not None


def next_steps(room: Classroom) -> str:
    """What the instructor does once the hub runs."""
    instructor = room.instructor
    root = "" if room.root == DEFAULT_ROOT else f" --root {room.root}"

    def command(action: str) -> str:
        return f"python -m autograder classroom {action}{root}"

    return "\n".join(
        [
            f"JupyterHub runs at {room.url} (log {room.hub / 'jupyterhub.log'}).",
            "Log-ins: PAM, the Unix users' passwords; those set here are in "
            f"{room.hub / 'passwords.json'} (root only): give each student theirs, "
            "or change them with passwd.",
            f"  instructor: {instructor} (formgrader: {room.url}user/{instructor}/formgrader)",
            f"  students:   {', '.join(room.students)}",
            "Next (nbgrader's flow; as root, `classroom nbgrader ARGS` runs nbgrader "
            "as the instructor in the course, as a terminal of the instructor's "
            "JupyterLab does after `cd course`):",
            f"  1. release:  {command('nbgrader')} release_assignment {ASSIGNMENT}"
            "   (or formgrader's Release button)",
            "  2. students log in, fetch lesson01 in the Assignments tab "
            "(Nbgrader menu), work and Submit",
            f"  3. collect:  {command('nbgrader')} collect {ASSIGNMENT}",
            f"  4. grade:    {command('grade')}   (as root: each kernel is jailed)",
            f"  5. feedback: {command('nbgrader')} generate_feedback {ASSIGNMENT}, then the same "
            f"with release_feedback {ASSIGNMENT}",
            "  6. students click Fetch Feedback in the Assignments tab",
            f"Stop the hub (and every student's server) with: {command('down')}",
        ]
    )
