"""A submitted notebook put back in the assignment's shape before nbgrader reads it.

nbgrader trusts a notebook's cell metadata: a cell that claims a grade_id the gradebook does not
know, two cells with one grade_id, or a solution flagged as a test make it stop with an error (or
ask the instructor to run `nbgrader update`), and a deleted test cell simply earns nothing. So the
grader rebuilds its own copy of each notebook: the student's cells keep their type and source,
every cell naming one of the assignment's grade_ids gets the master's nbgrader metadata (the first
such cell only), every other cell is a plain cell, and a test cell the student removed is put back
after the answer it checks. What cannot be read as a notebook at all is graded as left unanswered.
Formgrader renders the result in the instructor's browser: the student's markdown keeps no HTML,
and no metadata, attachment or output of theirs is kept.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell
from nbgrader.utils import is_grade, is_solution

logger = logging.getLogger(__name__)

MAX_CELLS = 10_000  # a lesson notebook has about 50
CELL_MAKERS = {"code": new_code_cell, "markdown": new_markdown_cell, "raw": new_raw_cell}
CLAIMS = (
    "grade",
    "solution",
    "locked",
    "task",
    "points",
)  # what nbgrader metadata says a cell is and is worth


def _nbgrader(cell: Any) -> Any:
    metadata = cell.get("metadata") if isinstance(cell, dict) else None
    return metadata.get("nbgrader") if isinstance(metadata, dict) else None


def grade_id(cell: Any) -> str | None:
    """The cell's nbgrader grade_id, when its metadata names one."""
    nbgrader = _nbgrader(cell)
    name = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
    return name if isinstance(name, str) else None


def _claims(cell: Any) -> list[Any]:
    nbgrader = _nbgrader(cell)
    return [nbgrader.get(claim) or False for claim in CLAIMS] if isinstance(nbgrader, dict) else []


def _fresh(cell_type: str, source: str, nbgrader: dict | None = None) -> NotebookNode:
    """A new cell (its own id, no outputs), with a copy of `nbgrader` as its only metadata."""
    cell = CELL_MAKERS[cell_type](source)
    if nbgrader is not None:
        cell.metadata.nbgrader = json.loads(json.dumps(nbgrader))
    return cell


def _source(cell: Any) -> str | None:
    """A cell's source as one string, or None when it is not a cell's source (UTF-8 text)."""
    source = cell.get("source")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    if not isinstance(source, str):
        return None
    try:
        source.encode()
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: no file can hold it as UTF-8
        return None
    return source


def rebuilt(cells: list[Any], master: NotebookNode) -> tuple[NotebookNode, list[str]]:
    """The student's `cells` in the master's structure, and what had to change (for instructors)."""
    known = {grade_id(cell): cell for cell in master.cells if grade_id(cell)}
    lesson_text = {cell.source for cell in master.cells if cell.cell_type == "markdown"}
    notebook = new_notebook(metadata=json.loads(json.dumps(master.metadata)))
    changes: list[str] = []
    dropped = relabelled = 0
    taken: set[str] = set()
    for cell in cells:
        source = _source(cell) if isinstance(cell, dict) else None
        if source is None or cell.get("cell_type") not in CELL_MAKERS:
            dropped += 1
            continue
        name = grade_id(cell)
        if cell["cell_type"] == "markdown" and source not in lesson_text:
            source = source.replace(
                "<", "&lt;"
            )  # shown as typed: no HTML of the student's reaches a browser
        if name is not None and name in known and name not in taken:
            taken.add(name)
            notebook.cells.append(_fresh(cell["cell_type"], source, known[name].metadata.nbgrader))
            relabelled += _claims(cell) != _claims(known[name])
        else:
            notebook.cells.append(_fresh(cell["cell_type"], source))
            relabelled += (
                name is not None
            )  # a grade_id the assignment lacks, or one taken by an earlier cell
    if dropped:
        changes.append(f"{dropped} item(s) of its cell list that are not cells dropped")
    if relabelled:
        changes.append(
            f"the nbgrader metadata of {relabelled} cell(s) was not the "
            "assignment's and was replaced"
        )
    if restored := _put_back_tests(notebook, master):
        changes.append(f"test cell(s) {', '.join(restored)} put back")
    return notebook, changes


def _put_back_tests(notebook: NotebookNode, master: NotebookNode) -> list[str]:
    """Insert the master's test cells the notebook lacks, each after the nearest master cell."""
    restored: list[str] = []
    for index, cell in enumerate(master.cells):
        name = grade_id(cell)
        if (
            not name
            or not is_grade(cell)
            or is_solution(cell)
            or any(grade_id(c) == name for c in notebook.cells)
        ):
            continue
        where = next(
            (
                found
                for before in reversed(master.cells[:index])
                if (found := _position(notebook, before)) is not None
            ),
            len(notebook.cells) - 1,
        )
        notebook.cells.insert(
            where + 1, _fresh(cell.cell_type, cell.source, cell.metadata.nbgrader)
        )
        restored.append(name)
    return restored


def _position(notebook: NotebookNode, master_cell: NotebookNode) -> int | None:
    """Where the notebook holds `master_cell`: by grade_id, or a student's cell with its text."""
    name = grade_id(master_cell)
    matches = [
        i
        for i, cell in enumerate(notebook.cells)
        if (
            grade_id(cell) == name
            if name
            else not grade_id(cell)
            and cell.cell_type == master_cell.cell_type
            and cell.source == master_cell.source
        )
    ]
    return matches[-1] if matches and (name or master_cell.source.strip()) else None


def repair(path: Path, master: NotebookNode, released: NotebookNode) -> str | None:
    """Rewrite the grader's copy at `path` in the master's shape.

    A note for the instructor when it changed.

    A file that is no notebook is replaced by the `released` one, so it is graded as left
    unanswered.
    """
    try:
        document = json.loads(
            path.read_bytes()
        )  # at most submissions.MAX_FILE_BYTES: staging copies no more
        if (
            not isinstance(document, dict)
            or document.get("nbformat") != 4
            or not isinstance(document.get("cells"), list)
        ):
            raise ValueError("it is not a list of cells in nbformat 4")
        if len(document["cells"]) > MAX_CELLS:
            raise ValueError(
                f"{len(document['cells']):,} cells are more than the "
                f"{MAX_CELLS:,} a notebook may have"
            )
    except (
        Exception
    ) as error:  # any content at all: a notebook that cannot be read is graded as unanswered
        nbformat.write(released, path)
        logger.warning("%s is not a notebook: %s", path, error)
        return (
            f"{path.name} is not a notebook ({type(error).__name__}: {error}), "
            "so it was graded as unanswered."
        )
    notebook, changes = rebuilt(document["cells"], master)
    nbformat.write(notebook, path)
    return f"{path.name}: {'; '.join(changes)}." if changes else None
