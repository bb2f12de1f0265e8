"""`python -m autograder classroom up`.

The class's Unix users, nbgrader's exchange, the students' runtime, the instructor's course and the
hub, on this machine (as root).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import secrets
import shutil
import subprocess
from pathlib import Path

from autograder import REPO_ROOT
from autograder.classroom import roles
from autograder.classroom.layout import ASSIGNMENT, COURSE_ID, PRACTICE_BINARIES, Classroom
from autograder.shared import binaries, studentfiles
from autograder.shared.errors import LabError

logger = logging.getLogger(__name__)

# Rooms of the package a student's server must not hold: grading and its benchmarks.
# Of grading/ only its __init__ is kept: it names the CLI's unisolated flag, and the CLI starts the
# cluster.
# nbgrader's exchange modes (exchange/default/release_assignment.py), the inbound also sticky: a
# student may drop a submission there but neither list, rename nor delete anyone else's.
EXCHANGE_MODES = {"inbound": 0o3733, "outbound": 0o755, "feedback": 0o711}
# Extensions a student's JupyterLab does without: the instructor's panels.
INSTRUCTOR_PLUGINS = ("formgrader", "create-assignment", "course-list")
INSTRUCTOR_SERVER_EXTENSIONS = ("formgrader", "course_list")
PROXY = "configurable-http-proxy"
# A submission must hold every released notebook under its released name (a renamed one is refused,
# not graded as missing), and no more than BoundedSubmit.max_mib.
STUDENT_SUBMIT = """c.ExchangeSubmit.strict = True
c.ExchangeFactory.submit = "autograder.classroom.exchange.BoundedSubmit"
"""
# A student's server starts their practice cluster as it starts (as the hosted image's does): it is
# ready, or nearly, when the first notebook connects, and that notebook says it waits meanwhile.
STUDENT_SERVER_CONFIG = """from autograder.practice.supervise import start_cluster_in_background

start_cluster_in_background()
"""


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the classroom makes Unix users and confines students' servers: run it as root "
            "(sudo python -m autograder classroom up)"
        )


def up(room: Classroom) -> dict[str, str]:
    """Everything the hub needs, made (again) idempotently; the users' passwords."""
    require_root()
    for folder, mode in ((room.root, 0o755), (room.hub, 0o700), (room.exchange, 0o1777)):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(mode)
    room.save()
    passwords = _accounts(room)
    _install_runtime(room)
    _install_binaries(room)
    _write_configs(room)
    _make_course(room)
    _write_hub_config(room, proxy_command(room))
    return passwords


def _accounts(room: Classroom) -> dict[str, str]:
    """The instructor and each student as Unix users with private homes; passwords for root only."""
    file = room.hub / "passwords.json"
    known = json.loads(file.read_text()) if file.is_file() else {}
    passwords = {
        name: known.get(name) or secrets.token_urlsafe(12)
        for name in (room.instructor, *room.students)
    }
    for name, password in passwords.items():
        ensure_user(name, password)
    file.touch(mode=0o600)
    file.write_text(json.dumps(passwords, indent=2) + "\n")
    return passwords


