"""Grade a class: each submission in its own namespace and worker process, then feedback and a CSV."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from kubernetes import client
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps import NbGraderAPI
from nbgrader.coursedir import CourseDirectory
from nbgrader.plugins import CsvExportPlugin
from tqdm.auto import tqdm
from traitlets.config import Config

from autograder.grading import jail, sandbox, submissions
from autograder.grading.ledger import LEDGER_DIR, Ledger, Outcome, submission_digest
from autograder.grading.names import check_student_id, digest, namespace_for
from autograder.grading.worker import course_config
from autograder.lab import ClusterError, Lab, binaries, choose, kubeconfig
from autograder.lab.cluster import provider_of_context
from autograder.lesson import steps

Log = Callable[[str], None]
GRADES_CSV = "grades.csv"


class GradingError(ValueError):
    """The class cannot be graded as asked; the message says what to do."""


@dataclass
class Settings:
    """How long a submission may take and how many run at once."""

    jobs: int = 1
    cell_timeout: int = 120
    patience: float = 30.0
    regrade: bool = False
    feedback: bool = True
    jail: bool = True


@dataclass
class Course:
    """An nbgrader course directory and the paths the grader needs from it."""

    root: Path
    config: Config = field(init=False)
    dirs: CourseDirectory = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.config = course_config(self.root)
        self.dirs = CourseDirectory(config=self.config)

    @property
    def key(self) -> str:
        """A label value naming this course directory on the cluster."""
        return digest(str(self.root))

    def source(self, assignment: str) -> Path:
        return Path(self.dirs.format_path(self.dirs.source_directory, ".", assignment))

    def submitted(self, student: str, assignment: str) -> Path:
        return Path(self.dirs.format_path(self.dirs.submitted_directory, student, assignment))

    def notebooks(self, assignment: str) -> list[str]:
        return sorted(p.name for p in self.source(assignment).glob("*.ipynb"))

    def submitters(self, assignment: str) -> list[str]:
        base = Path(self.dirs.root) / self.dirs.submitted_directory
        return sorted(p.parent.name for p in base.glob(f"*/{assignment}") if p.is_dir()) if base.is_dir() else []

    def api(self) -> NbGraderAPI:
        return NbGraderAPI(config=self.config)


def serve_practice_images(admin: client.ApiClient, provider: str | None, log: Log) -> None:
    """On the practice cluster, load the lesson's images and start the traffic router as the grader.

    Student kernels connect as `existing` with a namespace-scoped identity, which can neither
    record images on the nodes nor run the cluster-wide router that port-forwards need.
    """
    chosen = choose(provider)
    if chosen.name != "practice" and provider_of_context(chosen.context) != "practice":
        return
    lab = Lab(provider="practice", context=chosen.context, namespace="default", api=admin)
    for tag in steps.VERSIONS:
        steps.load_image(lab, tag, log=lambda _: None)
    log(f"practice cluster: images {', '.join(steps.VERSIONS)} loaded and the traffic router running")


def admin_client(provider: str | None) -> client.ApiClient:
    """The grader's own client; a cluster that does not answer stops the run before anything is recorded."""
    chosen = choose(provider)
    context = chosen.context
    if not kubeconfig.answers(context):
        raise ClusterError(f"the cluster of context {context!r} does not answer, so nothing was graded; "
                           f"start it (python -m autograder cluster up --provider {chosen.name}) and grade again")
    return kubeconfig.api_client(context)


@contextmanager
def class_lock(course: Course, assignment: str) -> Iterator[None]:
    """One grading run per course and assignment at a time."""
    path = course.root / LEDGER_DIR / f"{assignment}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GradingError(f"another grading run of {assignment!r} holds {path}; wait for it to end") from None
        yield


def require_masters(course: Course, assignment: str) -> None:
    """An assignment exists when source/<assignment> holds notebooks."""
    if course.notebooks(assignment):
        return
    parent = course.source(assignment).parent
    known = sorted(p.name for p in parent.iterdir() if p.is_dir() and any(p.glob("*.ipynb"))) if parent.is_dir() else []
    raise GradingError(f"unknown assignment {assignment!r}: no notebooks in {course.source(assignment)}; "
                       f"assignments found: {', '.join(known) or 'none'}")


def ensure_in_gradebook(course: Course, assignment: str, log: Log) -> None:
    """Autograding needs the assignment in the gradebook: generate it when it is missing there."""
    try:
        with Gradebook(course.dirs.db_url) as gradebook:
            gradebook.find_assignment(assignment)
            return
    except MissingEntry:
        pass
    log(f"{assignment} is not in the gradebook yet: running nbgrader generate_assignment {assignment}")
    result = course.api().generate_assignment(assignment)
    if not result["success"]:
        raise GradingError(f"nbgrader generate_assignment {assignment} failed:\n{result.get('error') or result['log']}")


