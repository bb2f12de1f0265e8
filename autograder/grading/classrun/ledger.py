"""What a class run has finished, kept beside the gradebook so an interrupted run resumes.

A submission counts as done when its record names the same submission digest: a student who
resubmits is graded again, everyone already graded is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.grading.names import LEDGER_DIR, digest
from autograder.shared.errors import LabError

BACKUPS = "backups"
KEEP_BACKUPS = 5
logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """How one submission went: graded with a score, or an error that recorded nothing."""

    student: str
    status: str
    score: float | None = None
    max_score: float | None = None
    seconds: float = 0.0
    detail: str = ""
    steps: dict[str, list[float]] = field(default_factory=dict)
    submission: str = ""
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of this grading


def submission_digest(folder: Path) -> str:
    """A hash of every file of the grader's copy of a submission: a changed one is graded again."""
    sha = hashlib.sha256()
    for path in sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and ".ipynb_checkpoints" not in p.parts
    ):
        sha.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


class Ledger:
    """One JSON file per graded submission, written atomically."""

    def __init__(self, course: Path, assignment: str) -> None:
        self.folder = course / LEDGER_DIR / assignment

    def _path(self, student: str) -> Path:
        return self.folder / f"{digest(student, length=16)}.json"

    def done(self, student: str, submission: str) -> Outcome | None:
        """The recorded outcome when this exact submission was already graded."""
        outcome = _graded(self._path(student))
        return outcome if outcome is not None and outcome.submission == submission else None

    def outcomes(self) -> list[Outcome]:
        """Every graded outcome recorded for this assignment, whichever run graded it."""
        recorded = (_graded(path) for path in sorted(self.folder.glob("*.json")))
        return [outcome for outcome in recorded if outcome is not None]

    def record(self, outcome: Outcome) -> None:
        """Keep a graded outcome; a partly written file can never be read back."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(outcome.student)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(outcome), indent=1))
        os.replace(temporary, path)


def _graded(path: Path) -> Outcome | None:
    """The graded outcome recorded in `path`; None for a missing, unreadable or ungraded record."""
    if not path.is_file():
        return None
    try:
        outcome = Outcome(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None
    return outcome if outcome.status == "graded" else None


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _copy(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy even while nbgrader has the database open."""
    with closing(_read_only(source)) as reader, closing(sqlite3.connect(target)) as writer:
        reader.backup(writer)
    os.chmod(target, 0o600)


class GradebookDamaged(LabError):
    """gradebook.db does not open as an SQLite database; the message names a backup to restore."""


def gradebook_problem(path: Path) -> str | None:
    """None when the gradebook opens and passes SQLite's quick check, else what is wrong."""
    try:
        with closing(_read_only(path)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as error:
        return str(error)
    return None if verdict == "ok" else verdict


def backups(course: Path) -> list[Path]:
    """This course's gradebook backups, oldest first."""
    return sorted((course / LEDGER_DIR / BACKUPS).glob("gradebook-*.db"))


def backup_gradebook(course: Path, path: Path) -> Path:
    """Copy the gradebook with SQLite's online backup before a run writes it; keep the last few."""
    problem = gradebook_problem(path)
    if problem:
        kept = backups(course)
        advice = (
            f"restore the last backup: cp {kept[-1]} {path}" if kept else "no backup of it exists"
        )
        raise GradebookDamaged(f"{path} cannot be opened ({problem}); {advice}")
    folder = course / LEDGER_DIR / BACKUPS
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    target = folder / f"gradebook-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.db"
    _copy(path, target)
    for old in backups(course)[:-KEEP_BACKUPS]:
        old.unlink()
    return target


def restore_gradebook(backup: Path, path: Path) -> None:
    """Put a backup in place of a damaged gradebook (a new file: the damaged one may be a link)."""
    temporary = path.with_name(f".{path.name}.restoring")
    temporary.unlink(missing_ok=True)
    _copy(backup, temporary)
    os.replace(temporary, path)
    logger.warning("restored %s from %s", path, backup)
