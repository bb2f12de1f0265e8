"""What each role's processes see.

The instructor and the students run confined (confine.py), each in a filesystem of the system, this
Python environment, their role's files, their home and the exchange.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from autograder import REPO_ROOT
from autograder.classroom.layout import Classroom

SCRIPTS = Path(sys.executable).parent
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def kept(room: Classroom, user: str) -> tuple[Path, ...]:
    """Read-only in the user's filesystem.

    The interpreter and its environment, then their role's own: a student's lab runtime and cluster
    binaries, the instructor's config (their course is in their home).
    """
    python = (Path(sys.prefix), Path(sys.base_prefix))
    if user == room.instructor:
        return (*python, room.config("instructor"))
    return (*python, room.runtime, room.bin, room.config("student"))


def hidden(room: Classroom, user: str) -> tuple[Path, ...]:
    """Covered in a student's filesystem though kept: the hub's own package, which a
    non-editable install puts in sys.prefix with its course/ and grading/ (students import the
    runtime's copy)."""
    return () if user == room.instructor else (REPO_ROOT / "autograder",)


def confined(room: Classroom, user: str, command: list[str]) -> list[str]:
    """`command` run as `user` (started as root) in their filesystem, home and exchange writable."""
    # -I: root's own process imports the installed package, never the student's runtime on
    # PYTHONPATH (which holds no confine.py); the command it becomes gets the environment as given.
    return [
        sys.executable,
        "-I",
        "-m",
        "autograder.classroom.confine",
        user,
        *(f"--keep={path}" for path in kept(room, user)),
        *(f"--hide={path}" for path in hidden(room, user)),
        f"--shared={room.exchange}",
        "--",
        *command,
    ]


def environment(room: Classroom, user: str) -> dict[str, str]:
    """A student's server and kernels: the runtime on PYTHONPATH, a practice cluster of their own;
    the instructor's: nbgrader's formgrader on their course."""
    if user == room.instructor:
        return {
            "PATH": os.pathsep.join([str(SCRIPTS), SYSTEM_PATH]),
            "JUPYTER_CONFIG_PATH": str(room.config("instructor")),
        }
    return {
        "PATH": os.pathsep.join([str(room.bin), str(SCRIPTS), SYSTEM_PATH]),
        "PYTHONPATH": str(room.runtime),
        "JUPYTER_CONFIG_PATH": str(room.config("student")),
        "LAB_CLUSTER": "practice",
        "LAB_BIN_DIR": str(room.bin),
    }
