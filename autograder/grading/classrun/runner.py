"""Grade a class: each submission in its own namespace and worker, then feedback and a CSV."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client
from tqdm.auto import tqdm

from autograder.grading import UNISOLATED_FLAG, nodes, sandbox
from autograder.grading.classrun import ledger, report
from autograder.grading.classrun.course import (
    Course,
    GradingError,
    backup_gradebook,
    ensure_in_gradebook,
    feedback_and_export,
    require_masters,
)
from autograder.grading.classrun.grader import Grader, kernel_environment
from autograder.grading.classrun.kindimages import SubmissionImages
from autograder.grading.classrun.ledger import Outcome
from autograder.grading.kernel import jail
from autograder.grading.names import LEDGER_DIR, digest, printable
from autograder.grading.settings import GradingSettings
from autograder.grading.worker import autograde as worker
from autograder.providers.choice import choose, provider_of_context
from autograder.providers.kind import Kind
from autograder.shared import forkserver, k8s, kubeconfig
from autograder.shared.provider import ClusterError, Lab

logger = logging.getLogger(__name__)


def prepare_practice(course: Course, admin: client.ApiClient, provider: str | None) -> None:
    """On the practice cluster, run the course's preparation hook (loading images) as the grader.

    Student kernels connect as `existing` with a namespace-scoped identity, which can neither
    record images on the nodes nor run the cluster-wide router that port-forwards need.
    """
    settings = GradingSettings(config=course.config)
    hook = settings.practice_hook()
    chosen = choose(provider)
    if hook is None or (
        chosen.name != "practice" and provider_of_context(chosen.context) != "practice"
    ):
        return
    hook(Lab(provider="practice", context=chosen.context, namespace="default", api=admin))
    logger.info("practice cluster prepared for grading (%s)", settings.practice_setup)


def admin_client(provider: str | None) -> client.ApiClient:
    """The grader's own client; a cluster that does not answer stops the run before any record."""
    chosen = choose(provider)
    context = chosen.context
    if not kubeconfig.answers(context):
        raise ClusterError(
            f"the cluster of context {context!r} does not answer, so nothing was graded; "
            f"start it (python -m autograder cluster up --provider {chosen.name}) and grade again"
        )
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
            raise GradingError(
                f"another grading run of {assignment!r} holds {path}; wait for it to end"
            ) from None
        yield


def require_isolation(settings: GradingSettings) -> None:
    """Student code runs only in the jail, unless the instructor named the risk of going without."""
    reason = jail.unavailable_reason() if settings.jail else None
    if reason is None:
        return
    if not settings.unisolated:
        raise GradingError(
            f"student kernels cannot be isolated here ({reason}), so nothing was graded: "
            "grade as root on Linux with util-linux, or accept that a notebook can read this "
            f"machine's cluster credentials with {UNISOLATED_FLAG}"
        )
    logger.warning(
        "student kernels run without the jail (%s), as %s asked: a hostile notebook can read this "
        "machine's cluster credentials",
        reason,
        UNISOLATED_FLAG,
    )
    settings.jail = False


def grade_class(
    course: Course | Path,
    assignment: str,
    students: list[str] | None = None,
    settings: GradingSettings | None = None,
    provider: str | None = None,
) -> list[Outcome]:
    """Grade `students` (everyone who submitted by default); returns one outcome per student."""
    course = course if isinstance(course, Course) else Course(course)
    settings = settings or GradingSettings(config=course.config)
    require_isolation(settings)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    require_masters(course, assignment)
    students = students or course.submitters(assignment)
    if not students:
        raise GradingError(
            f"no submissions for {assignment!r} under "
            f"{course.root / course.dirs.submitted_directory}/<student>/{assignment}"
        )
    admin = admin_client(provider)
    if settings.jobs > 1:
        logger.warning(
            "grading %s submissions at once: a kernel may cordon nodes at any moment (notebook 07 "
            "needs it), so a hostile one can cost the submission graded beside it points; nodes "
            "are restored after every submission either way, and --jobs 1 grades one at a time",
            settings.jobs,
        )
    with class_lock(course, assignment), staging(course, assignment) as staged:
        backup = backup_gradebook(course)
        grader = Grader(course, assignment, settings, staged)
        prepared = {student: grader.prepare(student) for student in students}
        pending = [student for student, outcome in prepared.items() if outcome is None]
        graded_now = _grade_on_cluster(grader, admin, pending, provider) if pending else {}
        outcomes = {
            student: outcome or graded_now[student] for student, outcome in prepared.items()
        }
        if grader.damaged:
            raise GradingError(_restore_damaged(course, backup, grader.damaged))
        graded = [
            o.student
            for o in outcomes.values()
            if o.status == "graded" and "resumed" not in o.detail
        ]
        if settings.feedback and graded:
            csv, skipped = feedback_and_export(
                course, assignment, graded, settings.feedback_timeout, settings.jobs
            )
            for student in skipped:
                outcomes[student].detail = " ".join(
                    filter(
                        None,
                        [
                            outcomes[student].detail,
                            f"No feedback: it took longer than {settings.feedback_timeout:.0f} s "
                            "to render.",
                        ],
                    )
                )
            logger.info("grades written to %s", csv)
        if settings.feedback:
            logger.info("class report written to %s", report.write(course, assignment))
    return list(outcomes.values())


