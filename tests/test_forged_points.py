"""No point can be forged from inside the kernel: every test cell is judged by the grader.

A small assignment asks for a value, a function and a Deployment. Blank submissions that try
the kernel-side tricks (an AST transformer that swallows failures, patched modules, edited
tests) must get exactly 0; kernels that die, ignore the interrupt or flood their output lose
only what they broke. Notebooks whose structure was edited (forged points, an extra graded cell,
tests duplicated, deleted or turned into markdown, no metadata at all, not a notebook, no notebook,
notebooks of their own) must get what their answers earn, never an error that leaves the student
without a grade; one whose feedback would take minutes to render is skipped, not waited for, and
no script of the student's reaches the pages formgrader and the feedback show.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell

import student_app
from autograder.grading.classrun import submissions
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.settings import GradingSettings
from test_grading import DEPLOYMENT, _meta, edit, new_course, replace_step

ASSIGNMENT = "answers"
NOTEBOOK = "answers.ipynb"
SETUP = "\n".join(
    [  # the submission builds the ml-api:v1 it deploys: a graded namespace runs no other
        "from autograder.lesson.checks import deployment_ready",
        "from autograder.lab import connect, images, workloads",
        "lab = connect()",
        student_app.write_folder("v1.0"),
        student_app.load("ml-api:v1"),
    ]
)
STEPS = [  # (step, solution, test with hidden parts, points)
    (
        "letter",
        'q = "b"',
        'assert q in "abcd"\n### BEGIN HIDDEN TESTS\nassert q == "b"\n### END HIDDEN TESTS',
        1,
    ),
    (
        "double",
        "def double(x):\n    return 2 * x",
        "assert double(2) == 4\n### BEGIN HIDDEN TESTS\n"
        "assert [double(i) for i in range(4)] == [0, 2, 4, 6]\n### END HIDDEN TESTS",
        2,
    ),
    (
        "deploy",
        f"workloads.apply(lab, [{DEPLOYMENT!r}])\n"
        'workloads.wait_for_rollout(lab, "ml-api", progress=False)',
        'deployment_ready(lab, "ml-api", replicas=3).assert_passed()',
        3,
    ),
]
POINTS = {step: points for step, _, _, points in STEPS}
FULL = sum(POINTS.values())

SWALLOW = """import ast
class Swallow(ast.NodeTransformer):
    def visit_Module(self, node):
        handler = ast.ExceptHandler(
            type=ast.Name("BaseException", ast.Load()), name=None, body=[ast.Pass()])
        body = node.body or [ast.Pass()]
        return ast.fix_missing_locations(ast.Module(
            body=[ast.Try(body=body, handlers=[handler], orelse=[], finalbody=[])],
            type_ignores=[]))
