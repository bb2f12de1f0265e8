"""`python -m autograder bench grade`: how fast a class is graded, one at a time and in parallel."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psutil

from autograder import REPO_ROOT
from autograder.bench import cpu
from autograder.grading.classrun import submissions
from autograder.grading.classrun.course import (
    Course,
    ensure_in_gradebook,
    feedback_and_export,
    require_masters,
)
from autograder.grading.classrun.ledger import Outcome
from autograder.grading.classrun.runner import grade_class
from autograder.grading.settings import GradingSettings
from autograder.shared.errors import LabError

ASSIGNMENT = "lesson01"


def course_copy(target: Path, source: Path = REPO_ROOT, assignment: str = ASSIGNMENT) -> Path:
    """A throwaway course directory with the repository's config and one assignment's masters."""
    (target / "source").mkdir(parents=True)
    shutil.copy2(source / "nbgrader_config.py", target / "nbgrader_config.py")
    shutil.copytree(source / "source" / assignment, target / "source" / assignment)
    return target


def _measure(
    course: Path, students: list[str], jobs: int, provider: str | None
) -> tuple[float, list[Outcome]]:
    """Grade `students` again with `jobs` workers; the wall time and each outcome."""
    started = time.monotonic()
    outcomes = grade_class(
        course,
        ASSIGNMENT,
        students,
        GradingSettings(jobs=jobs, regrade=True, feedback=False),
        provider=provider,
    )
    elapsed = time.monotonic() - started
    if failed := [o for o in outcomes if o.status != "graded"]:
        raise LabError(
            f"{len(failed)} submission(s) were not graded, e.g. "
            f"{failed[0].student}: {failed[0].detail}"
        )
    return elapsed, outcomes


def _feedback_seconds(course: Path, students: list[str], jobs: int = 1) -> float:
    """Seconds for nbgrader's feedback (`jobs` rendering at once) and the CSV export after a run."""
    started = time.monotonic()
    feedback_and_export(
        Course(course), ASSIGNMENT, students, GradingSettings().feedback_timeout, jobs
    )
    return time.monotonic() - started


def _feedback_split(alone: float, together: float, count: int) -> tuple[float, float]:
    """Feedback's seconds per submission, and the run's own share (renderer start, CSV export).

    Rendering one student (`alone`), then all `count` (`together`), tells the two apart;
    with one student it is all theirs.
    """
    if count < 2:
        return alone, 0.0
    each = max(0.0, together - alone) / (count - 1)
    return each, max(0.0, alone - each)


def _phase_table(outcomes: list[Outcome], feedback: float) -> str:
    """Median seconds per phase of each submission, in the order grading goes through them."""
    order = ["sandbox set-up", "kernel starts", "cells", "judging", "worker", "clean-up"]
    rows = [
        f"    {phase:<16} {statistics.median(o.phases.get(phase, 0.0) for o in outcomes):6.1f} s"
        for phase in order
    ]
    rows.append(f"    {'feedback':<16} {feedback:6.1f} s")
    rows.append(
        f"    {'whole submission':<16} "
        f"{statistics.median(o.seconds for o in outcomes) + feedback:6.1f} s"
    )
    return "\n".join(rows)


def _fixed_seconds(elapsed: float, outcomes: list[Outcome]) -> float:
    """What a serial run spends besides submissions: starting servers, the last namespace's end."""
    return max(0.0, elapsed - sum(o.seconds for o in outcomes))


def run(students: int, jobs: int, provider: str | None = None) -> int:
    """Grade solved and blank submissions serially and with `jobs` workers; print rates, phases."""
    with tempfile.TemporaryDirectory(prefix="bench-grade-") as workdir:
        course = course_copy(Path(workdir) / "course")
        require_masters(Course(course), ASSIGNMENT)
        ensure_in_gradebook(Course(course), ASSIGNMENT)
        solved = [f"solved-{number:03d}" for number in range(1, students + 1)]
        blank = [f"blank-{number:03d}" for number in range(1, students + 1)]
        for name in solved:
            submissions.write(course, ASSIGNMENT, name, steps=None)
        for name in blank:
            submissions.write(course, ASSIGNMENT, name, steps=())
        print(f"grading {students} solved and {students} blank {ASSIGNMENT} submission(s)")
        fixed, cluster = [], cpu.cluster_processes(provider)
        for kind, names in (("solved", solved), ("blank", blank)):
            with cpu.Sampler(*cluster) as sampler:
                elapsed, outcomes = _measure(course, names, 1, provider)
                together = _feedback_seconds(course, names)
            alone = _feedback_seconds(course, names[:1]) if len(names) > 1 else together
            feedback, feedback_start = _feedback_split(alone, together, len(names))
            fixed.append(_fixed_seconds(elapsed, outcomes) + feedback_start)
            print(
                f"{kind}, serial: {statistics.median(o.seconds for o in outcomes) + feedback:.1f} "
                "s per submission (median, with its feedback), besides the run's own "
                f"{fixed[-1]:.1f} s; median per phase:"
            )
            print(_phase_table(outcomes, feedback))
            print(
                "    CPU per submission with its feedback, by component (unattributed: the rest):"
            )
            print(cpu.table(sampler.split, sampler.busy, len(names)))
            # Parallel workers share the cores: this, not the wall time,
            # bounds what --jobs can reach.
            cores, per_submission = psutil.cpu_count() or 1, sampler.busy / len(names)
            print(
                f"    machine CPU {per_submission:6.1f} core-s per submission: at most "
                f"{60 * cores / per_submission:.1f} per minute on {cores} cores"
            )
        start_and_end = statistics.median(fixed)
        print(
            "each run's own start and end (servers, the last namespace's deletion, the feedback "
            f"renderer's start): {start_and_end:.1f} s"
        )
        # A class is mostly solved work: its rate is the one to plan with; half blank flatters it.
        for kind, names in (("solved only", solved), ("half solved, half blank", solved + blank)):
            elapsed, _ = _measure(course, names, jobs, provider)
            elapsed += _feedback_seconds(course, names, jobs)
            pace = max(elapsed - start_and_end, 1e-9) / len(names)
            print(
                f"--jobs {jobs}, {kind}: {elapsed:.1f} s for {len(names)} with their feedback: "
                f"{60 / pace:.2f} submissions per minute once started (a class of 60: "
                f"{(start_and_end + 60 * pace) / 60:.0f} min)"
            )
        started = time.monotonic()
        grade_class(
            course, ASSIGNMENT, solved + blank, GradingSettings(jobs=jobs), provider=provider
        )
        print(f"resume of the fully graded class: {time.monotonic() - started:.1f} s")
    return 0
