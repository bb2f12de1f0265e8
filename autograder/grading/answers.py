"""Which notebooks a student left as released: those earn 0 without a kernel ever starting.

A notebook whose code cells are exactly the released ones, followed only by notebooks that are
too, holds no work of the student's: running it would only wait for self-checks that cannot
pass. Any change to any code cell, or a cell of the student's own, makes it answered.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions


def code_cells(notebook: NotebookNode) -> list[str]:
    """The sources of a notebook's code cells, in order, without surrounding blank space."""
    return [cell.source.strip() for cell in notebook.cells if cell.cell_type == "code"]


@functools.cache
def released(master: Path) -> NotebookNode:
    """The notebook a student receives: the master with solutions stubbed, hidden tests removed."""
    notebook = copy.deepcopy(nbformat.read(master, as_version=4))
    for step in (ClearSolutions(), ClearHiddenTests()):
        notebook, _ = step.preprocess(notebook, {})
    return notebook


def released_code(master: Path) -> list[str]:
    """The code cells a student receives."""
    return code_cells(released(master))


def left_as_released(submitted: Path, master: Path) -> bool:
    """Whether the submitted notebook is missing or holds only the released code cells."""
    if not submitted.exists():
        return True
    try:
        notebook = nbformat.read(submitted, as_version=4)
    except Exception:  # a notebook nbformat cannot read is graded as usual, and nbgrader reports it
        return False
    return code_cells(notebook) == released_code(master)


def unanswered_from(name: str, submission: Path, masters: Path) -> bool:
    """Whether notebook `name` and every notebook after it were left as released."""
    return all(
        left_as_released(submission / master.name, master)
        for master in sorted(masters.glob("*.ipynb"))
        if master.stem >= name
    )
