"""Grade cluster steps in the grader's process, not only in the student's kernel.

nbgrader scores an autograder test cell by its outputs: no error means full points. A kernel
can fake that (monkeypatch `autograder.checks`, swallow the AssertionError). So right after
each test cell runs, `ClusterVerifiedExecute` (an nbgrader `Execute` preprocessor, running in
the nbgrader process) finds the check calls in the cell's source, as restored from the
gradebook by nbgrader's OverwriteCells, runs them itself with read-only credentials, and adds
its verdict: the cell scores only when the kernel's run and the grader's checks both pass.
Hidden-test arguments must be literals after the
lab, e.g. `deployment_ready(lab, "ml-api", replicas=3).assert_passed()` or
`eventually(scaled_to, lab, "ml-api", 5)`.
"""

from __future__ import annotations

import ast
import fcntl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from IPython.core.inputtransformer2 import TransformerManager
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from nbgrader.utils import is_grade, is_solution
from traitlets import Float, List, Unicode

from autograder import checks
from autograder.lab import kubeconfig
from autograder.lab.cluster import Lab

GRADER_MARK = "[grader]"


@dataclass(frozen=True)
class CheckCall:
    """One check a hidden test asks for: its name and the literal arguments after the lab."""

    name: str
    args: tuple
    kwargs: dict[str, Any]

    def __str__(self) -> str:
        shown = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.name}(lab, {', '.join(shown)})"


class UnreadableCheck(ValueError):
    """A test cell calls a check with arguments the grader cannot evaluate without the kernel."""


