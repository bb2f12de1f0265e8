"""No test message gives the answer away: what a failing assert says never shows the grader's truth.

A test cell's message reaches the student: at home for a visible test, in nbgrader's feedback for a
hidden one (and a class may allow resubmission). When an assert compares the student's answer with
a value the test computed itself (read from the cluster, or from the course's own tables), its
message may name the inputs and the student's own value, never that computed value.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from autograder import REPO_ROOT
from autograder.grading.worker import judge

MASTERS = sorted((REPO_ROOT / "source" / "lesson01").glob("*.ipynb"))
BUILTINS = frozenset(dir(builtins))


def _loaded(node: ast.AST) -> set[str]:
    """Every name an expression reads."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _stored(target: ast.AST) -> set[str]:
    """The names an assignment or loop target binds."""
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}


def _bindings(tree: ast.AST) -> list[tuple[set[str], ast.AST]]:
    """Each binding of the cell as (names bound, the expression they come from)."""
    found: list[tuple[set[str], ast.AST]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            found.append((set().union(*map(_stored, node.targets)), node.value))
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and node.value is not None:
            found.append((_stored(node.target), node.value))
        elif isinstance(node, (ast.For, ast.comprehension)):
            found.append((_stored(node.target), node.iter))
    return found


def student_derived(tree: ast.AST, answers: set[str]) -> set[str]:
    """The student's answer names, and every name the cell binds from them."""
    derived = set(answers)
    bindings = _bindings(tree)
    grown = True
    while grown:
        grown = False
        for names, value in bindings:
            if _loaded(value) & derived and not names <= derived:
                derived |= names
                grown = True
    return derived


def _is_students(node: ast.AST, derived: set[str]) -> bool:
    """An expression whose value is the student's: their name, a call of it, a part of it."""
    if isinstance(node, ast.Name):
        return node.id in derived
    if isinstance(node, ast.Call):
        return _is_students(node.func, derived)
    if isinstance(node, (ast.Attribute, ast.Subscript)):
        return _is_students(node.value, derived)
    return False


def inputs(tree: ast.AST, derived: set[str]) -> set[str]:
    """Names the cell passes to the student's functions: the question asked, never its answer."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_students(n.func, derived)]
    return {
        name
        for call in calls
        for argument in [*call.args, *(keyword.value for keyword in call.keywords)]
        for name in _loaded(argument)
    }


def compared(test: ast.AST, derived: set[str]) -> tuple[bool, set[str]]:
    """Whether the assert's condition holds a student's value, and the grader's names it holds."""
    has_student, truth = False, set()
    stack = [test]
    while stack:
        node = stack.pop()
        if _is_students(node, derived):
            has_student = True
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            truth.add(node.id)
        else:
            stack.extend(ast.iter_child_nodes(node))
    return has_student, truth - BUILTINS


def revealing_messages(master: nbformat.NotebookNode) -> list[str]:
    """Asserts of the master's test cells whose message shows what an answer is compared with."""
    answers = judge.master_answers(master)
    found = []
    for cell in master.cells:
        if not judge.is_test(cell):
            continue
        tree = ast.parse(judge.python_source(cell.source))
        derived = student_derived(tree, answers & set(judge.free_names(cell.source)))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Assert) or node.msg is None:
                continue
            has_student, truth = compared(node.test, derived)
            truth -= inputs(tree, derived)
            shown = sorted(_loaded(node.msg) & truth) if has_student else []
            if shown:
                found.append(
                    f"{cell.metadata.nbgrader['grade_id']} line {node.lineno}: "
                    f"its message shows {', '.join(shown)}"
                )
    return found


def _master(*tests: str) -> nbformat.NotebookNode:
    """A master with one answer cell (binding `answer` and `count`) and the given test cells."""
    answer = new_code_cell(
        "def answer(x):\n    return x\ncount = 3",
        metadata={"nbgrader": {"grade_id": "a", "solution": True, "grade": False}},
    )
    cells = [
        new_code_cell(
            source,
            metadata={
                "nbgrader": {"grade_id": f"t{i}", "solution": False, "grade": True, "points": 1}
            },
        )
        for i, source in enumerate(tests)
    ]
    return new_notebook(cells=[new_markdown_cell("#"), answer, *cells])


@pytest.mark.parametrize(
    "source",
    [
        "truth = lab.core.list_node().items\nassert count == len(truth), (count, len(truth))",
        "for x, expected in [(1, 2)]:\n    got = answer(x)\n"
        "    assert got == expected, f'answer({x}) = {got}, expected {expected}'",
        "wanted = sorted(n.metadata.name for n in lab.core.list_node().items)\n"
        "assert answer('') == wanted, f'the nodes are {wanted}'",
        "assert answer(1) == lab.core.list_node().items, lab",
        "for load in lab.core.list_node().items:\n"
        "    assert answer(1)[load.name] == load.cpu, load",
    ],
)
def test_a_message_that_shows_the_compared_value_is_found(source: str) -> None:
    assert revealing_messages(_master(source))


@pytest.mark.parametrize(
    "source",
    [
        "for x, expected in [(1, 2)]:\n    got = answer(x)\n"
        "    assert got == expected, f'answer({x}) returned {got}: look at the rule again'",
        "problems = lab.core.list_node().items\nassert problems == [], problems",
        "node = lab.core.list_node().items[0].metadata.name\n"
        "assert answer(node) == 2, f'answer({node!r}) is wrong: read `kubectl get nodes`'",
        "for role in ('a', 'b'):\n    assert answer(role) == {p for p in lab.find(role)}, role",
    ],
)
def test_inputs_the_students_own_value_and_the_clusters_state_may_be_shown(source: str) -> None:
    assert revealing_messages(_master(source)) == []


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_no_test_message_of_the_masters_shows_the_answer(master: Path) -> None:
    assert revealing_messages(nbformat.read(master, as_version=4)) == []
