"""Feedback HTML for graded students, made where one notebook cannot stall the whole class.

nbconvert's Markdown renderer needs time that grows with the square of some inputs (a markdown
cell, or a kernel's Markdown output, of 50 KB of brackets takes 11 s; 1 MB would take an hour),
and the student's cells and outputs are rendered. So a child process renders the feedback and
reports each student as it finishes; one that takes longer than the timeout is skipped (the
child is killed, and a new one goes on with the rest). With `jobs` > 1, as many children render
their share of the class side by side.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from nbgrader.apps import NbGraderAPI
from traitlets.config import Config

from autograder.grading.request import plain_config
from autograder.shared import processes

logger = logging.getLogger(__name__)

DONE = "feedback done"


def generate(
    config: Config, assignment: str, students: list[str], timeout: float, jobs: int = 1
) -> list[str]:
    """Render feedback for `students`; returns those skipped as theirs took over `timeout` s."""
    shares = [
        share
        for share in (students[start :: max(1, jobs)] for start in range(max(1, jobs)))
        if share
    ]
    with ThreadPoolExecutor(max_workers=len(shares) or 1) as pool:
        skipped = pool.map(
            lambda share: _generate_in_turn(config, assignment, share, timeout), shares
        )
    return [student for share in skipped for student in share]


def _generate_in_turn(
    config: Config, assignment: str, students: list[str], timeout: float
) -> list[str]:
    """One child after another renders `students` in order; returns those skipped."""
    skipped: list[str] = []
    pending = list(students)
    while pending:
        pending = pending[_render(config, assignment, pending, timeout) :]
        if pending:
            logger.warning(
                "feedback for %s took longer than %.0f s and was skipped", pending[0], timeout
            )
            skipped.append(pending.pop(0))
    return skipped


def _render(config: Config, assignment: str, students: list[str], timeout: float) -> int:
    """How many of `students`, in order, got feedback before one took longer than `timeout` s."""
    command = [
        sys.executable,
        "-I",
        "-m",
        __name__,
        "--config",
        json.dumps(plain_config(config)),
        "--assignment",
        assignment,
        "--",
        *students,
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    reports: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_forward, args=(child.stdout, reports), daemon=True).start()
    finished = 0
    try:
        while finished < len(students) and reports.get(timeout=timeout).startswith(DONE):
            finished += 1
    except queue.Empty:
        processes.kill_tree(child.pid)
    child.wait()
    return finished


def _forward(lines: IO[str], into: queue.Queue[str]) -> None:
    """Every line the child reports, then "" when it has ended (done, or crashed)."""
    for line in lines:
        into.put(line)
    into.put("")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}", description=__doc__)
    parser.add_argument(
        "--config", type=json.loads, required=True, help="the course's settings, as JSON"
    )
    parser.add_argument("--assignment", required=True)
    parser.add_argument("students", nargs="+")
    args = parser.parse_args(argv)
    report = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # nbgrader's own printing goes with its log
    api = NbGraderAPI(config=Config(args.config))
    for student in args.students:
        result = api.generate_feedback(args.assignment, student)
        if not result["success"]:
            lines = (result.get("error") or result["log"]).strip().splitlines()
            logger.warning("feedback for %s failed: %s", student, " ".join(lines[-2:]))
        print(DONE, student, file=report, flush=True)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