def _name_of(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literal(node: ast.expr, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise UnreadableCheck(f"{where}: argument {ast.unparse(node)!r} is not a literal") from None


def _call_of(node: ast.Call) -> CheckCall | None:
    """The check a call runs: `check(lab, ...)` or `eventually(check, lab, ...)`."""
    name, args = _name_of(node.func), list(node.args)
    if name == "eventually" and args and _name_of(args[0]) in checks.CHECKS:
        name, args = _name_of(args[0]), args[1:]
        keywords = [k for k in node.keywords if k.arg not in {"timeout", "interval"}]
    elif name in checks.CHECKS:
        keywords = node.keywords
    else:
        return None
    if not args or any(isinstance(a, ast.Starred) for a in args) or any(k.arg is None for k in keywords):
        raise UnreadableCheck(f"{ast.unparse(node)}: pass the lab first, then literal arguments")
    where = ast.unparse(node)
    return CheckCall(name, tuple(_literal(a, where) for a in args[1:]),
                     {k.arg: _literal(k.value, where) for k in keywords})


def check_calls(source: str) -> list[CheckCall]:
    """Every check call in a cell's source, in order (IPython magics allowed)."""
    tree = ast.parse(TransformerManager().transform_cell(source))
    found: list[tuple[tuple[int, int], CheckCall]] = []
    claimed: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and id(node) not in claimed:
            call = _call_of(node)
            if call is not None:
                found.append(((node.lineno, node.col_offset), call))
                claimed.update(id(inner) for inner in ast.walk(node) if inner is not node)
    return [call for _, call in sorted(found, key=lambda item: item[0])]


def reader_lab(kubeconfig_file: str | Path, namespace: str) -> Lab:
    """The grader's own view of one namespace, through the read-only kubeconfig."""
    path = Path(kubeconfig_file)
    return Lab(provider="existing", context=kubeconfig.current_context(path) or "grader",
               namespace=namespace, api=kubeconfig.api_client(config_file=path))


def verdicts(lab: Any, calls: list[CheckCall], patience: float) -> Iterator[checks.CheckResult]:
    """Run each call with up to `patience` seconds for the cluster to converge."""
    for call in calls:
        yield checks.eventually(checks.CHECKS[call.name], lab, *call.args, timeout=patience, **call.kwargs)


def _stream(text: str) -> NotebookNode:
    return NotebookNode(output_type="stream", name="stdout", text=text)


def _error(text: str, ename: str = "AssertionError") -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=text,
                        traceback=[f"{ename}: {line}" for line in text.splitlines()])


def rewrite_outputs(cell: NotebookNode, results: list[checks.CheckResult]) -> None:
    """Add the grader's verdicts to a test cell: it scores only if the kernel and the grader both pass.

    Kernel errors stay (the instructor's other asserts count); results that could claim partial
    credit go, and stderr becomes stdout (a warning is not a failure the grader judges).
    """
    kept = []
    for output in cell.outputs:
        if output.output_type == "execute_result":
            continue
        if output.output_type == "stream" and output.name == "stderr":
            output = _stream(output.text)
        kept.append(output)
    kept.append(_stream("".join(f"{GRADER_MARK} {result}\n" for result in results)))
    failed = [result for result in results if not result]
    if failed:
        kept.append(_error("\n".join(str(result) for result in failed)))
    cell.outputs = kept


class ClusterVerifiedExecute(Execute):
    """nbgrader's Execute, plus the grader's own cluster checks after each autograder test cell."""

    reader_kubeconfig = Unicode("", help="kubeconfig of the read-only grader identity").tag(config=True)
    namespace = Unicode("", help="namespace the submission ran in").tag(config=True)
    patience = Float(30.0, help="seconds a check may wait for the cluster to converge").tag(config=True)
    exclusive_notebooks = List(Unicode(), help="notebooks that need the whole cluster's nodes (GPUs, "
                               "cordoning): run one submission's at a time").tag(config=True)
    exclusive_lock = Unicode("", help="lock file shared by the parallel workers").tag(config=True)

    _lab: Lab | None = None
    _kernel_dead = False

    def _reader(self) -> Lab:
        if self._lab is None:
            if not self.reader_kubeconfig or not self.namespace:
                raise RuntimeError("ClusterVerifiedExecute needs reader_kubeconfig and namespace; "
                                   "grade with `python -m autograder grade`")
            self._lab = reader_lab(self.reader_kubeconfig, self.namespace)
        return self._lab

    def on_cell_executed(self, **kwargs: Any) -> None:
        super().on_cell_executed(**kwargs)
        self._verify(kwargs["cell"])

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> Any:
        self._kernel_dead = False
        name = (resources or {}).get("unique_key", "")
        if name not in self.exclusive_notebooks or not self.exclusive_lock:
            return super().preprocess(nb, resources, km)
        with open(self.exclusive_lock, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            return super().preprocess(nb, resources, km)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> Any:
        """A kernel that dies (os._exit, out of memory) loses the cells after it, not the grading."""
        if not self._kernel_dead:
            try:
                return super().preprocess_cell(cell, resources, index)
            except DeadKernelError:
                self._kernel_dead = True
                cell.outputs.append(_error("the kernel died while running this cell; the cells after it "
                                           "were not run", ename="DeadKernelError"))
                return cell, self.resources
        if cell.cell_type == "code" and is_grade(cell) and not is_solution(cell):
            cell.outputs = [_error("not run: the kernel died in an earlier cell", ename="DeadKernelError")]
        return cell, self.resources

    def _verify(self, cell: NotebookNode) -> None:
        """Replace a test cell's outcome with the grader's own check of the cluster."""
        if cell.cell_type != "code" or not is_grade(cell) or is_solution(cell):
            return
        try:
            calls = check_calls(cell.source)
        except (SyntaxError, UnreadableCheck) as error:
            self.log.error("test cell %s cannot be verified by the grader: %s",
                           cell.metadata.nbgrader.get("grade_id"), error)
            rewrite_outputs(cell, [checks.CheckResult("grader", False, f"cannot verify this test: {error}")])
            return
        if calls:
            rewrite_outputs(cell, list(verdicts(self._reader(), calls, self.patience)))
