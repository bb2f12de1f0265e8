"""Grading runs what the student built, on the real practice cluster with real nbgrader.

Each submission writes its own app.py and Dockerfile, loads them as ml-api:v1 (and v2), deploys
with kubectl and rolls v2 out. The grader's /predict through the Service must see the student's
own model_version; a v2 that crashes at start, or one never built, must leave the rollout unearned,
though the course's own v2 is pre-pulled on the cluster and another submission's v2 exists at the
same moment.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from kubernetes import client

import student_app
from autograder.grading.classrun import submissions
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.settings import GradingSettings
from autograder.practice import catalog
from autograder.shared import kubeconfig
from test_grading import _meta, edit, new_course, replace_step

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

ASSIGNMENT = "own-app"
FIRST, SECOND = "1-deploy.ipynb", "2-update.ipynb"  # as notebooks 04 and 05: a kernel each
SETUP = (
    "from autograder.lab import connect, images, traffic\n"
    "from autograder.lesson.checks import *\nlab = connect()"
)
DEPLOY = "\n".join(
    [
        student_app.write_folder("student-7"),
        student_app.load("ml-api:v1"),
        f"(WORK / 'deployment.yaml').write_text({student_app.DEPLOYMENT!r})",
        "!kubectl apply -f ml-api/deployment.yaml",
        "!kubectl rollout status deployment/ml-api --timeout=60s",
    ]
)
CRASH = "raise SystemExit('model file /models/model.pkl not found')"


def ship_v2(extra: str = "", built: bool = True) -> str:
    """The v2 edit of app.py alone (its app runs `extra` at start), loaded as ml-api:v2 when `built`
    with the Dockerfile the first notebook wrote, then rolled out."""
    return "\n".join(
        [
            student_app.write_app("student-7-v2", extra),
            *([student_app.load("ml-api:v2")] if built else []),
            "!kubectl set image deployment/ml-api ml-api=ml-api:v2",
            "!kubectl rollout status deployment/ml-api --timeout=20s",
        ]
    )


PREDICTS = """with traffic.port_forward(lab) as forward:
    served = forward.predict([1, 2, 3])
print("served", served)
assert served == {{"prediction": 6.0, "model_version": {version!r}}}"""
ROLLED_OUT = 'rolled_out(lab, "ml-api", "ml-api:v2", replaced="ml-api:v1").assert_passed()'
STEPS = {  # notebook: [(step, solution, test, points)]
    FIRST: [("deploy", DEPLOY, PREDICTS.format(version="student-7"), 2)],
    SECOND: [
        ("ship-v2", ship_v2(), ROLLED_OUT, 3),
        ("v2-serves", "print('v2 shipped')", PREDICTS.format(version="student-7-v2"), 1),
    ],
}
POINTS = {step: points for steps in STEPS.values() for step, _, _, points in steps}


def master(steps: list[tuple[str, str, str, int]]) -> nbformat.NotebookNode:
    cells = [nbformat.v4.new_code_cell(SETUP, metadata=_meta("setup", locked=True))]
    for step, solution, test, points in steps:
        cells.append(
            nbformat.v4.new_code_cell(
                f"### BEGIN SOLUTION\n{solution}\n### END SOLUTION",
                metadata=_meta(step, solution=True),
            )
        )
        cells.append(
            nbformat.v4.new_code_cell(
                f"### BEGIN HIDDEN TESTS\n{test}\n### END HIDDEN TESTS",
                metadata=_meta(f"test-{step}", grade=True, locked=True, points=points),
            )
        )
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata.kernelspec = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


def graded_outputs(course: Path, student: str) -> list[nbformat.NotebookNode]:
    """Every output of the student's autograded notebooks."""
    folder = course / "autograded" / student / ASSIGNMENT
    notebooks = [nbformat.read(folder / name, as_version=4) for name in STEPS]
    return [output for notebook in notebooks for cell in notebook.cells for output in cell.outputs]


def served_outputs(course: Path, student: str) -> str:
    """What the grader's test cells printed in the student's autograded notebooks."""
    return "".join(output.get("text", "") for output in graded_outputs(course, student))


def graded_errors(course: Path, outcomes: list) -> str:
    """The errors each student's autograded notebooks showed: why a score differs, in CI's log."""
    return "\n".join(
        f"{o.student}: {output.ename}: {output.evalue[:300]}"
        for o in outcomes
        for output in graded_outputs(course, o.student)
        if output.output_type == "error"
    )


def test_grading_deploys_each_submissions_own_app_and_v2(tmp_path: Path, practice_cluster) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    catalog.preload_reference_images(client.CoreV1Api(admin))  # the course's v1 and v2, pre-pulled
    grade_own_apps(tmp_path, "practice")


def grade_own_apps(tmp_path: Path, provider: str) -> None:
    """Three submissions graded on `provider`: each is served its own app, and only its own v2."""
    course = new_course(
        tmp_path, master(STEPS[FIRST]), ASSIGNMENT, FIRST, more={SECOND: master(STEPS[SECOND])}
    )
    submissions.write(course, ASSIGNMENT, "builds-own", None)
    submissions.write(course, ASSIGNMENT, "crashing-v2", None)
    edit(course, "crashing-v2", replace_step("ship-v2", ship_v2(extra=CRASH)), ASSIGNMENT, SECOND)
    submissions.write(course, ASSIGNMENT, "never-built-v2", None)
    edit(
        course, "never-built-v2", replace_step("ship-v2", ship_v2(built=False)), ASSIGNMENT, SECOND
    )

    outcomes = grade_class(
        course,
        ASSIGNMENT,
        settings=GradingSettings(jobs=2, cell_timeout=60, patience=8),
        provider=provider,
    )
    print(table(outcomes))
    scores = {o.student: (o.status, o.score) for o in outcomes}
    full = sum(POINTS.values())
    assert scores == {
        "builds-own": ("graded", full),
        "crashing-v2": ("graded", POINTS["deploy"]),
        "never-built-v2": ("graded", POINTS["deploy"]),
    }, graded_errors(course, outcomes)
    assert "'model_version': 'student-7'" in served_outputs(course, "builds-own")
    assert "'model_version': 'student-7-v2'" in served_outputs(course, "builds-own")
    for student in ("crashing-v2", "never-built-v2"):
        assert "'model_version': 'student-7'" in served_outputs(course, student)
        assert "student-7-v2" not in served_outputs(course, student), f"another v2 served {student}"