def ensure_user(name: str, password: str) -> pwd.struct_passwd:
    """A Unix user with a home only they can read, and this password (PAM checks it at log-in)."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--create-home", "--user-group", "--shell", "/bin/bash", name], check=True
        )
        account = pwd.getpwnam(name)
    subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True)
    Path(account.pw_dir).chmod(0o700)
    _no_news(account)
    return account


def _no_news(account: pwd.struct_passwd) -> None:
    """JupyterLab's question about fetching its news would sit over the notebook: answered no."""
    folder = (
        Path(account.pw_dir)
        / ".jupyter"
        / "lab"
        / "user-settings"
        / "@jupyterlab"
        / "apputils-extension"
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    subprocess.run(
        [
            "chown",
            "-R",
            f"{account.pw_uid}:{account.pw_gid}",
            str(Path(account.pw_dir) / ".jupyter"),
        ],
        check=True,
    )


def _install_runtime(room: Classroom) -> None:
    """The lab runtime students import, and nothing holding an answer (shared/studentfiles.py)."""
    shutil.rmtree(room.runtime, ignore_errors=True)
    for name, source in studentfiles.chosen(REPO_ROOT).items():
        (room.runtime / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, room.runtime / name)
    _readable(room.runtime)


def _install_binaries(room: Classroom) -> None:
    """The practice cluster's binaries where students can run them (linked when on one disk)."""
    room.bin.mkdir(exist_ok=True)
    for name, found in binaries.ensure(list(PRACTICE_BINARIES)).items():
        target, source = room.bin / name, found.resolve()
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        target.chmod(0o755)


def _readable(folder: Path) -> None:
    """Everyone may read (and enter) what root put in `folder`; no one else may change it."""
    for path in [folder, *folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def _write_configs(room: Classroom) -> None:
    """nbgrader's exchange and course for both roles; students' JupyterLab, no teacher panels."""
    exchange = (
        f"c.Exchange.root = {str(room.exchange)!r}\nc.CourseDirectory.course_id = {COURSE_ID!r}\n"
    )
    student, instructor = room.config("student"), room.config("instructor")
    for folder in (student, instructor, student / "labconfig"):
        folder.mkdir(parents=True, exist_ok=True)
    (student / "nbgrader_config.py").write_text(
        f"c = get_config()  # noqa: F821\n{exchange}{STUDENT_SUBMIT}"
    )
    (student / "jupyter_server_config.py").write_text(STUDENT_SERVER_CONFIG)
    (instructor / "nbgrader_config.py").write_text(
        f"c = get_config()  # noqa: F821\n{exchange}c.CourseDirectory.root = {str(room.course)!r}\n"
    )
    disabled = {f"@jupyter/nbgrader:{plugin}": True for plugin in INSTRUCTOR_PLUGINS}
    (student / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": disabled})
    )
    extensions = {
        f"nbgrader.server_extensions.{name}": False for name in INSTRUCTOR_SERVER_EXTENSIONS
    }
    (student / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": extensions}})
    )
    _readable(room.root / "config")


def _make_course(room: Classroom) -> None:
    """The instructor's course.

    The masters, the course's nbgrader config pointed at the shared exchange, the assignment
    generated and the students in the gradebook; the exchange's course folders.
    """
    account = pwd.getpwnam(room.instructor)
    course = room.course
    if not (course / "source" / ASSIGNMENT).is_dir():
        shutil.copytree(
            REPO_ROOT / "source", course / "source", ignore=shutil.ignore_patterns("ml-api")
        )
    config = (REPO_ROOT / "nbgrader_config.py").read_text()
    (course / "nbgrader_config.py").write_text(
        f"{config}\n# The classroom's exchange, shared with the students (`classroom up`).\n"
        f"c.Exchange.root = {str(room.exchange)!r}\n"
    )
    subprocess.run(["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(course)], check=True)
    course.chmod(0o700)
    as_instructor(room, "nbgrader", "generate_assignment", ASSIGNMENT, "--force")
    for student in room.students:
        as_instructor(room, "nbgrader", "db", "student", "add", student)
    exchange = room.exchange / COURSE_ID
    for name, mode in {".": 0o755, **EXCHANGE_MODES}.items():
        folder = exchange / name
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, account.pw_uid, account.pw_gid)
        folder.chmod(mode)


def as_instructor(room: Classroom, *command: str) -> str:
    """Run a command as the instructor in their course (nbgrader's flow), confined as served."""
    return as_user(room, room.instructor, "sh", "-c", 'cd course && exec "$@"', "-", *command)


def as_user(room: Classroom, user: str, *command: str) -> str:
    """Run a command as a class user in their home, in their server's filesystem; its output."""
    account = pwd.getpwnam(user)
    environment = {
        "HOME": account.pw_dir,
        "USER": user,
        "LANG": "C.UTF-8",
        **roles.environment(room, user),
    }
    done = subprocess.run(
        roles.confined(room, user, list(command)),
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise LabError(f"{' '.join(command)} (as {user}) failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def proxy_command(room: Classroom) -> Path:
    """configurable-http-proxy: on PATH, or installed from npm into the classroom's folder."""
    found = shutil.which(PROXY)
    local = room.root / "npm" / "node_modules" / ".bin" / PROXY
    if found:
        return Path(found)
    if not local.exists():
        if not shutil.which("npm"):
            raise LabError(
                f"JupyterHub needs {PROXY} from npm: install Node.js (apt-get install npm), "
                "then run this command again"
            )
        logger.info("Installing %s from npm into %s...", PROXY, local.parents[2])
        subprocess.run(
            ["npm", "install", "--prefix", str(local.parents[2]), PROXY],
            check=True,
            capture_output=True,
        )
    return local


def _write_hub_config(room: Classroom, proxy: Path) -> None:
    (room.hub / "jupyterhub_config.py").write_text(
        '"""Written by `python -m autograder classroom up`."""\n\nfrom pathlib import Path\n\n'
        "from autograder.classroom.hubconfig import configure\n\n"
        f"configure(get_config(), Path({str(room.root)!r}), Path({str(proxy)!r}))  # noqa: F821\n"
    )


def give_course_back(room: Classroom) -> None:
    """After grading as root, the course's files are the instructor's again (for nbgrader)."""
    account = pwd.getpwnam(room.instructor)
    subprocess.run(
        ["chown", "-R", f"{account.pw_uid}:{account.pw_gid}", str(room.course)], check=True
    )
