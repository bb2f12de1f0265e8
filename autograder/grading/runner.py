"""Grade a class: each submission in its own namespace and worker process, then feedback and a CSV."""

from __future__ import annotations

import logging
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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

from autograder.lab import k8s
from autograder.errors import LabError
from autograder.grading import UNISOLATED_FLAG, jail, ledger, nodes, sandbox, submissions
from autograder.grading.ledger import LEDGER_DIR, Ledger, Outcome, submission_digest
from autograder.grading.settings import GradingSettings
from autograder.grading.verify import timed
from autograder.grading.names import check_student_id, digest, folder_name, namespace_for, printable
from autograder.grading.worker import course_config
from autograder.lab import ClusterError, Lab, binaries, choose, kubeconfig
from autograder.lab.cluster import provider_of_context

logger = logging.getLogger(__name__)

GRADES_CSV = "grades.csv"
EXCLUSIVE_LOCK = "cluster-exclusive.lock"  # the lock the workers hold around notebooks that cordon nodes


class GradingError(LabError):
    """The class cannot be graded as asked; the message says what to do."""


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

    def autograded(self, student: str, assignment: str) -> Path:
        return Path(self.dirs.format_path(self.dirs.autograded_directory, student, assignment))

    def gradebook(self) -> Path | None:
        """The gradebook's file when it is SQLite (nbgrader's default), else None."""
        prefix = "sqlite:///"
        url = self.dirs.db_url.split("?", 1)[0]
        return Path(url[len(prefix):]) if url.startswith(prefix) else None

    def notebooks(self, assignment: str) -> list[str]:
        return sorted(p.name for p in self.source(assignment).glob("*.ipynb"))

    def submitters(self, assignment: str) -> list[str]:
        """Every folder under submitted/ that holds `assignment`, listed as bytes so no name can break the run."""
        base = Path(self.dirs.root) / self.dirs.submitted_directory
        if not base.is_dir():
            return []
        with os.scandir(os.fsencode(base)) as entries:
            names = [entry.name for entry in entries
                     if os.path.lexists(os.path.join(entry.path, os.fsencode(assignment)))]
        return sorted(map(folder_name, names))

    def api(self) -> NbGraderAPI:
        return NbGraderAPI(config=self.config)


def prepare_practice(course: Course, admin: client.ApiClient, provider: str | None) -> None:
    """On the practice cluster, run the course's preparation hook (loading images) as the grader.

    Student kernels connect as `existing` with a namespace-scoped identity, which can neither
    record images on the nodes nor run the cluster-wide router that port-forwards need.
    """
    settings = GradingSettings(config=course.config)
    hook = settings.practice_hook()
    chosen = choose(provider)
    if hook is None or (chosen.name != "practice" and provider_of_context(chosen.context) != "practice"):
        return
    hook(Lab(provider="practice", context=chosen.context, namespace="default", api=admin))
    logger.info(f"practice cluster prepared for grading ({settings.practice_setup})")


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


def ensure_in_gradebook(course: Course, assignment: str) -> None:
    """Autograding needs the assignment in the gradebook: generate it when it is missing there."""
    try:
        with Gradebook(course.dirs.db_url) as gradebook:
            gradebook.find_assignment(assignment)
            return
    except MissingEntry:
        pass
    logger.info(f"{assignment} is not in the gradebook yet: running nbgrader generate_assignment {assignment}")
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


def deadline(course: Course, assignment: str, settings: GradingSettings) -> float:
    """The longest a whole submission may take: every code cell at its timeout, plus start-up."""
    cells = sum(
        sum(1 for cell in nbformat.read(course.source(assignment) / name, as_version=4).cells
            if cell.cell_type == "code")
        for name in course.notebooks(assignment)
    )
    return cells * (settings.cell_timeout + settings.patience) + 120


