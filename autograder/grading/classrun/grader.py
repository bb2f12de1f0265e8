"""Grade one submission: its namespace, its worker (the jailed kernels run under it), clean-up."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from kubernetes import client

from autograder import IMAGE_BUILDER_ENV
from autograder.grading import answers, nodes, sandbox
from autograder.grading.classrun import ledger, repair, submissions
from autograder.grading.classrun.course import Course, last_lines, recorded_scores, scores
from autograder.grading.classrun.kindimages import SubmissionImages
from autograder.grading.classrun.ledger import Ledger, Outcome, submission_digest
from autograder.grading.kernel import jail
from autograder.grading.names import check_student_id, digest, namespace_for, printable
from autograder.grading.request import WorkerRequest, plain_config
from autograder.grading.settings import GradingSettings
from autograder.grading.worker import autograde as worker
from autograder.grading.worker.verify import timed
from autograder.shared import binaries, isolation, processes

logger = logging.getLogger(__name__)

MAX_LISTED = 10  # skipped files named in an outcome's note


class Grader:
    """Grades submissions one by one or in parallel; each failure stays with its submission."""

    def __init__(
        self, course: Course, assignment: str, settings: GradingSettings, staging: Path
    ) -> None:
        self.course, self.assignment, self.settings, self.staging = (
            course,
            assignment,
            settings,
            staging,
        )
        self.admin: client.ApiClient | None = None
        self.nodes: nodes.Snapshot = {}
        self.ledger = Ledger(course.root, assignment)
        self.course_config = plain_config(course.config)  # checked before any submission runs
        self.recorded = recorded_scores(course, assignment)
        self.deadline = deadline(course, assignment, settings)
        self.stopping = threading.Event()
        self.damaged: str | None = None
        self.hide = jail_hides() if settings.jail else []
        self.masters = {
            name: nbformat.read(course.source(assignment) / name, as_version=4)
            for name in course.notebooks(assignment)
        }
        self.workers: Path | None = None  # the run's worker fork server, when one listens
        self.images: SubmissionImages | None = None  # on kind: the grader builds what kernels load
        self._staged: dict[str, tuple[str, list[str]]] = {}
        self._running: set[subprocess.Popen] = set()
        self._restores: list[threading.Thread] = []
        self._lock = threading.Lock()

    def prepare(self, student: str) -> Outcome | None:
        """Check the ID, copy the submission in and resume it; None when it is yet to be graded."""
        problem = check_student_id(student) or self._folder_problem(student)
        if problem:
            return Outcome(printable(student), "error", detail=problem)
        copy = self.staging / student / self.assignment
        try:
            skipped = submissions.stage(self.course.submitted(student, self.assignment), copy)
        except Exception as error:  # whatever the folder holds, the class goes on
            return Outcome(
                student, "error", detail=f"the submission could not be copied in: {error}"
            )
        submission = submission_digest(copy)
        done = self.ledger.done(student, submission)
        if self.settings.regrade or done is None or self.recorded.get(student) != done.score:
            try:
                self._staged[student] = submission, self._notes(copy, skipped)
            except Exception as error:  # whatever the submission holds, the class goes on
                logger.exception("could not prepare %s", printable(student))
                return Outcome(
                    student, "error", detail=f"its notebooks could not be prepared: {error}"
                )
            return None
        done.status, done.detail = "graded", "already graded (resumed)"
        return done

    def _notes(self, copy: Path, skipped: list[str]) -> list[str]:
        """What the instructor should know of a staged submission, its notebooks repaired.

        A missing notebook is staged as released: it is graded as left unanswered, so even a
        submission without any notebook gets its zero in the gradebook.
        """
        missing = [name for name in self.masters if not (copy / name).exists()]
        notes = [f"missing notebook(s): {', '.join(missing)}."] if missing else []
        if extra := sorted(
            path.name for path in copy.glob("*.ipynb") if path.name not in self.masters
        ):
            notes.append(f"not notebooks of {self.assignment}, so not graded: {', '.join(extra)}.")
        if skipped:
            more = f" and {len(skipped) - MAX_LISTED} more" if len(skipped) > MAX_LISTED else ""
            notes.append(f"not copied in for grading: {', '.join(skipped[:MAX_LISTED])}{more}.")
        for name, master in self.masters.items():
            path, released = (
                copy / name,
                answers.released(self.course.source(self.assignment) / name),
            )
            if path.is_dir():  # the staged copy holds only the grader's folders and regular files
                shutil.rmtree(path)
                notes.append(f"{name} is a folder, not a notebook, so it was graded as unanswered.")
            if not path.exists():
                nbformat.write(released, path)
            elif note := repair.repair(path, master, released):
                notes.append(note)
        return notes

    def _folder_problem(self, student: str) -> str | None:
        """Why submitted/<student>/<assignment> is not readable as the student's own folder."""
        folder = self.course.submitted(student, self.assignment)
        for path in (folder.parent, folder):
            if not path.is_dir():
                return f"no submission: {path} does not exist"
            if path.is_symlink():
                return f"{path} is a symlink; a submission must be a folder of its own"
        return None

    def grade(self, student: str) -> Outcome:
        """Grade one prepared submission; every problem is an error outcome, never an exception."""
        started = time.monotonic()
        submission, notes = self._staged[student]
        try:
            outcome = self._run(student)
        except (
            Exception
        ) as error:  # a broken submission or a cluster hiccup must not stop the class
            outcome = Outcome(student, "error", detail=f"{type(error).__name__}: {error}")
        outcome.seconds, outcome.submission = time.monotonic() - started, submission
        outcome.detail = " ".join([*notes, outcome.detail]).strip()
        if outcome.status == "graded":
            self.ledger.record(outcome)
        return outcome

    def _run(self, student: str) -> Outcome:
        namespace = namespace_for(student, self.assignment, self.course.key)
        output = self.course.autograded(student, self.assignment)
        clear_output(output)
        phases: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix=f"{namespace}-") as workdir:
            try:
                with timed("sandbox set-up", phases):
                    box = sandbox.create(
                        self.admin,
                        namespace,
                        course=self.course.key,
                        assignment=digest(self.assignment),
                        student=student,
                        workdir=Path(workdir),
                    )
                with timed("worker", phases), self._own_images(namespace):
                    result = self._autograde(student, box)
            finally:
                with timed("clean-up", phases):
                    sandbox.delete(self.admin, namespace, wait=0)
                    self._restore_nodes()
        inside = result.get("phases") or {}
        phases.update(inside, worker=phases["worker"] - sum(inside.values()))
        if (planted := foreign_entries(output)) or self._gradebook_damaged(student):
            clear_output(output)
            return Outcome(
                student,
                "error",
                detail=f"its grading left links in {output}: {', '.join(planted)}"
                if planted
                else "the gradebook was damaged while it was graded",
            )
        if not result.get("success"):
            return Outcome(
                student,
                "error",
                detail=last_lines(result.get("error") or result.get("log", "")),
                phases=phases,
            )
        outcome = scores(self.course, self.assignment, student)
        outcome.phases = phases
        return outcome

    def _own_images(self, namespace: str) -> contextlib.AbstractContextManager:
        """On kind, the nodes hold only what this submission builds while it is graded."""
        return self.images.serving(namespace) if self.images else contextlib.nullcontext()

    def _restore_nodes(self) -> None:
        """Nodes as before the run, once no notebook that may cordon them is running.

        With one worker that is at once, before the next submission starts. With several, another
        submission's notebook 07 may hold the lock for seconds: the restore waits for it in a thread
        of its own while this worker goes on, and no notebook 07 starts before the nodes are back
        (nodes.exclusive).
        """
        if self.settings.jobs <= 1:
            self._restore_under_lock()
            return
        restore = threading.Thread(target=self._restore_in_background, name="node restore")
        restore.start()
        with self._lock:
            self._restores.append(restore)

    def restores_done(self) -> None:
        """Wait for node restores still waiting their turn: the run ends with the nodes it found."""
        with self._lock:
            pending, self._restores = self._restores, []
        for restore in pending:
            restore.join()

    def _restore_in_background(self) -> None:
        try:
            self._restore_under_lock()
        except Exception as error:  # nobody waits on this thread: say it where the instructor looks
            logger.error(
                "%s; the submissions graded next may meet changed nodes "
                "(kubectl get nodes shows them)",
                error,
            )

    def _restore_under_lock(self) -> None:
        with open(nodes.lock_file(self.course.root), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            nodes.restore(self.admin, self.nodes)

    def _gradebook_damaged(self, student: str) -> bool:
        path = self.course.gradebook()
        if path is None or ledger.gradebook_problem(path) is None:
            return False
        self.damaged = student
        self.stop()
        return True

    def _autograde(self, student: str, box: sandbox.Sandbox) -> dict:
        if self.stopping.is_set():
            return {"success": False, "error": "grading was interrupted before this submission ran"}
        command = [sys.executable, "-I", "-m", worker.WORKER_MODULE]
        if self.workers is not None:
            command[3:] = [
                "autograder.shared.forkserver",
                "--socket",
                str(self.workers),
                "--module",
                worker.WORKER_MODULE,
                "--",
            ]
        request = WorkerRequest.of(
            self.settings,
            course=self.course.root,
            assignment=self.assignment,
            student=student,
            namespace=box.namespace,
            reader_kubeconfig=box.reader_kubeconfig,
            lender_kubeconfig=box.lender_kubeconfig,
            submitted_directory=self.staging,
            jail_hide=tuple(self.hide),
            course_config=self.course_config,
        )
        command += ["--request", request.to_json()]
        with self._lock:  # a Ctrl-C between start and registration would leave the worker running
            if self.stopping.is_set():
                return {
                    "success": False,
                    "error": "grading was interrupted before this submission ran",
                }
            process = subprocess.Popen(
                command,
                env=kernel_environment(box, images_built=self.images is not None),
                cwd=self.course.root,
                text=True,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            self._running.add(process)
        try:
            out, err = process.communicate(timeout=self.deadline)
        except subprocess.TimeoutExpired:
            _kill(process)
            _reap(process)
            return {
                "success": False,
                "error": f"stopped after {self.deadline:.0f} s (the whole-submission limit)",
            }
        finally:
            with self._lock:
                self._running.discard(process)
        if self.stopping.is_set():
            return {"success": False, "error": "grading was interrupted while this submission ran"}
        try:
            return json.loads(out)
        except ValueError:
            return {
                "success": False,
                "error": f"{err}\nthe grading worker ended with exit code {process.returncode}",
            }

    def stop(self) -> None:
        """Ctrl-C: kill running workers' process groups.

        The thread that owns each reaps it and deletes its namespace.

        Only the owning thread reads a worker's pipes: two threads in communicate() on one process
        close each other's file descriptors (the `Bad file descriptor` a Ctrl-C used to end with).
        """
        self.stopping.set()
        with self._lock:
            for process in self._running:
                _kill(process)


def kernel_environment(
    box: sandbox.Sandbox | None, *, images_built: bool = False
) -> dict[str, str]:
    """The worker's and the student kernel's environment.

    Allowlisted, and only the student's kubeconfig; `images_built`: the grader builds the images
    the kernel records (kind).

    Without a sandbox: no cluster at all, as the worker server imports.
    """
    env = {
        k: v
        for k, v in jail.kernel_environment(os.environ).items()
        if k != "KUBECONFIG" and not k.startswith("LAB_")
    }
    if box is not None:
        # The namespace travels one way: the student kubeconfig's context names it.
        env.update(KUBECONFIG=str(box.student_kubeconfig), LAB_CLUSTER="existing")
        if images_built:
            env[IMAGE_BUILDER_ENV] = "grader"
    # kubectl (for port-forward) from wherever the grader found it: the jailed
    # kernel has an empty cache.
    tools = [
        str(path.resolve().parent) for path in map(binaries.find, jail.TOOLS) if path is not None
    ]
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *tools, isolation.SYSTEM_PATH])
    return env


