"""Submissions: the grader's regular-file copy of each, and synthetic ones made from the masters."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import nbformat
from nbgrader.utils import is_solution

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")
CHUNK = 1 << 20
MAX_FILE_BYTES = 100 * 2**20  # a lesson's notebooks and data files are far smaller
MAX_TOTAL_BYTES = 500 * 2**20
MAX_ENTRIES = 10_000
MAX_DEPTH = 16


def stage(source: Path, target: Path) -> list[str]:
    """Copy `source` into a new folder `target`, regular files only: the grader reads no link.

    Symlinks, hard links (a second name for a file the student does not own), devices, fifos and
    sockets are skipped, and so is whatever is past the limits on size, count and nesting (a sparse
    file of a terabyte must not fill the grader's disk); returns the paths skipped, relative to
    `source`, each with why.
    """
    return _stage(source, target, _Budget(MAX_ENTRIES, MAX_TOTAL_BYTES), 0)


@dataclass
class _Budget:
    """What a submission may still hold, in files and folders and in bytes."""

    entries: int
    size: int


def _stage(source: Path, target: Path, budget: _Budget, depth: int) -> list[str]:
    target.mkdir(mode=0o700, parents=True)
    skipped: list[str] = []
    with os.scandir(source) as scan:
        entries = sorted(scan, key=lambda e: e.name)  # sorted: the same files are kept on every run
    for entry in entries:
        budget.entries -= 1
        if budget.entries < 0:
            skipped.append(
                f"{entry.name} and the rest (past the {MAX_ENTRIES:,} files and "
                "folders a submission may hold)"
            )
            break
        if entry.is_dir(follow_symlinks=False):
            if depth >= MAX_DEPTH:
                skipped.append(f"{entry.name} (a folder nested deeper than {MAX_DEPTH})")
                continue
            skipped += [
                f"{entry.name}/{name}"
                for name in _stage(Path(entry.path), target / entry.name, budget, depth + 1)
            ]
        elif (why := _copy_regular(Path(entry.path), target / entry.name, budget)) is not None:
            skipped.append(f"{entry.name} ({why})")
    return skipped


def _copy_regular(source: Path, target: Path, budget: _Budget) -> str | None:
    """Copy a regular, singly linked file without following links, within `budget`; else why not."""
    if (why := _irregular(os.lstat(source))) is not None:
        return why
    try:
        handle = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        return f"unreadable: {error.strerror}"
    with os.fdopen(handle, "rb") as reader:
        info = os.fstat(reader.fileno())
        if (why := _irregular(info)) is not None:  # swapped since lstat
            return why
        if info.st_size > min(MAX_FILE_BYTES, budget.size):
            return (
                f"{info.st_size / 2**20:,.0f} MB, more than the "
                f"{MAX_FILE_BYTES / 2**20:.0f} MB a file may have"
                if info.st_size > MAX_FILE_BYTES
                else f"past the {MAX_TOTAL_BYTES / 2**20:.0f} MB a submission may hold"
            )
        with open(
            os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600), "wb"
        ) as writer:
            budget.size -= _copy_at_most(reader, writer, info.st_size)
    return None


def _copy_at_most(reader: IO[bytes], writer: IO[bytes], limit: int) -> int:
    """Copy up to `limit` bytes (fstat's size: a growing file is cut there); the bytes copied."""
    copied = 0
    while copied < limit and (chunk := reader.read(min(CHUNK, limit - copied))):
        writer.write(chunk)
        copied += len(chunk)
    return copied


def _irregular(info: os.stat_result) -> str | None:
    """What a file is when it is not a regular file with one name."""
    if stat.S_ISLNK(info.st_mode):
        return "a symlink"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    return "a hard link" if info.st_nlink > 1 else None


def _solution_code(master_source: str) -> str:
    """What a student would have typed: the master's cell without nbgrader's markers."""
    return "\n".join(
        line for line in master_source.splitlines() if line.strip() not in SOLUTION_MARKERS
    )


def fill(
    release: nbformat.NotebookNode,
    master: nbformat.NotebookNode,
    steps: Collection[str] | None = None,
) -> nbformat.NotebookNode:
    """The released notebook with the solution cells named in `steps` (all when None) answered."""
    answers = {
        cell.metadata.nbgrader["grade_id"]: cell.source
        for cell in master.cells
        if is_solution(cell)
    }
    for cell in release.cells:
        if is_solution(cell):
            grade_id = cell.metadata.nbgrader["grade_id"]
            if (steps is None or grade_id in steps) and grade_id in answers:
                cell.source = _solution_code(answers[grade_id])
    return release


def write(
    course: Path,
    assignment: str,
    student: str,
    steps: Collection[str] | None = (),
    release_dir: str = "release",
    source_dir: str = "source",
    submitted_dir: str = "submitted",
) -> Path:
    """Put a submission in submitted/<student>/<assignment>: `steps` answered, `()` none."""
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
