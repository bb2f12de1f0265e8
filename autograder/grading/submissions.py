"""Synthetic submissions: the released notebooks with some or all solutions filled in from the masters."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path

import nbformat
from nbgrader.utils import is_solution

SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


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