def jail_hides() -> list[Path]:
    """What the jailed kernel must not see: the usual secrets and the grader's own kubeconfig."""
    own = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return [*jail.default_secrets(), *own]


def deadline(course: Course, assignment: str, settings: GradingSettings) -> float:
    """The longest a whole submission may take: every code cell at its timeout, plus start-up."""
    cells = sum(
        sum(
            1
            for cell in nbformat.read(course.source(assignment) / name, as_version=4).cells
            if cell.cell_type == "code"
        )
        for name in course.notebooks(assignment)
    )
    return cells * (settings.cell_timeout + settings.patience) + 120


def _kill(process: subprocess.Popen) -> None:
    """The worker, its process group and kernels in sessions of their own: they hold its pipes."""
    processes.kill_tree(process.pid)
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(process: subprocess.Popen) -> None:
    try:
        process.communicate(timeout=30)
    except (
        subprocess.TimeoutExpired
    ):  # a straggler still holds the pipes; the worker itself is gone
        pass


def clear_output(folder: Path) -> None:
    """Remove autograded/<student>/<assignment> and links on its way, so nbgrader writes anew."""
    for path in (folder.parent.parent, folder.parent):
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            path.unlink()
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)


def foreign_entries(folder: Path) -> list[str]:
    """Entries of an output folder that are not plain folders or singly linked regular files."""
    if not folder.exists() and not folder.is_symlink():
        return []
    if folder.is_symlink() or folder.parent.is_symlink():
        return [str(folder)]
    found = []
    for path in folder.rglob("*"):
        info = path.lstat()
        if not (stat.S_ISDIR(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink == 1)):
            found.append(str(path.relative_to(folder)))
    return sorted(found)
