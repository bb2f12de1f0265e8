"""Shared fixtures: a practice cluster per session, a namespace per test, a grading round trip."""

from __future__ import annotations

import ctypes
import os
import re
import threading
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import nbformat
import psutil
import pytest
from nbgrader.utils import is_grade, is_solution

from autograder.bench import grade as bench
from autograder.cli import scripts_on_path
from autograder.grading.classrun import submissions
from autograder.grading.classrun.course import Course, ensure_in_gradebook
from autograder.grading.classrun.ledger import Outcome
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.kernel.jail import KERNEL_UID_BASE
from autograder.grading.settings import GradingSettings
from autograder.lab.cluster import connect
from autograder.practice.cluster import Practice
from autograder.shared import forkserver
from autograder.shared.provider import Lab

# The fast tier and the markers a test's fixtures give it (tests/tiers.py); a lab of its own for
# each pytest-xdist worker (tests/workers.py).
pytest_plugins = ["tiers", "workers"]

FIRST_NOTEBOOK = "01-why-orchestration.ipynb"
SUBMISSIONS = ("masters", "untouched", "first-notebook-only")
PR_SET_CHILD_SUBREAPER = 36

# `.venv/bin/python -m pytest` with no venv activated: nbgrader finds alembic all the same
scripts_on_path()


@pytest.fixture(scope="session")
def practice_cluster() -> Practice:
    """The practice cluster, created once (or reused) for the whole test session."""
    os.environ["LAB_CLUSTER"] = "practice"
    practice = Practice()
    practice.up()
    return practice


@pytest.fixture
def lab(practice_cluster: Practice, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A Lab on the practice cluster in a namespace of its own, deleted after the test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    namespace = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    lab = connect("practice", namespace=namespace)
    yield lab
    lab.core.delete_namespace(namespace)


def ask_as_nobody(server: Path, request: dict) -> int:
    """The exit code a process of another user (a pod's, a kernel's) gets from a fork server."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            code = forkserver.ask(server, request) or 0
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def jailed_kernels() -> list[int]:
    """The grader's kernels this test process started, still running.

    A kernel uid's first process (what it starts runs as its uid too). Another grader's kernels on
    the same machine are none of its business.
    """
    seen = {}
    for process in psutil.Process().children(recursive=True):
        try:
            if (
                process.status() != psutil.STATUS_ZOMBIE
            ):  # an adopted orphan that ended, never reaped
                seen[process.pid] = (process.uids().real, process.ppid())
        except psutil.NoSuchProcess:  # it just ended
            continue
    return [
        pid
        for pid, (uid, parent) in seen.items()
        if uid >= KERNEL_UID_BASE and seen.get(parent, (0, 0))[0] < KERNEL_UID_BASE
    ]


@contextmanager
def adopting_orphans() -> Iterator[None]:
    """While the block runs, a process orphaned below this one becomes its child, not init's.

    A kernel that outlives the worker that started it is still among this test's own processes for
    `jailed_kernels`.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "cannot become a child subreaper")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@contextmanager
def most_kernels_at_once() -> Iterator[list[int]]:
    """Samples how many of the grader's kernels run at once during the block; yields [the most]."""
    most, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            most[0] = max(most[0], len(jailed_kernels()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield most
    finally:
        done.set()
        sampler.join()


@pytest.fixture
def graded_course(tmp_path: Path) -> Callable[[str, Collection[str]], tuple[Path, list[Outcome]]]:
    """A course copy with some of lesson01's submissions (masters, untouched, first-only) graded."""

    def grade(provider: str, students: Collection[str] = SUBMISSIONS) -> tuple[Path, list[Outcome]]:
        root = bench.course_copy(tmp_path / "course")
        ensure_in_gradebook(Course(root), bench.ASSIGNMENT)
        for student in students:
            submissions.write(root, bench.ASSIGNMENT, student, answered(root, student))
        outcomes = grade_class(
            root, bench.ASSIGNMENT, settings=GradingSettings(jobs=2), provider=provider
        )
        print(table(outcomes))
        return root, outcomes

    return grade


def answered(root: Path, student: str) -> Collection[str] | None:
    """What a test submission answers, by its name: `masters` (all; `masters-2` too), `untouched`
    (none; `untouched-2` too), `first-notebook-only`, or `through-NN` (notebooks 01 to NN)."""
    kind = re.sub(r"-\d+$", "", student)
    if kind == "masters":
        return None
    if kind == "untouched":
        return ()
    last = int(student.removeprefix("through-")) if kind == "through" else 1
    return {
        cell.metadata.nbgrader["grade_id"]
        for path in sorted((root / "source" / bench.ASSIGNMENT).glob("*.ipynb"))[:last]
        for cell in nbformat.read(path, as_version=4).cells
        if is_solution(cell)
    }


def first_notebook_points(root: Path) -> float:
    """The points of lesson01's first notebook: what the first-notebook-only submission earns."""
    first = nbformat.read(root / "source" / bench.ASSIGNMENT / FIRST_NOTEBOOK, as_version=4).cells
    return sum(cell.metadata.nbgrader["points"] for cell in first if is_grade(cell))


@pytest.fixture
def round_trip(
    graded_course: Callable[[str, Collection[str]], tuple[Path, list[Outcome]]],
) -> Callable[[str], list[Outcome]]:
    """Grades lesson01's solved masters and untouched release on a provider: full marks, zero."""

    def grade(provider: str) -> list[Outcome]:
        with adopting_orphans():
            with most_kernels_at_once() as most:
                root, outcomes = graded_course(provider, SUBMISSIONS)
            outlived = jailed_kernels()
        scores = {o.student: (o.status, o.score, o.max_score) for o in outcomes}
        assert scores["masters"][0] == "graded" and scores["masters"][1] == scores["masters"][2] > 0
        assert scores["untouched"][:2] == ("graded", 0)
        assert scores["first-notebook-only"][:2] == ("graded", first_notebook_points(root))
        phases = {o.student: o.phases for o in outcomes}
        assert phases["masters"]["kernel starts"] > 0, "kernels start through the grader's own hook"
        assert "kernel starts" not in phases["untouched"], (
            "a submission left as released runs no kernel"
        )
        # Per worker: the running notebook's kernel and the next one's,
        # started early; never a pile-up.
        assert 0 < most[0] <= 2 * 2, f"{most[0]} of the grader's kernels ran at once with 2 workers"
        assert not outlived, f"kernels outlived the grading: {outlived}"
        pages = list((root / "feedback").rglob("*.html"))
        assert pages, "the graded students get their feedback"
        assert [page.name for page in pages if "HIDDEN TESTS" in page.read_text()] == []
        return outcomes

    return grade
