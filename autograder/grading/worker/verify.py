"""nbgrader's Execute step, with every verdict decided outside the student's kernel.

`ClusterVerifiedExecute` runs the student's cells in their (jailed) kernel as nbgrader does,
but never sends an autograded test cell there: `judge` runs it in this process on the student's
answers read as data. It also keeps one submission from taking down the grading: output past a
cap is dropped while the cell runs, and a kernel that dies or ignores the interrupt at its
timeout is restarted, so that cell fails and the rest are still graded. While one notebook runs,
the kernel of the submission's next notebook is already starting, so no notebook waits for one.
"""

from __future__ import annotations

import ast
import atexit
import json
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

import nbformat
from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbformat.validator import isvalid
from nbgrader.preprocessors import Execute
from traitlets import Dict, Float, Integer, List, Unicode

from autograder.grading import answers, nodes, settings
from autograder.grading.kernel import jail
from autograder.grading.worker import extended, judge, values
from autograder.shared import kubeconfig, processes
from autograder.shared.errors import LabError
from autograder.shared.provider import Lab

VALUES_MODULE = "__import__('autograder.grading.worker.values', fromlist=['call'])"
# What a kernel's display may leave in the autograded notebook, which formgrader shows in the
# instructor's browser and the feedback in the student's: data, never markup or script (HTML, SVG,
# JavaScript, Markdown or widgets could act there with the instructor's session, grades included).
SAFE_MIMETYPES = frozenset({"text/plain", "image/png", "image/jpeg", "image/gif"})
DISPLAY_MESSAGES = frozenset({"display_data", "execute_result", "update_display_data"})
# Seconds this worker spent per phase; a worker process grades exactly one submission.
PHASES: dict[str, float] = defaultdict(float)
# A kernel already starting for the submission's next notebook (its kernel manager). nbgrader makes
# a new Execute step for every notebook, so the kernel is kept here, where the next step finds it.
NEXT_KERNEL: list[Any] = []


# The uids of the jailed kernels this worker started: a kernel can unset its death signal and
# outlive the launcher jupyter_client kills, so what still runs as one of them is killed by uid.
KERNEL_UIDS: set[int] = set()


@atexit.register
def _stop_unused_kernel() -> None:
    """No next notebook ran (it was missing): stop the kernel started for it; nothing runs on."""
    for manager in NEXT_KERNEL:
        run_sync(lambda manager=manager: ensure_async(manager.shutdown_kernel(now=True)))()
    for uid in KERNEL_UIDS:
        processes.kill_uid(uid)


@contextmanager
def timed(phase: str, into: dict[str, float] = PHASES) -> Iterator[None]:
    """Add the block's duration to `into[phase]` (this worker's `PHASES` unless told otherwise)."""
    started = monotonic()
    try:
        yield
    finally:
        into[phase] = into.get(phase, 0.0) + monotonic() - started


def reader_lab(kubeconfig_file: str | Path, namespace: str) -> Lab:
    """The grader's own view of one namespace, through the read-only kubeconfig."""
    path = Path(kubeconfig_file)
    return Lab(
        provider="existing",
        context=kubeconfig.current_context(path) or "grader",
        namespace=namespace,
        api=kubeconfig.api_client(config_file=path),
        kubeconfig_file=path,
    )


def _error(text: str, ename: str) -> NotebookNode:
    return NotebookNode(
        output_type="error", ename=ename, evalue=text, traceback=[f"{ename}: {text}"]
    )


def _drop_invalid(cell: NotebookNode) -> None:
    """Remove what a kernel's messages put in the cell that nbformat would refuse to save."""
    cell.outputs = [
        output
        for output in cell.outputs
        if isvalid(output, ref="output", version=4, version_minor=5)
    ]
    if not isvalid(cell, ref="code_cell", version=4, version_minor=5):
        cell.execution_count = None


class KernelUnresponsive(LabError):
    """The kernel did not answer the grader in time; it has been restarted."""