@contextmanager
def staging(course: Course, assignment: str) -> Iterator[Path]:
    """A folder only the grader writes: regular-file copies of the submissions for nbgrader."""
    folder = course.root / LEDGER_DIR / "staging" / assignment
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700, parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _restore_damaged(course: Course, backup: Path | None, student: str) -> str:
    """Put the run's backup back after a submission's grading damaged the gradebook, saying so."""
    path = course.gradebook()
    if backup is None or path is None:
        return f"{path} was damaged while grading {printable(student)} and no backup exists"
    ledger.restore_gradebook(backup, path)
    return (
        f"{path} was damaged while grading {printable(student)}; it was restored from {backup}. "
        "Grade again with the same command: submissions graded in this run are graded again"
    )


def _grade_on_cluster(
    grader: Grader, admin: client.ApiClient, students: list[str], provider: str | None
) -> dict[str, Outcome]:
    """Set the cluster up for grading, grade `students`, put nodes and namespaces back."""
    course, assignment = grader.course, grader.assignment
    # The worker server imports for seconds: it starts first, and does so
    # while the cluster is set up.
    with (
        tempfile.TemporaryDirectory(prefix="workers-") as folder,
        forkserver.running(
            Path(folder) / "server" / "workers.sock", worker.WORKER_MODULE, kernel_environment(None)
        ) as workers,
    ):
        sandbox.ensure_node_access(admin)
        prepare_practice(course, admin, provider)
        ensure_in_gradebook(course, assignment)
        for namespace in sandbox.leftovers(admin, course.key, digest(assignment)):
            logger.info("removing namespace %s left by an interrupted run", namespace)
            sandbox.delete(admin, namespace)
        saved = nodes.saved_file(course.root, assignment)
        if (before := nodes.load(saved)) is not None:
            logger.info(
                "restoring nodes an interrupted run left changed: %s",
                ", ".join(nodes.restore(admin, before)) or "none",
            )
        grader.admin, grader.nodes, grader.workers = admin, nodes.snapshot(admin), workers
        grader.images = submission_images(grader, admin, provider)
        nodes.save(saved, grader.nodes)
        try:
            outcomes = _grade_all(grader, students, grader.settings.jobs)
        finally:
            grader.restores_done()
            if grader.images is not None:
                grader.images.clear()
            _wait_for_namespaces(admin, course, assignment)
    saved.unlink()
    return outcomes


def submission_images(
    grader: Grader, admin: client.ApiClient, provider: str | None
) -> SubmissionImages | None:
    """On kind, the builder of each submission's images; kind then grades one at a time.

    A kind node holds one image per name, so two submissions graded at once would share their
    `ml-api:v1` (kindimages.py says why names, and not per-submission rewrites).
    """
    kind = Kind()
    if choose(provider).context != kind.context:
        return None
    if grader.settings.jobs > 1:
        logger.info("on kind the nodes hold one submission's images at a time: grading one by one")
        grader.settings.jobs = 1
    return SubmissionImages(kind, admin)


def _wait_for_namespaces(
    admin: client.ApiClient, course: Course, assignment: str, timeout: float = 180
) -> None:
    """Namespaces are deleted in the background as grading goes on; the run ends once they are."""

    def none_left(namespaces: list[client.V1Namespace]) -> bool:
        for namespace in namespaces:
            sandbox.delete(admin, namespace.metadata.name, wait=0)
        return not namespaces

    try:
        k8s.wait_for(
            client.CoreV1Api(admin).list_namespace,
            until=none_left,
            timeout=timeout,
            label_selector=sandbox.course_selector(course.key, digest(assignment)),
            what="the graded namespaces' deletion",
            seen=lambda left: ", ".join(n.metadata.name for n in left),
        )
    except k8s.WaitTimeout as error:
        logger.warning("%s; the next run removes them", error)


def _grade_all(grader: Grader, students: list[str], jobs: int) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = {pool.submit(grader.grade, student): student for student in students}
    try:
        for future in tqdm(
            as_completed(futures), total=len(futures), desc="grading", unit="submission"
        ):
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
    for (
        o
    ) in outcomes:  # error outcomes carry printable names: a bad folder name cannot break the table
        score = f"{o.score:g}/{o.max_score:g}" if o.status == "graded" else "not graded"
        note = o.detail.strip().splitlines()[-1] if o.detail.strip() else ""
        lines.append(f"{o.student:<{width}}  {score:>11}  {o.seconds:5.0f}s  {note}")
    return "\n".join(lines)
