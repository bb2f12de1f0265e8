"""The grader judges test cells itself: the names it reads, the values it fetches, the lint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from nbgrader.utils import determine_grade

from autograder import REPO_ROOT
from autograder.grading.worker import judge, values
from autograder.lesson.checks import CheckResult


def kernel(namespace: dict[str, Any]):
    """What the grader's `ask` does, with `namespace` standing in for the kernel's globals."""
    return lambda call: eval(f"values.{call}", {**namespace, "values": values})


def _cell(source: str, grade_id: str, **flags: object) -> nbformat.NotebookNode:
    return new_code_cell(
        source,
        metadata={
            "nbgrader": {
                "grade_id": grade_id,
                "grade": False,
                "solution": False,
                "locked": False,
                "schema_version": 3,
                **flags,
            }
        },
    )


def test_free_names_are_what_the_test_reads_but_does_not_bind() -> None:
    source = (
        "import math\nfor x in data:\n    assert f(x) == math.floor(x)\n"
        "result = len(data)\nprint(result, lab)"
    )
    assert judge.free_names(source) == ["data", "f", "lab"]


def test_values_cross_as_data_and_functions_as_handles() -> None:
    def divide(a: float, b: float) -> float:
        return a / b

    student = {
        "answer": {"b": (1, 2.5), "s": {"x"}, "n": None},
        "divide": divide,
        "broken": object(),
    }
    ask = kernel(student)
    found = judge.student_values(["answer", "divide", "broken", "absent"], set(), ask)
    assert found["answer"] == {"b": (1, 2.5), "s": {"x"}, "n": None}
    assert found["divide"](6, b=3) == 2.0
    with pytest.raises(ZeroDivisionError):
        found["divide"](1, 0)
    assert found["broken"] != found["broken"] and "absent" not in found
    with pytest.raises(AssertionError, match="the grader reads answers as plain data"):
        found["broken"].keys()


def test_a_function_lost_with_its_kernel_is_not_an_exception_a_test_may_expect() -> None:
    double = judge.student_values(["double"], set(), kernel({"double": lambda x: 2 * x}))["double"]
    values._HANDLES.clear()  # what a kernel restart does
    with pytest.raises(values.StudentError, match="kernel was restarted"):
        double(1)


def test_a_student_exception_type_of_its_own_cannot_pose_as_a_pass() -> None:
    student: dict[str, Any] = {}
    exec("class Sneaky(Exception):\n    pass\ndef f():\n    raise Sneaky('x')", student)
    with pytest.raises(values.StudentError, match="Sneaky: x"):
        judge.student_values(["f"], set(), kernel(student))["f"]()


def test_run_scores_by_the_graders_own_execution() -> None:
    passed = judge.run(
        "assert double(2) == 4\nprint('ok')", {"double": lambda x: 2 * x}, patience=0
    )
    failed = judge.run("assert double(2) == 4", {"double": lambda x: x}, patience=0)
    cell = new_code_cell("", metadata={"nbgrader": {"grade": True, "solution": False, "points": 2}})
    cell.outputs = passed
    assert determine_grade(cell) == (2, 2) and passed[0].text == "ok\n"
    cell.outputs = failed
    assert determine_grade(cell) == (0, 2) and failed[-1].ename == "AssertionError"


def test_run_waits_only_while_a_check_is_pending() -> None:
    answers = iter(
        [CheckResult("c", False, "rolling", pending=True), CheckResult("c", True, "done")]
    )
    assert judge.run("next(answers).assert_passed()", {"answers": answers}, patience=5)[-1:] == []
    asked: list[int] = []
    missing = lambda: asked.append(1) or CheckResult("c", False, "no deployment")  # noqa: E731
    outputs = judge.run("missing().assert_passed()", {"missing": missing}, patience=5)
    assert outputs[-1].ename == "CheckFailed" and asked == [1]  # no waiting on what cannot come


def test_trusted_imports_come_from_provided_cells_only() -> None:
    master = new_notebook(
        cells=[
            new_code_cell("%matplotlib inline\nimport math\nfrom autograder import checks\nx = 1"),
            _cell("import os\nanswer = 1", "answer", solution=True),
            _cell("import sys\nassert answer == 1", "test", grade=True, points=1),
        ]
    )
    assert judge.trusted_imports(master) == "import math\nfrom autograder import checks"
    assert judge.unjudgeable(master) == []
    master.cells.append(_cell("assert x == 1", "test-x", grade=True, points=1))
    master.cells.append(_cell("y = 2", "graded-answer", grade=True, solution=True, points=1))
    assert [problem.split(":")[0] for problem in judge.unjudgeable(master)] == [
        "test-x",
        "graded-answer",
    ]


@pytest.mark.parametrize(
    "master", sorted((REPO_ROOT / "source" / "lesson01").glob("*.ipynb")), ids=lambda p: p.stem
)
def test_every_graded_cell_of_the_masters_is_judged_by_the_grader(master: Path) -> None:
    assert judge.unjudgeable(nbformat.read(master, as_version=4)) == []
