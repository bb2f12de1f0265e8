"""An nbgrader course directory: paths, gradebook, the masters' self-test, feedback, the CSV."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins import CsvExportPlugin
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from autograder.grading.classrun import feedback, ledger, submissions
from autograder.grading.classrun.ledger import Outcome
from autograder.grading.names import LEDGER_DIR, digest, folder_name
from autograder.shared.errors import LabError

logger = logging.getLogger(__name__)

GRADES_CSV = "grades.csv"
CONFIG_FILE = "nbgrader_config.py"


def read_config(root: Path) -> Config:
    """The course's nbgrader_config.py as nbgrader loads it, its root pinned where it was found."""
    config = Config()
    if (root / CONFIG_FILE).is_file():
        config.merge(PyFileConfigLoader(CONFIG_FILE, path=str(root)).load_config())
    config.CourseDirectory.root = str(root)
    return config


class GradingError(LabError):
    """The class cannot be graded as asked; the message says what to do."""


@dataclass
class Course:
    """An nbgrader course directory and the paths the grader needs from it."""

    root: Path
    config: Config = field(
        default_factory=Config
    )  # empty: read from the course's nbgrader_config.py
    dirs: CourseDirectory = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        given, self.config = self.config, read_config(self.root) if not self.config else Config()
        self.config.merge(given)
        self.config.CourseDirectory.root = str(self.root)
        self.dirs = CourseDirectory(config=self.config)

    @property
    def key(self) -> str:
        """A label value naming this course directory on the cluster."""
        return digest(str(self.root))

    def source(self, assignment: str) -> Path:
        return Path(self.dirs.format_path(self.dirs.source_directory, ".", assignment))

    def submitted(self, student: str, assignment: str) -> Path:
        return Path(self.dirs.format_path(self.dirs.submitted_directory, student, assignment))

    def autograded(self, student: str, assignment: str) -> Path:
        return Path(self.dirs.format_path(self.dirs.autograded_directory, student, assignment))

    def gradebook(self) -> Path | None:
        """The gradebook's file when it is SQLite (nbgrader's default), else None."""
        prefix = "sqlite:///"
        url = self.dirs.db_url.split("?", 1)[0]
        return Path(url[len(prefix) :]) if url.startswith(prefix) else None

    def notebooks(self, assignment: str) -> list[str]:
        return sorted(p.name for p in self.source(assignment).glob("*.ipynb"))

    def submitters(self, assignment: str) -> list[str]:
        """Every folder in submitted/ holding `assignment`, as bytes: no name can break the run."""
        base = Path(self.dirs.root) / self.dirs.submitted_directory
        if not base.is_dir():
            return []
        with os.scandir(os.fsencode(base)) as entries:
            names = [
                entry.name
                for entry in entries
                if os.path.lexists(os.path.join(entry.path, os.fsencode(assignment)))
            ]
        return sorted(map(folder_name, names))

    def api(self) -> NbGraderAPI:
        return NbGraderAPI(config=self.config)


def require_masters(course: Course, assignment: str) -> None:
    """An assignment exists when source/<assignment> holds notebooks."""
    if course.notebooks(assignment):
        return
    parent = course.source(assignment).parent
    known = (
        sorted(p.name for p in parent.iterdir() if p.is_dir() and any(p.glob("*.ipynb")))
        if parent.is_dir()
        else []
    )
    raise GradingError(
        f"unknown assignment {assignment!r}: no notebooks in {course.source(assignment)}; "
        f"assignments found: {', '.join(known) or 'none'}"
    )


def ensure_in_gradebook(course: Course, assignment: str) -> None:
    """Autograding needs the assignment in the gradebook: generate it when it is missing there."""
    try:
        with Gradebook(course.dirs.db_url) as gradebook:
            gradebook.find_assignment(assignment)
            return
    except MissingEntry:
        pass
    logger.info(
        "%s is not in the gradebook yet: running nbgrader generate_assignment %s",
        assignment,
        assignment,
    )
    result = course.api().generate_assignment(assignment)
    if not result["success"]:
        raise GradingError(
            f"nbgrader generate_assignment {assignment} failed:\n"
            f"{result.get('error') or result['log']}"
        )


def scores(course: Course, assignment: str, student: str) -> Outcome:
    """The gradebook's scores for one submission, per autograded step."""
    with Gradebook(course.dirs.db_url) as gradebook:
        submission = gradebook.find_submission(assignment, student)
        steps = {
            f"{notebook.name}/{grade.name}": [grade.score, grade.max_score]
            for notebook in submission.notebooks
            for grade in notebook.grades
        }
        return Outcome(
            student, "graded", score=submission.score, max_score=submission.max_score, steps=steps
        )


def recorded_scores(course: Course, assignment: str) -> dict[str, float]:
    """Each student's score in the gradebook, so an entry the gradebook lost is graded again."""
    try:
        with Gradebook(course.dirs.db_url) as gradebook:
            return {
                s.student_id: s.score for s in gradebook.find_assignment(assignment).submissions
            }
    except MissingEntry:
        return {}


def feedback_and_export(
    course: Course, assignment: str, students: list[str], timeout: float, jobs: int = 1
) -> tuple[Path, list[str]]:
    """Feedback HTML for each graded student (`jobs` at once), then every grade as a CSV.

    Returns the CSV and the students whose feedback took longer than `timeout` s and was skipped.
    """
    skipped = feedback.generate(course.config, assignment, students, timeout, jobs)
    target = course.root / GRADES_CSV
    with Gradebook(course.dirs.db_url) as gradebook:
        CsvExportPlugin(to=str(target)).export(gradebook)
    return target, skipped


def submit_masters(course_root: Path, assignment: str, student: str = "masters") -> str:
    """Generate the assignment, submit its solved masters as `student`: its self-test."""
    course = Course(course_root)
    require_masters(course, assignment)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = course.api().generate_assignment(assignment)
    if not result["success"]:
        raise GradingError(
            f"nbgrader generate_assignment {assignment} failed:\n"
            f"{result.get('error') or result['log']}"
        )
    folder = submissions.write(
        course.root,
        assignment,
        student,
        steps=None,
        release_dir=course.dirs.release_directory,
        source_dir=course.dirs.source_directory,
        submitted_dir=course.dirs.submitted_directory,
    )
    logger.info(
        "submitted the solved masters of %s as student %r in %s", assignment, student, folder
    )
    return student


def backup_gradebook(course: Course) -> Path | None:
    """A copy of the gradebook from before this run, and how to put it back."""
    path = course.gradebook()
    if path is None or not path.exists():
        return None
    os.chmod(course.root / LEDGER_DIR, 0o700)
    os.chmod(path, 0o600)
    backup = ledger.backup_gradebook(course.root, path)
    logger.info("gradebook backed up to %s (to restore it: cp %s %s)", backup, backup, path)
    return backup


def last_lines(text: str, count: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-count:])
