"""Submissions: the grader's own regular-file copy of each, and synthetic ones filled in from the masters."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Collection
from pathlib import Path

import nbformat
from nbgrader.utils import is_solution

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
CHUNK = 1 << 20


def stage(source: Path, target: Path) -> list[str]:
    """Copy `source` into a new folder `target`, regular files only, so nothing the grader reads is a link.

    Symlinks, hard links (a second name for a file the student does not own), devices, fifos and
    sockets are skipped; returns their paths relative to `source`, each with what it was.
    """
    target.mkdir(mode=0o700, parents=True)
    skipped: list[str] = []
    with os.scandir(source) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                skipped += [f"{entry.name}/{name}" for name in stage(Path(entry.path), target / entry.name)]
            elif (why := _copy_regular(Path(entry.path), target / entry.name)) is not None:
                skipped.append(f"{entry.name} ({why})")
    return skipped


def _copy_regular(source: Path, target: Path) -> str | None:
    """Copy one regular, singly linked file without following links; else say what it was."""
    if (why := _irregular(os.lstat(source))) is not None:
        return why
    try:
        handle = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return f"unreadable: {error.strerror}"
    with os.fdopen(handle, "rb") as reader:
        if (why := _irregular(os.fstat(reader.fileno()))) is not None:  # swapped since lstat
            return why
        with open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb") as writer:
            shutil.copyfileobj(reader, writer, CHUNK)
    return None


def _irregular(info: os.stat_result) -> str | None:
    """What a file is when it is not a regular file with one name."""
    if stat.S_ISLNK(info.st_mode):
        return "a symlink"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return "a hard link" if info.st_nlink > 1 else None


def _solution_code(master_source: str) -> str:
    """What a student would have typed: the master's cell without nbgrader's markers."""
    return "\n".join(line for line in master_source.splitlines() if line.strip() not in SOLUTION_MARKERS)


def fill(release: nbformat.NotebookNode, master: nbformat.NotebookNode,
         steps: Collection[str] | None = None) -> nbformat.NotebookNode:
    """The released notebook with the solution cells named in `steps` (all when None) answered."""
    answers = {cell.metadata.nbgrader["grade_id"]: cell.source for cell in master.cells if is_solution(cell)}
    for cell in release.cells:
        if is_solution(cell):
            grade_id = cell.metadata.nbgrader["grade_id"]
            if (steps is None or grade_id in steps) and grade_id in answers:
                cell.source = _solution_code(answers[grade_id])
    return release


def write(course: Path, assignment: str, student: str, steps: Collection[str] | None = (),
          release_dir: str = "release", source_dir: str = "source", submitted_dir: str = "submitted") -> Path:
    """Put a submission in submitted/<student>/<assignment>: `steps` answered, `()` none, None all."""
    release = course / release_dir / assignment
    target = course / submitted_dir / student / assignment
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(release, target)
    for path in sorted(target.glob("*.ipynb")):
        master = nbformat.read(course / source_dir / assignment / path.name, as_version=4)
        notebook = fill(nbformat.read(path, as_version=4), master, steps)
        nbformat.write(notebook, path)
    return target
