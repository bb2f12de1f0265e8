"""The instructor's class report: one HTML page beside grades.csv, what a run says about the class.

Scores and each exercise's points come from the gradebook; the failure reasons are the hints the
students read in their feedback: each failed test cell's error (its name and its message's first
line), read from the autograded notebooks the feedback pages are rendered from, so a student whose
page took too long to render still counts. Grading times come from the run's ledger. The plots are
embedded as PNG data: the page is one file that opens anywhere (a browser, JupyterLab).
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.utils import is_grade

from autograder.grading.classrun.course import Course
from autograder.grading.classrun.ledger import Ledger

REPORT_NAME = "class-report-{assignment}.html"
TOP_REASONS = 10
REASON_COLUMNS = "".join(
    f"<th>{name}</th>" for name in ("submissions", "test cells", "hint", "exercises")
)
MAX_HINT = 300  # characters: a message may carry a whole HTTP response
PHASES = ("sandbox set-up", "kernel starts", "cells", "judging", "worker", "clean-up")
# Each submission is graded in its own namespace (names.namespace_for): one reason, whoever hit it.
GRADING_NAMESPACE = re.compile(r"\bgrade-[a-z0-9-]*?-[0-9a-f]{8}\b")


@dataclass(frozen=True)
class Reason:
    """One failure hint: how many submissions got it, in how many test cells, in which exercises."""

    hint: str
    students: int
    failures: int
    exercises: tuple[str, ...]

    def where(self, shown: int = 4) -> str:
        """The exercises, the first few named and the rest counted."""
        rest = len(self.exercises) - shown
        return ", ".join(self.exercises[:shown]) + (f" and {rest} more" if rest > 0 else "")


@dataclass
class ClassData:
    """What the report shows, gathered from the gradebook, the feedback and the ledger."""

    assignment: str
    scores: dict[str, float] = field(default_factory=dict)  # per student
    max_score: float = 0.0
    exercises: dict[str, list[bool]] = field(
        default_factory=dict
    )  # "notebook/grade id" -> passed, per student
    hints: dict[str, dict[str, str]] = field(default_factory=dict)  # student -> exercise -> hint
    phases: dict[str, dict[str, float]] = field(default_factory=dict)  # student -> phase -> seconds
    seconds: dict[str, float] = field(default_factory=dict)  # student -> whole grading

    def pass_rates(self) -> dict[str, float]:
        """Each exercise's share of submissions with full points, in the assignment's order."""
        return {
            name: sum(passed) / len(passed) for name, passed in self.exercises.items() if passed
        }

    def reasons(self, top: int = TOP_REASONS) -> list[Reason]:
        """The most frequent failure hints: by submissions that got each, then by test cells."""
        students: Counter[str] = Counter()
        failures: Counter[str] = Counter()
        where: dict[str, set[str]] = {}
        for by_exercise in self.hints.values():
            students.update(set(by_exercise.values()))
            failures.update(by_exercise.values())
            for exercise, hint in by_exercise.items():
                where.setdefault(hint, set()).add(exercise)
        order = {name: index for index, name in enumerate(self.exercises)}
        ranked = sorted(students, key=lambda hint: (-students[hint], -failures[hint], hint))[:top]
        return [
            Reason(
                hint,
                students[hint],
                failures[hint],
                tuple(sorted(where[hint], key=lambda name: (order.get(name, len(order)), name))),
            )
            for hint in ranked
        ]


def report_path(course_root: Path, assignment: str) -> Path:
    """Where a class run writes the report: beside grades.csv, in the course directory."""
    return course_root / REPORT_NAME.format(assignment=assignment)


def gradebook_results(db_url: str, assignment: str, data: ClassData) -> None:
    """Every submission's score and whether each graded cell got its full points."""
    with Gradebook(db_url) as gradebook:
        try:
            found = gradebook.find_assignment(assignment)
        except MissingEntry:
            return
        data.max_score = found.max_score
        for notebook in found.notebooks:
            for cell in notebook.grade_cells:
                data.exercises[f"{notebook.name}/{cell.name}"] = []
        for submission in sorted(found.submissions, key=lambda s: s.student_id):
            data.scores[submission.student_id] = submission.score
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    data.exercises.setdefault(f"{notebook.name}/{grade.name}", []).append(
                        grade.score >= grade.max_score
                    )


def hint(ename: str, evalue: str) -> str:
    """What a failed cell tells the student, alike for all: the error and its first line."""
    first = next((line.strip() for line in evalue.splitlines() if line.strip()), "")
    text = f"{ename}: {first}" if first else ename
    return GRADING_NAMESPACE.sub("<namespace>", text)[:MAX_HINT]


def notebook_hints(path: Path) -> dict[str, str]:
    """The hint of each failed grade cell of one autograded notebook, by grade id."""
    hints = {}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code" or not is_grade(cell):
            continue
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                hints[cell.metadata.nbgrader["grade_id"]] = hint(output.ename, output.evalue)
    return hints


def student_hints(folder: Path) -> dict[str, str]:
    """The hints of every autograded notebook of one student's assignment, by notebook/grade id."""
    return {
        f"{path.stem}/{grade_id}": text
        for path in sorted(folder.glob("*.ipynb"))
        for grade_id, text in notebook_hints(path).items()
    }