class Grader:
    """Grades submissions one by one or in parallel; each failure stays with its submission."""

    def __init__(self, course: Course, assignment: str, settings: GradingSettings, staging: Path) -> None:
        self.course, self.assignment, self.settings, self.staging = course, assignment, settings, staging
        self.admin: client.ApiClient | None = None
        self.nodes: nodes.Snapshot = {}
        self.ledger = Ledger(course.root, assignment)
        self.recorded = recorded_scores(course, assignment)
        self.deadline = deadline(course, assignment, settings)
        self.stopping = threading.Event()
        self.damaged: str | None = None
        self.hide = jail_hides() if settings.jail else []
        self._staged: dict[str, tuple[str, list[str]]] = {}
        self._running: set[subprocess.Popen] = set()
        self._lock = threading.Lock()

    def prepare(self, student: str) -> Outcome | None:
        """Check the ID, copy the submission in and resume it; None when it still has to be graded."""
        problem = check_student_id(student) or self._folder_problem(student)
        if problem:
            return Outcome(printable(student), "error", detail=problem)
        copy = self.staging / student / self.assignment
        try:
            skipped = submissions.stage(self.course.submitted(student, self.assignment), copy)
        except OSError as error:
            return Outcome(student, "error", detail=f"the submission could not be copied in: {error}")
        submission = submission_digest(copy)
        self._staged[student] = submission, skipped
        done = self.ledger.done(student, submission)
        if self.settings.regrade or done is None or self.recorded.get(student) != done.score:
            return None
        done.status, done.detail = "graded", "already graded (resumed)"
        return done

    def _folder_problem(self, student: str) -> str | None:
        """Why submitted/<student>/<assignment> cannot be read as the student's own folder, if it cannot."""
        folder = self.course.submitted(student, self.assignment)
        for path in (folder.parent, folder):
            if not path.is_dir():
                return f"no submission: {path} does not exist"
            if path.is_symlink():
                return f"{path} is a symlink; a submission must be a folder of its own"
        return None

    def grade(self, student: str) -> Outcome:
        """Grade one prepared submission; every problem becomes an error outcome, never an exception."""
        started = time.monotonic()
        submission, skipped = self._staged[student]
        missing = [n for n in self.course.notebooks(self.assignment)
                   if not (self.staging / student / self.assignment / n).is_file()]
        try:
            outcome = self._run(student)
        except Exception as error:  # a broken submission or a cluster hiccup must not stop the class
            outcome = Outcome(student, "error", detail=f"{type(error).__name__}: {error}")
        outcome.seconds, outcome.submission = time.monotonic() - started, submission
        notes = [f"missing notebook(s): {', '.join(missing)}."] if missing else []
        if skipped:
            notes.append(f"not graded, not a regular file: {', '.join(skipped)}.")
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
                    box = sandbox.create(self.admin, namespace, course=self.course.key,
                                         assignment=digest(self.assignment), student=student, workdir=Path(workdir))
                with timed("worker", phases):
                    result = self._autograde(student, box)
            finally:
                with timed("clean-up", phases):
                    sandbox.delete(self.admin, namespace, wait=0)
                    self._restore_nodes()
        inside = result.get("phases") or {}
        phases.update(inside, worker=phases["worker"] - sum(inside.values()))
        if (planted := foreign_entries(output)) or self._gradebook_damaged(student):
            clear_output(output)
            return Outcome(student, "error", detail=f"its grading left links in {output}: {', '.join(planted)}"
                           if planted else "the gradebook was damaged while it was graded")
        if not result.get("success"):
            return Outcome(student, "error", detail=_last_lines(result.get("error") or result.get("log", "")),
                           phases=phases)
        outcome = scores(self.course, self.assignment, student)
        outcome.phases = phases
        return outcome

    def _restore_nodes(self) -> None:
        """Nodes as before the run, once no notebook that may cordon them is running."""
        with open(self.course.root / LEDGER_DIR / EXCLUSIVE_LOCK, "w") as lock:
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
        command = [sys.executable, "-I", "-m", "autograder.grading.worker", "--course", str(self.course.root),
                   "--assignment", self.assignment, "--student", student, "--namespace", box.namespace,
                   "--reader-kubeconfig", str(box.reader_kubeconfig), "--submitted-directory", str(self.staging),
                   "--cell-timeout", str(self.settings.cell_timeout), "--patience", str(self.settings.patience),
                   *(f"--jail-hide={path}" for path in self.hide)]
        with self._lock:  # a Ctrl-C between start and registration would leave the worker running
            if self.stopping.is_set():
                return {"success": False, "error": "grading was interrupted before this submission ran"}
            process = subprocess.Popen(command, env=kernel_environment(box), cwd=self.course.root, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            self._running.add(process)
        try:
            out, err = process.communicate(timeout=self.deadline)
        except subprocess.TimeoutExpired:
            _kill(process)
            _reap(process)
            return {"success": False, "error": f"stopped after {self.deadline:.0f} s (the whole-submission limit)"}
        finally:
            with self._lock:
                self._running.discard(process)
        if self.stopping.is_set():
            return {"success": False, "error": "grading was interrupted while this submission ran"}
        try:
            return json.loads(out)
        except ValueError:
            return {"success": False, "error": f"{err}\nthe grading worker ended with exit code {process.returncode}"}

    def stop(self) -> None:
        """Ctrl-C: kill running workers' process groups; the thread that owns each reaps it and deletes its namespace.

        Only the owning thread reads a worker's pipes: two threads in communicate() on one process
        close each other's file descriptors (the `Bad file descriptor` a Ctrl-C used to end with).
        """
        self.stopping.set()
        with self._lock:
            for process in self._running:
                _kill(process)


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _reap(process: subprocess.Popen) -> None:
    try:
        process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # a straggler still holds the pipes; the worker itself is gone
        pass


def clear_output(folder: Path) -> None:
    """Remove autograded/<student>/<assignment> and any link on the way to it, so nbgrader writes to a new folder."""
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


def _last_lines(text: str, count: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def scores(course: Course, assignment: str, student: str) -> Outcome:
    """The gradebook's scores for one submission, per autograded step."""
    with Gradebook(course.dirs.db_url) as gradebook:
        submission = gradebook.find_submission(assignment, student)
        steps = {f"{notebook.name}/{grade.name}": [grade.score, grade.max_score]
                 for notebook in submission.notebooks for grade in notebook.grades}
        return Outcome(student, "graded", score=submission.score, max_score=submission.max_score, steps=steps)


def recorded_scores(course: Course, assignment: str) -> dict[str, float]:
    """Each student's score in the gradebook, so a ledger entry the gradebook lost is graded again."""
    try:
        with Gradebook(course.dirs.db_url) as gradebook:
            return {s.student_id: s.score for s in gradebook.find_assignment(assignment).submissions}
    except MissingEntry:
        return {}


def feedback_and_export(course: Course, assignment: str, students: list[str]) -> Path:
    """Feedback HTML for each graded student, then every grade of the course as a CSV."""
    api = course.api()
    for student in students:
        result = api.generate_feedback(assignment, student)
        if not result["success"]:
            logger.info(f"feedback for {student} failed: {_last_lines(result.get('error') or result['log'], 2)}")
    target = course.root / GRADES_CSV
    with Gradebook(course.dirs.db_url) as gradebook:
        CsvExportPlugin(to=str(target)).export(gradebook)
    return target


def submit_masters(course_root: Path, assignment: str, student: str = "masters") -> str:
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
    logger.info(f"submitted the solved masters of {assignment} as student {student!r} in {folder}")
    return student


def require_isolation(settings: GradingSettings) -> None:
    """Student code runs only in the jail, unless the instructor named the risk of running it without."""
    reason = jail.unavailable_reason() if settings.jail else None
    if reason is None:
        return
    if not settings.unisolated:
        raise GradingError(f"student kernels cannot be isolated here ({reason}), so nothing was graded: "
                           "grade as root on Linux with util-linux, or accept that a notebook can read this "
                           f"machine's cluster credentials with {UNISOLATED_FLAG}")
    logger.warning(f"student kernels run without the jail ({reason}), as {UNISOLATED_FLAG} asked: "
        "a hostile notebook can read this machine's cluster credentials")
    settings.jail = False


def grade_class(course_root: Path, assignment: str, students: list[str] | None = None,
                settings: GradingSettings | None = None, provider: str | None = None) -> list[Outcome]:
    """Grade `students` (everyone who submitted by default); returns one outcome per student."""
    course = Course(course_root)
    settings = settings or GradingSettings(config=course.config)
    require_isolation(settings)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    require_masters(course, assignment)
    students = students or course.submitters(assignment)
    if not students:
        raise GradingError(f"no submissions for {assignment!r} under "
                           f"{course.root / course.dirs.submitted_directory}/<student>/{assignment}")
    admin = admin_client(provider)
    with class_lock(course, assignment), staging(course, assignment) as staged:
        backup = backup_gradebook(course)
        grader = Grader(course, assignment, settings, staged)
        outcomes = {student: grader.prepare(student) for student in students}
        pending = [student for student, outcome in outcomes.items() if outcome is None]
        if pending:
            outcomes.update(_grade_on_cluster(grader, admin, pending, provider))
        if grader.damaged:
            raise GradingError(_restore_damaged(course, backup, grader.damaged))
        graded = [o.student for o in outcomes.values() if o.status == "graded" and "resumed" not in o.detail]
        if settings.feedback and graded:
            logger.info(f"grades written to {feedback_and_export(course, assignment, graded)}")
    return list(outcomes.values())


@contextmanager
def staging(course: Course, assignment: str) -> Iterator[Path]:
    """A folder only the grader writes: the regular-file copies of this run's submissions, read by nbgrader."""
    folder = course.root / LEDGER_DIR / "staging" / assignment
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def backup_gradebook(course: Course) -> Path | None:
    """A copy of the gradebook from before this run, and how to put it back."""
    path = course.gradebook()
    if path is None or not path.exists():
        return None
    os.chmod(course.root / LEDGER_DIR, 0o700)
    os.chmod(path, 0o600)
    backup = ledger.backup_gradebook(course.root, path)
    logger.info(f"gradebook backed up to {backup} (to restore it: cp {backup} {path})")
    return backup


def _restore_damaged(course: Course, backup: Path | None, student: str) -> str:
    """Put the run's backup back after a submission's grading damaged the gradebook; the message says so."""
    path = course.gradebook()
    if backup is None:
        return f"{path} was damaged while grading {printable(student)} and no backup exists"
    ledger.restore_gradebook(backup, path)
    return (f"{path} was damaged while grading {printable(student)}; it was restored from {backup}. "
            "Grade again with the same command: submissions graded in this run are graded again")


def _grade_on_cluster(grader: Grader, admin: client.ApiClient, students: list[str], provider: str | None) -> dict[str, Outcome]:
    """Set the cluster up for grading, grade `students` and put nodes and namespaces back as they were."""
    course, assignment = grader.course, grader.assignment
    sandbox.ensure_node_access(admin)
    prepare_practice(course, admin, provider)
    ensure_in_gradebook(course, assignment)
    for namespace in sandbox.leftovers(admin, course.key, digest(assignment)):
        logger.info(f"removing namespace {namespace} left by an interrupted run")
        sandbox.delete(admin, namespace)
    saved = course.root / LEDGER_DIR / f"{assignment}.nodes.json"
    if (before := nodes.load(saved)) is not None:
        logger.info(f"restoring nodes an interrupted run left changed: {', '.join(nodes.restore(admin, before)) or 'none'}")
    grader.admin, grader.nodes = admin, nodes.snapshot(admin)
    nodes.save(saved, grader.nodes)
    try:
        outcomes = _grade_all(grader, students, grader.settings.jobs)
    finally:
        _wait_for_namespaces(admin, course, assignment)
    saved.unlink()
    return outcomes


def _wait_for_namespaces(admin: client.ApiClient, course: Course, assignment: str,
                         timeout: float = 180) -> None:
    """Namespaces are deleted in the background while grading goes on; the run ends when they are gone."""
    def none_left(namespaces: list[client.V1Namespace]) -> bool:
        for namespace in namespaces:
            sandbox.delete(admin, namespace.metadata.name, wait=0)
        return not namespaces

    try:
        k8s.wait_for(client.CoreV1Api(admin).list_namespace, until=none_left, timeout=timeout,
                     label_selector=sandbox.course_selector(course.key, digest(assignment)),
                     what="the graded namespaces' deletion", seen=lambda left: ", ".join(n.metadata.name for n in left))
    except k8s.WaitTimeout as error:
        logger.warning("%s; the next run removes them", error)


def _grade_all(grader: Grader, students: list[str], jobs: int) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {pool.submit(grader.grade, student): student for student in students}
    try:
        for future in tqdm(as_completed(futures), total=len(futures), desc="grading", unit="submission"):
            outcomes[futures[future]] = future.result()
    except KeyboardInterrupt:
        grader.stop()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return outcomes


def table(outcomes: list[Outcome]) -> str:
    """The grade table printed at the end of a run."""
    width = max([len("student")] + [len(o.student) for o in outcomes])
    lines = [f"{'student':<{width}}  {'score':>11}  {'time':>6}  note"]
    for o in outcomes:  # error outcomes carry printable names: a bad folder name cannot break the table
        score = f"{o.score:g}/{o.max_score:g}" if o.status == "graded" else "not graded"
        note = o.detail.strip().splitlines()[-1] if o.detail.strip() else ""
        lines.append(f"{o.student:<{width}}  {score:>11}  {o.seconds:5.0f}s  {note}")
    return "\n".join(lines)
