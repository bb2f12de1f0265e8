"""Run an autograded test cell in the grader's process, on the student's answers as data.

nbgrader scores a test cell by what the student's kernel reports, and a kernel can report
anything (an AST transformer that swallows every AssertionError earns full marks). Here the
test cell, as nbgrader restored it from the gradebook, never runs in the kernel. The grader runs
it itself, in a fresh namespace made of the master's own imports, `lab` read through the
grader's read-only identity, and the student's values fetched from the kernel as JSON (functions
as handles that are called back in the kernel). The verdict is the grader's alone.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import traceback
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager
from nbformat import NotebookNode
from nbgrader.utils import is_grade, is_solution

from autograder.grading.worker import values
from autograder.shared.waiting import CONVERGING_INTERVAL, poll

FILENAME = "<test cell>"
MAX_SHOWN = (
    20_000  # characters of one output kept: a message may carry a student's value of megabytes
)


def python_source(cell_source: str) -> str:
    """A cell's source as plain Python (IPython magics turned into calls)."""
    return TransformerManager().transform_cell(cell_source)


def is_test(cell: NotebookNode) -> bool:
    """An autograded test cell: graded, not an answer cell."""
    return cell.cell_type == "code" and is_grade(cell) and not is_solution(cell)


def trusted_imports(master: NotebookNode) -> str:
    """Every import statement of the master's provided cells: what the test cells may rely on."""
    statements: list[str] = []
    for cell in master.cells:
        if cell.cell_type != "code" or is_solution(cell) or is_grade(cell):
            continue
        tree = ast.parse(python_source(cell.source))
        statements += [
            ast.unparse(node)
            for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom))
        ]
    return "\n".join(dict.fromkeys(statements))


def bound_names(tree: ast.AST) -> set[str]:
    """Names a piece of code binds itself: assignments, imports, defs, loop and with targets."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bound.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound


def free_names(source: str) -> list[str]:
    """Names a test cell reads but neither binds nor gets from builtins: the student's answers."""
    tree = ast.parse(python_source(source))
    loaded = [
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
    ]
    skip = bound_names(tree) | set(dir(builtins))
    return sorted({name for name in loaded if name not in skip})


def master_answers(master: NotebookNode) -> set[str]:
    """Names the master's answer cells bind: what a test cell may ask the student's kernel for."""
    return set().union(
        *(
            bound_names(ast.parse(python_source(c.source)))
            for c in master.cells
            if c.cell_type == "code" and is_solution(c)
        )
    )


def unjudgeable(master: NotebookNode) -> list[str]:
    """Test cells of a master whose names the grader could not supply: each judged blind."""
    provided = bound_names(ast.parse(trusted_imports(master))) | master_answers(master) | {"lab"}
    problems = []
    for cell in master.cells:
        if cell.cell_type == "code" and is_grade(cell) and is_solution(cell):
            problems.append(
                f"{cell.metadata.nbgrader['grade_id']}: an autograded answer cell is scored "
                "by the kernel's own output; make it an answer cell plus a test cell"
            )
        elif is_test(cell):
            unknown = [name for name in free_names(cell.source) if name not in provided]
            if unknown:
                problems.append(
                    f"{cell.metadata.nbgrader['grade_id']}: uses {', '.join(unknown)}, which no "
                    "import of a provided cell and no answer cell defines"
                )
    return problems


def namespace(imports: str, lab: Any, student: dict[str, Any]) -> dict[str, Any]:
    """A fresh namespace per test cell: the master's imports, the grader's lab, the answers."""
    scope: dict[str, Any] = {"__name__": "__grader__", "__builtins__": builtins}
    scope.update(student)
    exec(compile(imports, "<master imports>", "exec"), scope)
    scope["lab"] = lab
    return scope


def student_values(
    names: Iterable[str], provided: AbstractSet[str], ask: Callable[[str], str]
) -> dict[str, Any]:
    """The student's values for `names` the master's imports lack, read from the kernel."""
    wanted = [name for name in names if name not in provided and name != "lab"]
    if not wanted:
        return {}
    reply = json.loads(ask(f"snapshot(globals(), {wanted!r})"))
    found: dict[str, Any] = {}
    for name in wanted:
        entry = reply.get(name, {"missing": True})
        if "value" in entry:
            found[name] = values.decode(entry["value"], ask, name)
    return found


def run(source: str, scope: dict[str, Any], patience: float) -> list[NotebookNode]:
    """Execute a test cell; retry while a check says the cluster is still converging."""
    code = compile(python_source(source), FILENAME, "exec")

    def attempt() -> tuple[str, Exception | None]:
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                exec(code, dict(scope))
        except Exception as error:  # the test's verdict: any exception fails the cell
            return printed.getvalue(), error
        return printed.getvalue(), None

    # A check that failed only because the controllers lag (its result is `pending`) is asked again.
    printed, error = poll(
        attempt,
        lambda outcome: not getattr(getattr(outcome[1], "result", None), "pending", False),
        patience,
        CONVERGING_INTERVAL,
    )
    return _outputs(printed, error)


def _outputs(printed: str, error: BaseException | None = None) -> list[NotebookNode]:
    """The cell's outputs as nbgrader scores them: an error output means no points."""
    outputs = (
        [NotebookNode(output_type="stream", name="stdout", text=_clip(printed))] if printed else []
    )
    if error is not None:
        shown = _clip(
            "".join(traceback.format_exception(error, limit=-3)).rstrip("\n")
        ).splitlines()
        outputs.append(
            NotebookNode(
                output_type="error",
                ename=type(error).__name__,
                evalue=_clip(str(error)),
                traceback=shown,
            )
        )
    return outputs


def _clip(text: str) -> str:
    """At most `MAX_SHOWN` characters, and how many were dropped."""
    if len(text) <= MAX_SHOWN:
        return text
    return f"{text[:MAX_SHOWN]}\n[grader] {len(text) - MAX_SHOWN:,} more characters dropped"