get_ipython().ast_transformers.append(Swallow())"""
PATCH_MODULES = """import sys, types, builtins
fake = types.ModuleType("autograder.lesson.checks")
fake.deployment_ready = lambda *a, **k: type("R", (), {"assert_passed": lambda self: self})()
sys.modules["autograder.lesson.checks"] = fake
builtins.AssertionError = type("Never", (Exception,), {})
q, double = "b", (lambda x: 2 * x)"""
DIES_WHEN_CALLED = "def double(x):\n    import os\n    os._exit(0)"
IGNORES_INTERRUPT = (
    'import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nq = "b"\nwhile True:\n    pass'
)
FLOOD = 'q = "b"\nfor _ in range(200):\n    print("x" * 100_000)'


def master() -> nbformat.NotebookNode:
    cells = [new_code_cell(SETUP, metadata=_meta("setup", locked=True))]
    for step, solution, test, points in STEPS:
        cells.append(
            new_code_cell(
                f"### BEGIN SOLUTION\n{solution}\n### END SOLUTION",
                metadata=_meta(step, solution=True),
            )
        )
        cells.append(
            new_code_cell(
                test, metadata=_meta(f"test-{step}", grade=True, locked=True, points=points)
            )
        )
    notebook = new_notebook(cells=cells)
    notebook.metadata.kernelspec = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory, practice_cluster) -> Path:
    return new_course(tmp_path_factory.mktemp("answers-course"), master(), ASSIGNMENT, NOTEBOOK)


def _submit(course: Path, student: str, steps, **replaced: str) -> None:
    """The released notebook with `steps` answered (None: all), then some answers replaced."""
    submissions.write(course, ASSIGNMENT, student, steps)
    for step, source in replaced.items():
        edit(course, student, replace_step(step, source), ASSIGNMENT, NOTEBOOK)


@pytest.mark.cluster
@pytest.mark.slow
def test_kernel_side_tricks_earn_nothing_and_broken_kernels_lose_only_what_they_broke(
    course: Path,
) -> None:
    _submit(course, "solved", None)
    _submit(course, "blank", ())
    _submit(course, "swallows-failures", (), letter=SWALLOW)
    _submit(course, "patches-modules", (), letter=PATCH_MODULES)
    _submit(course, "edits-tests", ())
    edit(
        course,
        "edits-tests",
        lambda cell: (
            cell.metadata.get("nbgrader", {}).get("grade")
            and cell.update(source="print('all tests pass')")
        ),
        ASSIGNMENT,
        NOTEBOOK,
    )
    _submit(course, "dies-when-called", None, double=DIES_WHEN_CALLED)
    _submit(course, "ignores-interrupt", None, letter=IGNORES_INTERRUPT)
    _submit(course, "floods-output", None, letter=FLOOD)

    outcomes = grade_class(
        course,
        ASSIGNMENT,
        settings=GradingSettings(jobs=2, cell_timeout=15, patience=8),
        provider="practice",
    )
    print(table(outcomes))

    expected = {
        "solved": FULL,
        "blank": 0,
        "swallows-failures": 0,
        "patches-modules": POINTS["letter"] + POINTS["double"],
        "edits-tests": 0,
        # The kernel dies while the grader calls double(); the fresh kernel has no
        # `lab`, so deploy fails too.
        "dies-when-called": POINTS["letter"],
        # The loop is killed with its kernel: q is gone, the later cells run in a
        # fresh kernel without `lab`.
        "ignores-interrupt": POINTS["double"],
        "floods-output": FULL,
    }
    assert {o.student: (o.status, o.score) for o in outcomes} == {
        s: ("graded", p) for s, p in expected.items()
    }
    flooded = course / "autograded" / "floods-output" / ASSIGNMENT / NOTEBOOK
    assert flooded.stat().st_size < 2_000_000


# Formgrader shows the autograded notebook in the instructor's browser: none of this may run there.
DISPLAYS_SCRIPTS = """from IPython.display import HTML, SVG, Javascript, Markdown, display
display(HTML("<script>alert('xss-html')</script>"))
display(Javascript("alert('xss-js')"))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg"><script>alert("xss-svg")</script></svg>'))
display(Markdown("<img src=x onerror=alert('xss-md')>"))"""


def _rewrite(course: Path, student: str, change) -> None:
    """Apply `change(notebook)` to a submitted notebook; save it as plain, unvalidated JSON."""
    path = course / "submitted" / student / ASSIGNMENT / NOTEBOOK
    notebook = nbformat.read(path, as_version=4)
    change(notebook)
    path.write_text(json.dumps(notebook))


def _tests(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade")]


def _as_markdown(notebook: nbformat.NotebookNode) -> None:
    notebook.cells = [
        new_markdown_cell(cell.source, metadata=cell.metadata) if cell in _tests(notebook) else cell
        for cell in notebook.cells
    ]


def _answers_as_tests(notebook: nbformat.NotebookNode) -> None:
    """Every answer cell claims the grade_id of its test, with 100 points and nothing to run."""
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("solution"):
            name = cell.metadata.nbgrader["grade_id"]
            cell.metadata.nbgrader.update(
                grade=True, solution=False, points=100, grade_id=f"test-{name}"
            )
            cell.source = "pass"


@pytest.mark.cluster
@pytest.mark.slow
def test_edited_notebook_structure_earns_what_the_answers_earn_and_never_an_error(
    course: Path,
) -> None:
    _submit(course, "forged-points", None)
    _rewrite(
        course,
        "forged-points",
        lambda nb: [cell.metadata.nbgrader.update(points=100) for cell in _tests(nb)],
    )
    _submit(course, "extra-graded-cell", ())
    _rewrite(
        course,
        "extra-graded-cell",
        lambda nb: nb.cells.append(
            new_code_cell("pass", metadata=_meta("bonus", grade=True, locked=True, points=50))
        ),
    )
    _submit(course, "duplicated-tests", ())
    _rewrite(course, "duplicated-tests", lambda nb: nb.cells.extend(copy.deepcopy(_tests(nb)) * 2))
    _submit(course, "tests-as-markdown", ())
    _rewrite(course, "tests-as-markdown", _as_markdown)
    _submit(course, "answers-as-tests", ())
    _rewrite(course, "answers-as-tests", _answers_as_tests)
    _submit(course, "deleted-tests", None)
    _rewrite(
        course,
        "deleted-tests",
        lambda nb: nb.update(cells=[c for c in nb.cells if c not in _tests(nb)]),
    )
    _submit(course, "no-metadata", None)
    _rewrite(
        course, "no-metadata", lambda nb: [cell.metadata.pop("nbgrader", None) for cell in nb.cells]
    )
    _submit(course, "big-outputs", None)
    _rewrite(
        course,
        "big-outputs",
        lambda nb: nb.cells[1].update(
            outputs=[{"output_type": "stream", "name": "stdout", "text": "x" * 30_000_000}]
        ),
    )
    bonus = new_notebook(
        cells=[new_code_cell("pass", metadata=_meta("bonus", grade=True, locked=True, points=50))]
    )
    extra = submissions.write(course, ASSIGNMENT, "extra-notebooks", None)
    for where in (
        "zz-bonus.ipynb",
        "00-first.ipynb",
        "folder/answers.ipynb",
        "folder.ipynb/answers.ipynb",
    ):
        (extra / where).parent.mkdir(exist_ok=True)
        nbformat.write(bonus, extra / where)
    _submit(
        course, "renders-forever", None
    )  # nbconvert's Markdown needs ~7 minutes for these brackets
    _rewrite(
        course, "renders-forever", lambda nb: nb.cells.append(new_markdown_cell("[" * 300_000))
    )
    _submit(course, "scripts-the-grader", None)
    _rewrite(
        course,
        "scripts-the-grader",
        lambda nb: nb.cells.extend(
            [
                new_markdown_cell(
                    "<img src=x onerror=\"alert('xss')\"><script>alert('xss')</script>"
                ),
                new_raw_cell("<script>alert('xss-raw')</script>", metadata={"format": "text/html"}),
                new_code_cell(DISPLAYS_SCRIPTS),
            ]
        ),
    )
    nothing = submissions.write(course, ASSIGNMENT, "no-notebook", None)
    (nothing / NOTEBOOK).unlink()
    folder = submissions.write(course, ASSIGNMENT, "notebook-is-a-folder", None)
    (folder / NOTEBOOK).unlink()
    (folder / NOTEBOOK).mkdir()
    nbformat.write(bonus, folder / NOTEBOOK / NOTEBOOK)
    for student, content in [
        ("not-json", b"\x00\xff" * 1000),
        ("not-cells", b'{"nbformat": 4, "cells": "x"}'),
        ("too-big", b'{"nbformat": 4, "cells": [], "x": "' + b"x" * 110_000_000 + b'"}'),
        (
            "lone-surrogate",
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": '
            b'[{"cell_type": "code", "source": "\\ud800", "metadata": {}}]}',
        ),
    ]:
        _submit(course, student, None)
        (course / "submitted" / student / ASSIGNMENT / NOTEBOOK).write_bytes(content)

    outcomes = grade_class(
        course,
        ASSIGNMENT,
        [
            "forged-points",
            "extra-graded-cell",
            "duplicated-tests",
            "tests-as-markdown",
            "answers-as-tests",
            "deleted-tests",
            "no-metadata",
            "big-outputs",
            "not-json",
            "not-cells",
            "too-big",
            "lone-surrogate",
            "extra-notebooks",
            "no-notebook",
            "notebook-is-a-folder",
            "renders-forever",
            "scripts-the-grader",
        ],
        GradingSettings(jobs=2, cell_timeout=15, patience=8, feedback_timeout=15),
        provider="practice",
    )
    print(table(outcomes))

    full = {
        "forged-points",
        "deleted-tests",
        "no-metadata",
        "big-outputs",
        "extra-notebooks",
        "renders-forever",
        "scripts-the-grader",
    }
    assert {o.student: (o.status, o.score, o.max_score) for o in outcomes} == {
        o.student: ("graded", FULL if o.student in full else 0, FULL) for o in outcomes
    }
    details = {o.student: o.detail for o in outcomes}
    assert "test cell(s) test-letter, test-double, test-deploy put back" in details["deleted-tests"]
    assert "was not the assignment's and was replaced" in details["extra-graded-cell"]
    assert details["too-big"] == (
        f"missing notebook(s): {NOTEBOOK}. not copied in for grading: {NOTEBOOK} (105 MB, "
        "more than the 100 MB a file may have)."
    )
    for student in ("not-json", "not-cells"):
        assert (
            f"{NOTEBOOK} is not a notebook" in details[student]
            and "graded as unanswered" in details[student]
        )
    assert "1 item(s) of its cell list that are not cells dropped" in details["lone-surrogate"]
    assert (
        f"not notebooks of {ASSIGNMENT}, so not graded: 00-first.ipynb, "
        "folder.ipynb, zz-bonus.ipynb." in details["extra-notebooks"]
    )
    assert details["no-notebook"] == f"missing notebook(s): {NOTEBOOK}."
    assert details["renders-forever"] == "No feedback: it took longer than 15 s to render."
    assert [
        o.student
        for o in outcomes
        if not (course / "feedback" / o.student / ASSIGNMENT / "answers.html").is_file()
    ] == ["renders-forever"]
    assert (
        details["notebook-is-a-folder"]
        == f"{NOTEBOOK} is a folder, not a notebook, so it was graded as unanswered."
    )
    autograded = json.loads(
        (course / "autograded" / "scripts-the-grader" / ASSIGNMENT / NOTEBOOK).read_text()
    )
    shown = {
        mimetype
        for cell in autograded["cells"]
        for output in cell.get("outputs", [])
        for mimetype in output.get("data", {})
    }
    assert shown == {"text/plain"}, shown
    page = (course / "feedback" / "scripts-the-grader" / ASSIGNMENT / "answers.html").read_text()
    assert not re.search(r"<script[^>]*>[^<]*xss|<img[^>]*onerror|<svg", page)
    original = json.loads(
        (course / "submitted" / "forged-points" / ASSIGNMENT / NOTEBOOK).read_text()
    )
    assert {
        cell["metadata"]["nbgrader"]["points"] for cell in _tests(nbformat.from_dict(original))
    } == {100}
