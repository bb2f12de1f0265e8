"""What a class run has finished, kept beside the gradebook so an interrupted run resumes.

A submission counts as done when its record names the same submission digest: a student who
resubmits is graded again, everyone already graded is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autograder.grading.names import digest

LEDGER_DIR = ".grading"


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


def submission_digest(folder: Path) -> str:
    """A hash of every file a student submitted, so a changed submission is graded again."""
    sha = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts):
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
        path = self._path(student)
        if not path.is_file():
            return None
        try:
            outcome = Outcome(**json.loads(path.read_text()))
        except (ValueError, TypeError):
            return None
        return outcome if outcome.status == "graded" and outcome.submission == submission else None

    def record(self, outcome: Outcome) -> None:
        """Keep a graded outcome; a partly written file can never be read back."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(outcome.student)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(outcome), indent=1))
        os.replace(temporary, path)