class ClusterVerifiedExecute(Execute):
    """nbgrader's Execute whose test cells are judged by the grader, not by the student's kernel."""

    reader_kubeconfig = Unicode("", help="kubeconfig of the read-only grader identity").tag(
        config=True
    )
    namespace = Unicode("", help="namespace the submission ran in").tag(config=True)
    masters = Unicode(
        "", help="folder of the assignment's master notebooks, for their imports"
    ).tag(config=True)
    submission = Unicode(
        "",
        help="folder of this submission's notebooks, to see which ones the student "
        "left as released",
    ).tag(config=True)
    patience = Float(
        settings.default("patience"), help="seconds a test may wait for the cluster to converge"
    ).tag(config=True)
    max_output_bytes = Integer(
        1_000_000, help="output one cell may keep; more is dropped as it arrives"
    ).tag(config=True)
    exclusive_notebooks = List(
        Unicode(),
        help="notebooks that need the whole cluster's nodes (GPUs, "
        "cordoning): run one submission's at a time",
    ).tag(config=True)
    exclusive_lock = Unicode("", help="lock file shared by the parallel workers").tag(config=True)
    nodes_snapshot = Unicode(
        "",
        help="the nodes as the run found them: an exclusive notebook starts on "
        "nodes put back as they were",
    ).tag(config=True)
    exclusive_quota = Dict(
        value_trait=Unicode(),
        help="the extended resources an exclusive notebook may ask for "
        "(e.g. {'requests.nvidia.com/gpu': '3'}); outside it their quota is 0",
    ).tag(config=True)
    lender_kubeconfig = Unicode(
        "",
        help="kubeconfig of the grader identity that lends the extended resources "
        "to an exclusive notebook and takes them back",
    ).tag(config=True)

    km: Any  # nbclient's kernel manager: set when a kernel starts, or handed in by `preprocess`
    _lab: Lab | None = None
    _imports = ""
    _provided: frozenset[str] = frozenset()
    _output_bytes: dict[int, int]
    _deadline = 0.0  # when the test cell being judged runs out of time, kernel calls included
    _notebook = ""

    def _reader(self) -> Lab:
        if self._lab is None:
            if not self.reader_kubeconfig or not self.namespace:
                raise RuntimeError(
                    "ClusterVerifiedExecute needs reader_kubeconfig and namespace; "
                    "grade with `python -m autograder grade`"
                )
            self._lab = reader_lab(self.reader_kubeconfig, self.namespace)
        return self._lab

    def preprocess(self, nb: NotebookNode, resources: Any = None, km: Any = None) -> Any:
        name = (resources or {}).get("unique_key", "")
        if self.submission and answers.unanswered_from(
            name, Path(self.submission), Path(self.masters)
        ):
            for cell in nb.cells:
                if judge.is_test(cell):
                    cell.outputs, cell.execution_count = (
                        [
                            _error(
                                "not run: this notebook and the ones after it hold no answer "
                                "(their code cells are as released)",
                                "NotAnswered",
                            )
                        ],
                        None,
                    )
            return nb, resources
        master = nbformat.read(Path(self.masters) / f"{name}.ipynb", as_version=4)
        self._imports = judge.trusted_imports(master)
        self._provided = frozenset(judge.bound_names(ast.parse(self._imports)))
        self._output_bytes = {}
        self._notebook = name
        spare = NEXT_KERNEL.pop() if NEXT_KERNEL else None
        try:
            if name not in self.exclusive_notebooks or not self.exclusive_lock:
                return super().preprocess(nb, resources, km or spare)
            before = nodes.load(Path(self.nodes_snapshot)) if self.nodes_snapshot else None
            with (
                nodes.exclusive(
                    Path(self.exclusive_lock),
                    lambda: self._reader().core.list_node().items,
                    before,
                    self.timeout or settings.default("cell_timeout"),
                ),
                self._extended_resources(),
            ):
                return super().preprocess(nb, resources, km or spare)
        finally:
            if spare is not None and self.km is not None:
                self._cleanup_kernel()  # a kernel handed in is not shut down by nbclient itself

    def _extended_resources(self) -> AbstractContextManager[None]:
        """The exclusive notebook's extended resources, lent while it runs (none with no lender)."""
        if not self.lender_kubeconfig:
            return nullcontext()
        lender = kubeconfig.api_client(config_file=Path(self.lender_kubeconfig))
        return extended.lent(
            lender,
            self.namespace,
            dict(self.exclusive_quota),
            self.timeout or settings.default("cell_timeout"),
        )

    async def async_start_new_kernel(self, **kwargs: Any) -> None:
        # The kernel must not hold the worker's own output pipes: the grader reads those to the end.
        kwargs.update(
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        with timed("kernel starts"):
            await super().async_start_new_kernel(**kwargs)
        self._note_jailed_kernel()

    def _note_jailed_kernel(self) -> int | None:
        """Remember the uid of the kernel just started, when it runs in the jail; returns it."""
        if self.kernel_name != jail.KERNEL_NAME or self.km is None or self.km.provisioner is None:
            return None
        uid = jail.kernel_uid(self.km.provisioner.pid)
        KERNEL_UIDS.add(uid)
        return uid

    async def async_start_new_kernel_client(self) -> Any:
        with timed("kernel starts"):
            kernel_client = await super().async_start_new_kernel_client()
        # Only now: a kernel's IPC socket files exist once it is ready, and the next
        # one must not pick the same.
        if not NEXT_KERNEL and self._next_notebook_runs():
            await self._async_start_spare()
        return kernel_client

    def _next_notebook_runs(self) -> bool:
        if not self.masters or not self.submission:
            return False
        later = sorted(
            master.stem
            for master in Path(self.masters).glob("*.ipynb")
            if master.stem > self._notebook
        )
        return bool(later) and not answers.unanswered_from(
            later[0], Path(self.submission), Path(self.masters)
        )

    async def _async_start_spare(self) -> None:
        """Start the next notebook's kernel as this one was started; `preprocess` picks it up."""
        current = self.km
        try:
            self.create_kernel_manager()
            await self.async_start_new_kernel()
            NEXT_KERNEL.append(self.km)
        except (
            Exception
        ) as error:  # the next notebook then starts its own kernel, as without a spare
            self.log.warning("could not start the next notebook's kernel early: %s", error)
        finally:
            self.km = current

    # nbclient binds its synchronous wrappers to its own coroutines: rebind
    # them to the overrides above.
    start_new_kernel = run_sync(async_start_new_kernel)
    start_new_kernel_client = run_sync(async_start_new_kernel_client)

    def preprocess_cell(self, cell: NotebookNode, resources: Any, index: int) -> Any:
        if judge.is_test(cell):
            with timed("judging"):
                cell.outputs, cell.execution_count = self._judge(cell), None
            return cell, self.resources
        try:
            with timed("cells"):
                super().preprocess_cell(cell, resources, index)
        except (DeadKernelError, CellTimeoutError) as failure:
            reason = (
                "the kernel died"
                if isinstance(failure, DeadKernelError)
                else f"the cell ran past {self.timeout} s and ignored the interrupt"
            )
            self._restart_kernel()
            cell.outputs.append(
                _error(
                    f"{reason}; the kernel was restarted, so the names earlier "
                    "cells defined are gone",
                    type(failure).__name__,
                )
            )
        if cell.cell_type == "code":
            _drop_invalid(cell)
        return cell, self.resources

    def _judge(self, cell: NotebookNode) -> list[NotebookNode]:
        """The grader's verdict on one test cell (its source as nbgrader restored it)."""
        self._deadline = monotonic() + (self.timeout or settings.default("cell_timeout"))
        try:
            student = judge.student_values(judge.free_names(cell.source), self._provided, self._ask)
        except Exception as error:
            # the kernel may send anything: whatever breaks the reading fails this cell only
            return [
                _error(f"the grader could not read your answers: {error}", type(error).__name__)
            ]
        return judge.run(
            cell.source, judge.namespace(self._imports, self._reader(), student), self.patience
        )

    def _ask(self, call: str) -> str:
        """Evaluate `values.<call>` in the student's kernel and return the string it gives."""
        return run_sync(self._async_ask)(f"{VALUES_MODULE}.{call}")

    async def _async_ask(self, expression: str) -> str:
        assert self.kc is not None
        message = self.kc.execute(
            "", silent=True, store_history=False, user_expressions={"answer": expression}
        )
        while (remaining := self._deadline - monotonic()) > 0:
            try:
                reply = await ensure_async(self.kc.shell_channel.get_msg(timeout=min(remaining, 1)))
            except Empty:
                if not await ensure_async(self.kc.is_alive()):
                    break
                continue
            if reply["parent_header"].get("msg_id") != message:
                continue
            answer = reply["content"].get("user_expressions", {}).get("answer", {})
            if answer.get("status") != "ok":
                raise ValueError(f"{answer.get('ename', 'error')}: {answer.get('evalue', '')}")
            return values.shown_string(answer["data"]["text/plain"])
        await self._async_restart_kernel()
        raise KernelUnresponsive(
            "the kernel did not answer (busy past its timeout, or dead); it was restarted"
        )

    def _restart_kernel(self) -> None:
        run_sync(self._async_restart_kernel)()

    async def _async_restart_kernel(self) -> None:
        """A fresh kernel for the cells that follow; the failed one is killed, not waited for."""
        assert self.km is not None and self.kc is not None
        self.log.warning("restarting the student's kernel")
        failed = self._note_jailed_kernel()
        await ensure_async(self.km.restart_kernel(now=True))
        self._note_jailed_kernel()
        if failed is not None:
            processes.kill_uid(failed)
        await ensure_async(self.kc.wait_for_ready(timeout=self.startup_timeout))

    def process_message(self, msg: dict, cell: NotebookNode, cell_index: int) -> Any:
        """One message of the student's kernel, which may send any.

        Displays keep only `SAFE_MIMETYPES`, widget messages are not kept, and one built to break
        nbclient is dropped, not the notebook.
        """
        msg_type = msg.get("msg_type", "")
        if msg_type.startswith("comm"):
            return None
        content = msg.get("content")
        if (
            msg_type in DISPLAY_MESSAGES
            and isinstance(content, dict)
            and isinstance(content.get("data"), dict)
        ):
            kept = {
                mimetype: value
                for mimetype, value in content["data"].items()
                if mimetype in SAFE_MIMETYPES
            }
            if not kept and content["data"]:
                kept["text/plain"] = (
                    f"[grader] {', '.join(sorted(map(str, content['data'])))} output not kept"
                )
            content["data"] = kept
        try:
            return super().process_message(msg, cell, cell_index)
        except (
            AttributeError,
            IndexError,
            KeyError,
            TypeError,
            ValueError,
            nbformat.ValidationError,
        ) as error:
            self.log.warning("dropped a malformed %s message of the kernel: %r", msg_type, error)
            return None

    def output(
        self, outs: list[NotebookNode], msg: dict, display_id: str | None, cell_index: int
    ) -> Any:
        """Keep at most `max_output_bytes` of a cell's output; a flood never hits memory or disk."""
        used = self._output_bytes.get(cell_index, 0)
        size = len(json.dumps(msg.get("content", {})))
        self._output_bytes[cell_index] = used + size
        if used + size <= self.max_output_bytes:
            return super().output(outs, msg, display_id, cell_index)
        if used <= self.max_output_bytes:
            outs.append(
                NotebookNode(
                    output_type="stream",
                    name="stdout",
                    text=f"\n[grader] output past {self.max_output_bytes:,} bytes was dropped\n",
                )
            )
        return None