def gather(course: Course, assignment: str) -> ClassData:
    """The class's results: gradebook scores, each student's feedback hints, grading times."""
    data = ClassData(assignment)
    gradebook_results(course.dirs.db_url, assignment, data)
    for student in data.scores:
        folder = course.autograded(student, assignment)
        if folder.is_dir():
            data.hints[student] = student_hints(folder)
    for outcome in Ledger(course.root, assignment).outcomes():
        if outcome.student in data.scores:
            data.seconds[outcome.student] = outcome.seconds
            data.phases[outcome.student] = outcome.phases
    return data


def _png(figure: Figure) -> str:
    """A figure as an <img> of embedded PNG data."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<img alt="{html.escape(str(figure.get_label()))}" src="data:image/png;base64,{encoded}">'
    )


def score_figure(data: ClassData) -> Figure:
    figure = Figure(figsize=(7, 3.2), label="score distribution")
    axes = figure.subplots()
    axes.hist(
        list(data.scores.values()),
        bins=min(20, max(5, len(data.scores))),
        range=(0, data.max_score or 1),
        color="#3b7dd8",
        edgecolor="white",
    )
    axes.set(
        xlabel=f"score (of {data.max_score:g})", ylabel="submissions", title="Score distribution"
    )
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def pass_rate_figure(data: ClassData) -> Figure:
    rates = data.pass_rates()
    figure = Figure(figsize=(7, 0.3 * len(rates) + 1.2), label="pass rate per exercise")
    axes = figure.subplots()
    names = list(rates)[::-1]
    shares = [100 * rates[name] for name in names]
    axes.barh(names, shares, color=["#2e9e5b" if share >= 50 else "#d8572a" for share in shares])
    axes.set(
        xlim=(0, 100), xlabel="submissions with full points (%)", title="Pass rate per exercise"
    )
    axes.tick_params(axis="y", labelsize=8)
    return figure


def reasons_figure(reasons: list[Reason]) -> Figure:
    figure = Figure(figsize=(7, 0.35 * len(reasons) + 1.2), label="most frequent failure reasons")
    axes = figure.subplots()
    labels = [f"#{number}" for number in range(1, len(reasons) + 1)][::-1]
    axes.barh(labels, [reason.students for reason in reasons][::-1], color="#d8572a")
    axes.set(xlabel="submissions", title="Most frequent failure reasons (see the table)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    return figure


def time_figure(data: ClassData) -> Figure:
    students = sorted(data.seconds, key=data.seconds.__getitem__)
    figure = Figure(figsize=(7, 0.3 * len(students) + 1.2), label="grading time per submission")
    axes = figure.subplots()
    left = [0.0] * len(students)
    for phase in PHASES:
        widths = [data.phases.get(student, {}).get(phase, 0.0) for student in students]
        if any(widths):
            axes.barh(students, widths, left=left, label=phase)
            left = [start + width for start, width in zip(left, widths)]
    rest = [data.seconds[student] - used for student, used in zip(students, left)]
    axes.barh(
        students, [max(0.0, width) for width in rest], left=left, label="other", color="#bbbbbb"
    )
    axes.set(xlabel="seconds", title="Grading time per submission")
    axes.legend(fontsize=7, loc="lower right")
    axes.tick_params(axis="y", labelsize=8)
    return figure


def _rows(cells: Iterable[Iterable[object]]) -> str:
    return "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
        for row in cells
    )


def render(data: ClassData) -> str:
    """The report as one self-contained HTML page."""
    if not data.scores:
        name = html.escape(data.assignment)
        body = f"<p>No graded submission of {name} is in the gradebook yet.</p>"
    else:
        reasons = data.reasons()
        scores = sorted(data.scores.values())
        summary = (
            f"{len(scores)} submissions graded; median score {scores[len(scores) // 2]:g} "
            f"of {data.max_score:g}; {sum(s >= data.max_score for s in scores)} with full marks."
        )
        reason_rows = _rows(
            (f"#{n}", r.students, r.failures, r.hint, r.where()) for n, r in enumerate(reasons, 1)
        )
        sections = [
            ("Scores", _png(score_figure(data))),
            ("Exercises", _png(pass_rate_figure(data))),
            (
                "Failure reasons",
                (_png(reasons_figure(reasons)) if reasons else "<p>No failures.</p>")
                + f'<table id="reasons"><tr><th></th>{REASON_COLUMNS}</tr>'
                f"{reason_rows}</table>",
            ),
            (
                "Grading time",
                _png(time_figure(data))
                if data.seconds
                else "<p>No grading times recorded (graded before the ledger kept them).</p>",
            ),
        ]
        body = f'<p id="summary">{html.escape(summary)}</p>' + "".join(
            f"<section><h2>{title}</h2>{content}</section>" for title, content in sections
        )
    title = f"Class report: {html.escape(data.assignment)}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>'
        "body{font-family:sans-serif;max-width:60em;margin:2em auto}img{max-width:100%}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em;text-align:left}"
        f"</style></head><body><h1>{title}</h1>{body}</body></html>"
    )


def write(course: Course, assignment: str) -> Path:
    """Gather the class's results and write the report beside grades.csv; returns its path."""
    target = report_path(course.root, assignment)
    target.write_text(render(gather(course, assignment)))
    return target
