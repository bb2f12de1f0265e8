"""Student notebooks are nbgrader's output: generate them from the masters and spot any drift."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
from traitlets.config.loader import PyFileConfigLoader

from autograder import REPO_ROOT

ASSIGNMENT = "lesson01"
STUDENT_DIR = "notebooks"
SOURCE_DIR = "source"


class NotebookError(RuntimeError):
    """nbgrader could not produce the student notebooks; the message carries its log."""


@contextmanager
def _python_scripts_on_path() -> Iterator[None]:
    """nbgrader runs `alembic` through PATH: this interpreter's scripts must be found first."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{before}"
    try:
        yield
    finally:
        os.environ["PATH"] = before


def generate(course: Path = REPO_ROOT, into: Path | None = None) -> Path:
    """Run `nbgrader generate_assignment` on a scratch copy of the course; returns the release folder.

    Working on a copy keeps the instructor's gradebook and release folder untouched.
    """
    from nbgrader.apps import NbGraderAPI

    masters = course / SOURCE_DIR / ASSIGNMENT
    if not any(masters.glob("*.ipynb")):
        raise NotebookError(f"no master notebooks in {masters}; the masters live in source/{ASSIGNMENT}/")
    scratch = into or Path(tempfile.mkdtemp(prefix="nbgrader-course-"))
    shutil.copytree(masters, scratch / SOURCE_DIR / ASSIGNMENT, dirs_exist_ok=True)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(scratch)
    with _python_scripts_on_path():
        result = NbGraderAPI(config=config).generate_assignment(ASSIGNMENT, force=True)
    if not result["success"]:
        raise NotebookError(f"nbgrader generate_assignment {ASSIGNMENT} failed:\n"
                            f"{result.get('error') or result.get('log')}")
    return scratch / "release" / ASSIGNMENT


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and nbformat.read(a, as_version=4) == nbformat.read(b, as_version=4)


def drift(course: Path = REPO_ROOT) -> list[str]:
    """Student notebooks that differ from, are missing from, or are absent in a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="nbgrader-course-") as scratch:
        release = generate(course, Path(scratch))
        fresh = {path.name: path for path in release.glob("*.ipynb")}
        shipped = {path.name: path for path in (course / STUDENT_DIR).glob("*.ipynb")}
        return sorted(name for name in fresh.keys() | shipped.keys()
                      if name not in fresh or name not in shipped
                      or not _same(fresh[name], shipped[name]))


def sync(course: Path = REPO_ROOT) -> list[str]:
    """Regenerate notebooks/ from the masters; returns the names that changed or were removed."""
    with tempfile.TemporaryDirectory(prefix="nbgrader-course-") as scratch:
        release = generate(course, Path(scratch))
        target = course / STUDENT_DIR
        target.mkdir(exist_ok=True)
        changed = []
        fresh = {path.name for path in release.glob("*.ipynb")}
        for stale in sorted(target.glob("*.ipynb")):
            if stale.name not in fresh:
                stale.unlink()
                changed.append(stale.name)
        for name in sorted(fresh):
            if not _same(release / name, target / name):
                shutil.copyfile(release / name, target / name)
                changed.append(name)
        return changed
