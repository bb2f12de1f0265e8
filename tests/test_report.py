"""The instructor's class report: aggregation from a gradebook, autograded notebooks and the ledger,
the page in Chromium, and the report a real class run on the practice cluster writes."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output
from nbgrader.api import Gradebook

from autograder.grading.classrun import report
from autograder.grading.classrun.course import Course
from autograder.grading.classrun.ledger import Ledger, Outcome
from jupyter_browser import SCREENSHOTS, VIEWPORT, Screenshots, chromium

ASSIGNMENT = "lesson01"
NAMESPACE = "grade-ben-0123abcd"
PROBE_HINT = "the readiness probe asks /health"
# notebook -> grade id -> points; then what each student scored, and the hint each failure showed.
CELLS = {"01-why": {"test-replicas": 3.0, "test-cost": 1.0}, "04-deploy": {"test-apply": 5.0}}
CLASS = {
    "ana": {"test-replicas": 3.0, "test-cost": 1.0, "test-apply": 5.0},
    "ben": {"test-replicas": 3.0, "test-cost": 0.0, "test-apply": 0.0},
    "cy": {"test-replicas": 0.0, "test-cost": 0.0, "test-apply": 0.0},
}
HINTS = {
    "ben": {
        "test-cost": "AssertionError: a crash costs minutes, not hours",
        "test-apply": f"CheckFailed: FAIL deployment_ready: no Deployment ml-api in {NAMESPACE}",
    },
    "cy": {
        "test-replicas": "NotAnswered: not run",
        "test-cost": "NotAnswered: not run",
        "test-apply": f"AssertionError: {PROBE_HINT}",
    },
}
SECONDS = {"ana": 40.0, "ben": 25.0, "cy": 1.0}


def autograded(notebook: str, student: str) -> nbformat.NotebookNode:
    """One autograded notebook as the grader leaves it: a failed test cell holds its error."""
    cells = [
        new_code_cell(
            "answer = 1",
            metadata={"nbgrader": {"solution": True, "grade": False, "grade_id": "answer"}},
            outputs=[new_output("error", ename="NotImplementedError", evalue="", traceback=[])],
        )
    ]
    for grade_id, points in CELLS[notebook].items():
        hint = HINTS.get(student, {}).get(grade_id)
        ename, _, evalue = (hint or "").partition(": ")
        outputs = (
            [
                new_output(
                    "error",
                    ename=ename,
                    evalue=f"{evalue}\nsecond line",
                    traceback=[
                        "Traceback (most recent call last):",
                        f"\x1b[31m{ename}\x1b[0m: {evalue}",
                    ],
                )
            ]
            if hint
            else [new_output("stream", name="stdout", text="passed\n")]
        )
        cells.append(
            new_code_cell(
                "check()",
                outputs=outputs,
                metadata={
                    "nbgrader": {
                        "grade": True,
                        "solution": False,
                        "grade_id": grade_id,
                        "points": points,
                    }
                },
            )
        )
    return new_notebook(cells=cells)


@pytest.fixture
def graded_class(tmp_path: Path) -> Course:
    """A course whose gradebook, feedback and ledger hold the class above, as a run leaves them."""
    (tmp_path / "nbgrader_config.py").write_text("")
    course = Course(tmp_path)
    with Gradebook(course.dirs.db_url) as gradebook:
        gradebook.add_assignment(ASSIGNMENT)
        for notebook, cells in CELLS.items():
            gradebook.add_notebook(notebook, ASSIGNMENT)
            for grade_id, points in cells.items():
                gradebook.add_grade_cell(
                    grade_id, notebook, ASSIGNMENT, max_score=points, cell_type="code"
                )
        for student, scores in CLASS.items():
            gradebook.add_student(student)
            gradebook.add_submission(ASSIGNMENT, student)
            for notebook, cells in CELLS.items():
                for grade_id in cells:
                    gradebook.find_grade(
                        grade_id, notebook, ASSIGNMENT, student
                    ).auto_score = scores[grade_id]
            gradebook.db.commit()
    ledger = Ledger(course.root, ASSIGNMENT)
    for student, seconds in SECONDS.items():
        ledger.record(Outcome(student, "graded", seconds=seconds, phases={"cells": seconds / 2}))
        folder = course.autograded(student, ASSIGNMENT)
        folder.mkdir(parents=True)
        for notebook in CELLS:
            nbformat.write(autograded(notebook, student), folder / f"{notebook}.ipynb")
    return course


def test_a_failed_test_cell_gives_its_error_and_first_line_and_answer_cells_give_none(
    tmp_path: Path,
) -> None:
    nbformat.write(autograded("04-deploy", "ben"), tmp_path / "04-deploy.ipynb")
    nbformat.write(autograded("01-why", "ana"), tmp_path / "01-why.ipynb")
    assert report.student_hints(tmp_path) == {
        "04-deploy/test-apply": f"{HINTS['ben']['test-apply'].replace(NAMESPACE, '<namespace>')}"
    }


def test_the_class_is_gathered_from_gradebook_feedback_and_ledger(graded_class: Course) -> None:
    data = report.gather(graded_class, ASSIGNMENT)
    assert data.scores == {"ana": 9.0, "ben": 3.0, "cy": 0.0} and data.max_score == 9.0
    assert data.pass_rates() == {
        "01-why/test-replicas": 2 / 3,
        "01-why/test-cost": 1 / 3,
        "04-deploy/test-apply": 1 / 3,
    }
    assert data.seconds == SECONDS and data.phases["ana"] == {"cells": 20.0}
    reasons = data.reasons()
    assert reasons[0] == report.Reason(
        "NotAnswered: not run",
        students=1,
        failures=2,
        exercises=("01-why/test-replicas", "01-why/test-cost"),
    )
    assert {reason.hint: reason.students for reason in reasons} == {
        "NotAnswered: not run": 1,
        "AssertionError: a crash costs minutes, not hours": 1,
        "CheckFailed: FAIL deployment_ready: no Deployment ml-api in <namespace>": 1,
        f"AssertionError: {PROBE_HINT}": 1,
    }


def test_one_hint_from_many_submissions_ranks_first_whatever_namespace_each_was_graded_in() -> None:
    data = report.ClassData(ASSIGNMENT, exercises={"nb/a": [False] * 3, "nb/b": [False] * 3})
    data.hints = {
        student: {"nb/a": f"CheckFailed: no Service in {namespace}", "nb/b": "NotAnswered: not run"}
        for student, namespace in (("x", "<namespace>"), ("y", "<namespace>"))
    }
    data.hints["z"] = {"nb/b": "NotAnswered: not run"}
    assert [(r.hint, r.students, r.failures) for r in data.reasons()] == [
        ("NotAnswered: not run", 3, 3),
        ("CheckFailed: no Service in <namespace>", 2, 2),
    ]
    assert report.hint(
        "WaitTimeout", "no route in grade-a-long-student-id-9f8e7d6c after 30 s\n"
    ) == ("WaitTimeout: no route in <namespace> after 30 s")
    assert report.hint("AssertionError", "") == "AssertionError"
    assert len(report.hint("ApiException", "x" * 5000)) == report.MAX_HINT


def test_the_page_embeds_four_plots_and_escapes_hints(graded_class: Course) -> None:
    page = report.write(graded_class, ASSIGNMENT).read_text()
    assert (
        report.report_path(graded_class.root, ASSIGNMENT)
        == graded_class.root / "class-report-lesson01.html"
    )
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,', page)) == 4
    assert "3 submissions graded; median score 3 of 9; 1 with full marks." in page
    assert "ml-api in &lt;namespace&gt;" in page and "<namespace>" not in page


def test_a_course_with_nothing_graded_says_so(tmp_path: Path) -> None:
    (tmp_path / "nbgrader_config.py").write_text("")
    page = report.write(Course(tmp_path), ASSIGNMENT).read_text()
    assert "No graded submission of lesson01" in page and "<img" not in page


def open_report(path: Path, shots: Screenshots) -> dict:
    """The report in Chromium: every plot decoded and drawn, the reasons read, a screenshot kept."""
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(path.as_uri())
        seen = page.evaluate("""() => ({
            title: document.querySelector('h1').innerText,
            plots: [...document.images].map(
                img => img.complete && img.naturalWidth > 0 && img.width > 0),
            reasons: [...document.querySelectorAll('#reasons tr')].slice(1).map(
                row => row.innerText),
            sections: [...document.querySelectorAll('h2')].map(h => h.innerText)})""")
        shots.take(page, "class-report")
        page.screenshot(path=str(shots.folder / "class-report-full.png"), full_page=True)
    return seen


@pytest.mark.browser
def test_the_report_shows_its_plots_in_chromium(graded_class: Course) -> None:
    seen = open_report(
        report.write(graded_class, ASSIGNMENT), Screenshots(SCREENSHOTS / "class-report-fixture")
    )
    assert seen["title"] == "Class report: lesson01"
    assert seen["plots"] == [True] * 4
    assert seen["sections"] == ["Scores", "Exercises", "Failure reasons", "Grading time"]
    assert any(PROBE_HINT in row for row in seen["reasons"])


# A class of ten, mixed as a real one is: two finished, three blank, five stopped along the way.
MIXED_CLASS = (
    "masters",
    "masters-2",
    "untouched",
    "untouched-2",
    "untouched-3",
    "first-notebook-only",
    "through-02",
    "through-03",
    "through-04",
    "through-05",
)


@pytest.mark.browser
def test_a_real_class_run_writes_the_report_beside_grades_csv(
    graded_course: Callable[[str, Collection[str]], tuple[Path, list[Outcome]]], practice_cluster
) -> None:
    root, outcomes = graded_course("practice", MIXED_CLASS)
    path = report.report_path(root, ASSIGNMENT)
    assert path.parent == (root / "grades.csv").parent and path.is_file()
    data = report.gather(Course(root), ASSIGNMENT)
    assert data.scores == {o.student: o.score for o in outcomes}
    rates = data.pass_rates()
    first = [name for name in data.exercises if name.startswith("01-")]
    last = [name for name in data.exercises if name.startswith("07-")]
    assert first and all(rates[name] == 7 / 10 for name in first), "all but the three blank"
    assert last and all(rates[name] == 2 / 10 for name in last), "only the two finished"
    assert set(data.hints) == set(MIXED_CLASS) and not data.hints["masters"]
    assert set(data.hints["untouched"]) == set(data.exercises), "only grade cells give hints"
    assert data.reasons()[0].students >= 3 and data.reasons()[0].hint.startswith("NotAnswered")
    assert set(data.seconds) == set(data.scores) and all(
        seconds > 0 for seconds in data.seconds.values()
    )
    seen = open_report(path, Screenshots(SCREENSHOTS / "class-report-10-mixed"))
    assert seen["plots"] == [True] * 4 and seen["reasons"]
