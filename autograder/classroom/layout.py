"""Where a classroom keeps its parts: one root the hub, the exchange and students' runtime share."""

from __future__ import annotations

import json
import pwd
from dataclasses import asdict, dataclass
from pathlib import Path

from autograder.shared.errors import LabError

DEFAULT_ROOT = Path("/srv/k8s-ml-classroom")
COURSE_ID = "k8s-ml-lesson01"
ASSIGNMENT = "lesson01"
SETTINGS_FILE = "classroom.json"
# The binaries a student's practice cluster runs (and kubectl for the notebooks' `!kubectl` lines).
PRACTICE_BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
    "kwokctl",
)


@dataclass(frozen=True)
class Classroom:
    """A class on this machine.

    Its root folder, its instructor and students (Unix users), the hub's ports (where users connect,
    the hub's own API, the proxy's API: all on loopback; JupyterHub's defaults).
    """

    root: Path
    instructor: str
    students: tuple[str, ...]
    port: int = 8000
    hub_port: int = 8081
    proxy_api_port: int = 8001

    @property
    def exchange(self) -> Path:
        """nbgrader's exchange, shared by every user of the class."""
        return self.root / "exchange"

    @property
    def runtime(self) -> Path:
        """What a student's kernel imports: the lab and the self-checks, never the grading code."""
        return self.root / "runtime"

    @property
    def bin(self) -> Path:
        """The practice cluster's binaries, readable by every student."""
        return self.root / "bin"

    @property
    def hub(self) -> Path:
        """The hub's own state: its config, database, cookie secret and log (root's alone)."""
        return self.root / "hub"

    def config(self, role: str) -> Path:
        """The Jupyter config folder of a role ('student' or 'instructor'): nbgrader, extensions."""
        return self.root / "config" / role

    @property
    def course(self) -> Path:
        """The instructor's nbgrader course directory, in their home where no student can read."""
        return Path(pwd.getpwnam(self.instructor).pw_dir) / "course"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def save(self) -> None:
        """Written once by `classroom up`, read by the hub's config and the later commands."""
        settings = {**asdict(self), "root": str(self.root), "students": list(self.students)}
        (self.root / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    @classmethod
    def load(cls, root: Path = DEFAULT_ROOT) -> Classroom:
        """The classroom `classroom up` made in `root`."""
        path = root / SETTINGS_FILE
        if not path.is_file():
            raise LabError(f"no classroom in {root}: run `python -m autograder classroom up` first")
        settings = json.loads(path.read_text())
        return cls(
            **{**settings, "root": Path(settings["root"]), "students": tuple(settings["students"])}
        )
