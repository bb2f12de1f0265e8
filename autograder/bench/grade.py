"""`python -m autograder bench grade`: how fast a class is graded, one at a time and in parallel."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from autograder.errors import LabError
from autograder import REPO_ROOT
from autograder.grading import submissions
from autograder.grading.runner import Course, ensure_in_gradebook, grade_class, require_masters
from autograder.grading.settings import GradingSettings

ASSIGNMENT = "lesson01"


def course_copy(target: Path, source: Path = REPO_ROOT, assignment: str = ASSIGNMENT) -> Path:
    """A throwaway course directory with the repository's config and one assignment's masters."""
    (target / "source").mkdir(parents=True)
    shutil.copy2(source / "nbgrader_config.py", target / "nbgrader_config.py")
    shutil.copytree(source / "source" / assignment, target / "source" / assignment)
    return target


def _measure(course: Path, students: list[str], jobs: int, provider: str | None) -> float:
    started = time.monotonic()
    outcomes = grade_class(course, ASSIGNMENT, students, GradingSettings(jobs=jobs, regrade=True, feedback=False),
                           provider=provider)
    elapsed = time.monotonic() - started
    failed = [o for o in outcomes if o.status != "graded" or o.score != o.max_score]
    if failed:
        raise LabError(f"{len(failed)} solved submission(s) did not get full marks, e.g. "
                           f"{failed[0].student}: {failed[0].score}/{failed[0].max_score} {failed[0].detail}")
    return elapsed


def run(students: int, jobs: int, provider: str | None = None) -> int:
    """Grade `students` solved submissions serially, then with `jobs` workers; print the rates."""
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as workdir:
        course = course_copy(Path(workdir) / "course")
        require_masters(Course(course), ASSIGNMENT)
        ensure_in_gradebook(Course(course), ASSIGNMENT)
        names = [f"student-{number:03d}" for number in range(1, students + 1)]
        for name in names:
            submissions.write(course, ASSIGNMENT, name, steps=None)
        print(f"grading {students} solved {ASSIGNMENT} submission(s) on the practice cluster")
        for label, workers in [("serial", 1), (f"--jobs {jobs}", jobs)]:
            elapsed = _measure(course, names, workers, provider)
            print(f"{label:>10}: {elapsed:7.1f} s total, {elapsed / students:6.1f} s per submission, "
                  f"{60 * students / elapsed:6.2f} submissions per minute")
    return 0