def kernel_environment(box: sandbox.Sandbox) -> dict[str, str]:
    """The worker's and the student kernel's environment: only the student's kubeconfig is reachable."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("LAB_")}
    env.update(KUBECONFIG=str(box.student_kubeconfig), LAB_CLUSTER="existing", LAB_NAMESPACE=box.namespace)
    # kubectl (for port-forward) from wherever the grader found it: the jailed kernel has an empty cache.
    tools = [str(path.parent) for path in map(binaries.find, ["kubectl"]) if path is not None]
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), *tools, env.get("PATH", "")])
    return env


def jail_hides() -> list[Path]:
    """What the jailed kernel must not see: the usual secrets and the grader's own kubeconfig."""
    own = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return [*jail.default_secrets(), *own]


def deadline(course: Course, assignment: str, settings: Settings) -> float:
    """The longest a whole submission may take: every code cell at its timeout, plus start-up."""
    cells = sum(
        sum(1 for cell in nbformat.read(course.source(assignment) / name, as_version=4).cells
            if cell.cell_type == "code")
        for name in course.notebooks(assignment)
    )
    return cells * (settings.cell_timeout + settings.patience) + 120


class Grader:
    """Grades submissions one by one or in parallel; each failure stays with its submission."""

    def __init__(self, course: Course, assignment: str, admin: client.ApiClient, settings: Settings) -> None:
        self.course, self.assignment, self.admin, self.settings = course, assignment, admin, settings
        self.ledger = Ledger(course.root, assignment)
        self.deadline = deadline(course, assignment, settings)
        self.stopping = threading.Event()
        self.hide = jail_hides() if settings.jail else []
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def grade(self, student: str) -> Outcome:
        """Grade one submission; every problem becomes an error outcome, never an exception."""
        started = time.monotonic()
        folder = self.course.submitted(student, self.assignment)
        problem = check_student_id(student)
        if problem is None and not folder.is_dir():
            problem = f"no submission: {folder} does not exist"
        if problem:
            return Outcome(student, "error", detail=problem)
        submission = submission_digest(folder)
        if not self.settings.regrade and (done := self.ledger.done(student, submission)):
            done.status, done.detail = "graded", "already graded (resumed)"
            return done
        missing = [n for n in self.course.notebooks(self.assignment) if not (folder / n).is_file()]
        try:
            outcome = self._run(student)
        except Exception as error:  # a broken submission or a cluster hiccup must not stop the class
            outcome = Outcome(student, "error", detail=f"{type(error).__name__}: {error}")
        outcome.seconds, outcome.submission = time.monotonic() - started, submission
        if missing:
            outcome.detail = f"missing notebook(s): {', '.join(missing)}. {outcome.detail}".strip()
        if outcome.status == "graded":
            self.ledger.record(outcome)
        return outcome

    def _run(self, student: str) -> Outcome:
        namespace = namespace_for(student, self.assignment, self.course.key)
        with tempfile.TemporaryDirectory(prefix=f"{namespace}-") as workdir:
            try:
                box = sandbox.create(self.admin, namespace, course=self.course.key,
                                     assignment=digest(self.assignment), student=student, workdir=Path(workdir))
                result = self._autograde(student, box)
            finally:
                sandbox.delete(self.admin, namespace, wait=0)
        if not result.get("success"):
            return Outcome(student, "error", detail=_last_lines(result.get("error") or result.get("log", "")))
        return scores(self.course, self.assignment, student)

    def _autograde(self, student: str, box: sandbox.Sandbox) -> dict:
        if self.stopping.is_set():
            return {"success": False, "error": "grading was interrupted before this submission ran"}
        command = [sys.executable, "-m", "autograder.grading.worker", "--course", str(self.course.root),
                   "--assignment", self.assignment, "--student", student, "--namespace", box.namespace,
                   "--reader-kubeconfig", str(box.reader_kubeconfig),
                   "--cell-timeout", str(self.settings.cell_timeout), "--patience", str(self.settings.patience),
                   *(f"--jail-hide={path}" for path in self.hide)]
        process = subprocess.Popen(command, env=kernel_environment(box), cwd=self.course.root, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        with self._lock:
            self._running.add(process)
        try:
            out, err = process.communicate(timeout=self.deadline)
        except subprocess.TimeoutExpired:
            _kill(process)
            return {"success": False, "error": f"stopped after {self.deadline:.0f} s (the whole-submission limit)"}
        finally:
            with self._lock:
                self._running.discard(process)
        try:
            return json.loads(out)
        except ValueError:
            return {"success": False, "error": f"{err}\nthe grading worker ended with exit code {process.returncode}"}

    def stop(self) -> None:
        """Ctrl-C: end running workers; their namespaces are still deleted by `_run`."""
        self.stopping.set()
        with self._lock:
            for process in list(self._running):
                _kill(process)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # a straggler still holds the pipes; the worker itself is gone
        pass


def _last_lines(text: str, count: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def scores(course: Course, assignment: str, student: str) -> Outcome:
    """The gradebook's scores for one submission, per autograded step."""
    with Gradebook(course.dirs.db_url) as gradebook:
        submission = gradebook.find_submission(assignment, student)
        steps = {f"{notebook.name}/{grade.name}": [grade.score, grade.max_score]
                 for notebook in submission.notebooks for grade in notebook.grades}
        return Outcome(student, "graded", score=submission.score, max_score=submission.max_score, steps=steps)


def feedback_and_export(course: Course, assignment: str, students: list[str], log: Log) -> Path:
    """Feedback HTML for each graded student, then every grade of the course as a CSV."""
    api = course.api()
    for student in students:
        result = api.generate_feedback(assignment, student)
        if not result["success"]:
            log(f"feedback for {student} failed: {_last_lines(result.get('error') or result['log'], 2)}")
    target = course.root / GRADES_CSV
    with Gradebook(course.dirs.db_url) as gradebook:
        CsvExportPlugin(to=str(target)).export(gradebook)
    return target


def submit_masters(course_root: Path, assignment: str, student: str = "masters", log: Log = print) -> str:
    """Generate the assignment and submit its solved masters as `student`: the assignment's self-test."""
    course = Course(course_root)
    require_masters(course, assignment)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    result = course.api().generate_assignment(assignment)
    if not result["success"]:
        raise GradingError(f"nbgrader generate_assignment {assignment} failed:\n{result.get('error') or result['log']}")
    folder = submissions.write(course.root, assignment, student, steps=None,
                               release_dir=course.dirs.release_directory, source_dir=course.dirs.source_directory,
                               submitted_dir=course.dirs.submitted_directory)
    log(f"submitted the solved masters of {assignment} as student {student!r} in {folder}")
    return student


def grade_class(course_root: Path, assignment: str, students: list[str] | None = None,
                settings: Settings | None = None, provider: str | None = None, log: Log = print) -> list[Outcome]:
    """Grade `students` (everyone who submitted by default); returns one outcome per student."""
    settings = settings or Settings()
    course = Course(course_root)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    require_masters(course, assignment)
    students = students or course.submitters(assignment)
    if not students:
        raise GradingError(f"no submissions for {assignment!r} under "
                           f"{course.root / course.dirs.submitted_directory}/<student>/{assignment}")
    admin = admin_client(provider)
    sandbox.ensure_node_access(admin)
    serve_practice_images(admin, provider, log)
    if settings.jail and (reason := jail.unavailable_reason()):
        log(f"warning: student kernels run without the jail ({reason}); a hostile notebook could read "
            "this machine's cluster credentials. Grade as root on Linux with util-linux to isolate them.")
        settings.jail = False
    with class_lock(course, assignment):
        ensure_in_gradebook(course, assignment, log)
        for namespace in sandbox.leftovers(admin, course.key, digest(assignment)):
            log(f"removing namespace {namespace} left by an interrupted run")
            sandbox.delete(admin, namespace)
        grader = Grader(course, assignment, admin, settings)
        try:
            outcomes = _grade_all(grader, students, settings.jobs)
        finally:
            _wait_for_namespaces(admin, course, assignment, log)
        graded = [o.student for o in outcomes if o.status == "graded" and "resumed" not in o.detail]
        if settings.feedback and graded:
            log(f"grades written to {feedback_and_export(course, assignment, graded, log)}")
    return outcomes


def _wait_for_namespaces(admin: client.ApiClient, course: Course, assignment: str, log: Log,
                         timeout: float = 180) -> None:
    """Namespaces are deleted in the background while grading goes on; the run ends when they are gone."""
    deadline = time.monotonic() + timeout
    while left := sandbox.leftovers(admin, course.key, digest(assignment)):
        if time.monotonic() > deadline:
            log(f"warning: namespaces still terminating after {timeout:.0f} s: {', '.join(left)}; "
                "the next run removes them")
            return
        time.sleep(1)


def _grade_all(grader: Grader, students: list[str], jobs: int) -> list[Outcome]:
    outcomes: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(grader.grade, student): student for student in students}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc="grading", unit="submission"):
                outcomes[futures[future]] = future.result()
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            grader.stop()
            raise
    return [outcomes[student] for student in students]


def table(outcomes: list[Outcome]) -> str:
    """The grade table printed at the end of a run."""
    width = max([len("student")] + [len(o.student) for o in outcomes])
    lines = [f"{'student':<{width}}  {'score':>11}  {'time':>6}  note"]
    for o in outcomes:
        score = f"{o.score:g}/{o.max_score:g}" if o.status == "graded" else "not graded"
        note = o.detail.strip().splitlines()[-1] if o.detail.strip() else ""
        lines.append(f"{o.student:<{width}}  {score:>11}  {o.seconds:5.0f}s  {note}")
    return "\n".join(lines)
