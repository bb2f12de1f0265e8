"""Every notebook runs top to bottom: solved masters pass their own tests, student copies fail only
where a student has work to do, and notebooks/ is exactly what nbgrader generates."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import pytest

from autograder import REPO_ROOT, notebooks
from autograder.shared.errors import DockerfileMissing

MASTERS = REPO_ROOT / notebooks.SOURCE_DIR / notebooks.ASSIGNMENT
STUDENTS = REPO_ROOT / notebooks.STUDENT_DIR
TIMINGS = REPO_ROOT / ".pytest_cache" / "notebook-timings.json"

# Facts each solved notebook must print: the lesson's figures and the cluster's real answers.
KEY_FACTS = {
    "01-why-orchestration": [
        "Exercise 1.1 passed",
        "Exercise 1.2 passed",
        "Exercise 1.3 passed",
        "200 req/s per container",
        "one crash loses 5 replicas",
    ],
    "02-choosing-a-platform": [
        "Exercise 2.1 passed",
        "Exercise 2.2 passed",
        "Exercise 2.3 passed",
        "two-person startup API                   -> Cloud-Native (ECS/Run)",
        "did you mean Prometheus?",
    ],
    "03-your-cluster": [
        "Client Version: v1.34",
        "Kubernetes control plane is running at",
        "PASS cluster_ready: 5 nodes Ready",
        "Exercise 3.1 passed",
        "GPU nodes: ['practice-gpu-1', 'practice-gpu-2']",
    ],
    "04-first-deployment": [
        "{'model_version': 'v1.0', 'prediction': 15.0}",
        "{'status': 'healthy'}",
        "deployment.apps/ml-api created",
        "service/ml-api-service created",
        "PASS app_answers",
        "PASS dockerfile",
        "PASS manifest",
        "PASS answer",
        "PASS deployment_ready",
        "3/3 pods ready",
        "PASS service_routes",
        "Exercise 4.2 passed",
        "Exercise 4.3 passed",
        "Exercise 4.4 passed",
    ],
    "05-scale-update-rollback": [
        "PASS scaled_to",
        "Exercise 5.1 passed",
        "Events:",
        'deployment "ml-api" successfully rolled out',
        "deployment.apps/ml-api scaled",
        "deployment.apps/ml-api image updated",
        "deployment.apps/ml-api rolled back",
        'deployment.apps "ml-api" deleted',
        "{'model_version': 'v2.0', 'prediction': 6.0}",
        "Exercise 5.2 passed",
        "PASS rolled_back",
        "ml-api:v2",
        "Exercise 5.3 passed",
        "PASS namespace_clean",
        "Exercise 5.4 passed",
        "PASS app_answers",
        "Exercise 5.5 passed",
        "Exercise 5.6 passed",
        "rolled back to ml-api:v2",
    ],
    "06-troubleshooting-and-review": [
        "was never loaded",
        "ErrImageNeverPull",
        "Exercise 6.1 passed",
        "MODEL_STORE is not set",
        "CrashLoopBackOff",
        "Exercise 6.2 passed",
        "FAIL service_routes",
        "Endpoints:",
        "Exercise 6.3 passed",
        "{'status': 'healthy'}",
        "Insufficient cpu",
        "Allocated resources",
        "Exercise 6.4 passed",
        "Q6 answered",
    ],
    "07-beyond-the-lesson": [
        "Exercise 7.1 passed",
        "Exercise 7.2 passed",
        "Insufficient nvidia.com/gpu",
        "Exercise 7.3 passed",
        "PASS namespace_clean",
    ],
}

# Charts each solved notebook must draw (as PNG, so they show in Jupyter and in exported HTML).
CHARTS = {
    "01-why-orchestration": 2,
    "02-choosing-a-platform": 1,
    "05-scale-update-rollback": 1,
    "07-beyond-the-lesson": 2,
}


def _names(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.ipynb"))


def _marks(name: str) -> list[pytest.MarkDecorator]:
    return [] if name in notebooks.NO_CLUSTER else [pytest.mark.cluster, pytest.mark.slow]


def _params(folder: Path) -> list:
    return [pytest.param(name, marks=_marks(name), id=name) for name in _names(folder)]


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a code cell showed: streams, results and error names."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts.append(output.get("data", {}).get("text/plain", ""))
        elif output.output_type == "error":
            parts.append(f"{output.ename}: {output.evalue}")
    return "".join(parts)


def _execute(path: Path, name: str, allow_errors: bool) -> nbformat.NotebookNode:
    """Run a notebook (cluster ones in a namespace of their own, deleted after); record its time."""
    namespace = None
    if notebooks.needs_cluster(path):
        namespace = f"nb-{name[:2]}-{'m' if path.parent == MASTERS else 's'}-{uuid.uuid4().hex[:6]}"
    try:
        notebook, seconds = notebooks.execute(path, namespace=namespace, allow_errors=allow_errors)
    finally:
        if namespace:
            clean_up_namespace(namespace)
    record_time(f"{path.parent.name}/{name}", seconds)
    return notebook


def clean_up_namespace(namespace: str) -> None:
    """The notebook's namespace goes, and ml-api:v1 and v2 are the reference server again.

    A student copy loads its unfinished app under those tags, which later tests on the shared
    cluster would run.
    """
    from kubernetes import client

    from autograder.course.steps import serve_lesson_images
    from autograder.lab.cluster import connect

    lab = connect("practice", namespace="default")
    try:
        lab.core.delete_namespace(namespace)
    except client.ApiException as error:
        if error.status != 404:
            raise
    serve_lesson_images(lab)


def record_time(key: str, seconds: float) -> None:
    """Adds one notebook's time to TIMINGS; pytest-xdist workers take turns to rewrite it."""
    TIMINGS.parent.mkdir(exist_ok=True)
    with open(TIMINGS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        timings = json.loads(TIMINGS.read_text()) if TIMINGS.exists() else {}
        timings[key] = round(seconds, 1)
        TIMINGS.write_text(json.dumps(timings, indent=1, sort_keys=True))


@pytest.fixture
def cluster_for(request: pytest.FixtureRequest):
    """The practice cluster, only for the notebooks that need one."""

    def ensure(name: str) -> None:
        if name not in notebooks.NO_CLUSTER:
            request.getfixturevalue("practice_cluster")

    return ensure


@pytest.mark.parametrize("name", _params(MASTERS))
def test_solved_master_runs_and_passes_its_tests(name, cluster_for):
    cluster_for(name)
    notebook = _execute(MASTERS / f"{name}.ipynb", name, allow_errors=False)
    shown = "\n".join(_text(cell) for cell in notebook.cells if cell.cell_type == "code")
    for fact in KEY_FACTS.get(name, []):
        assert fact in shown, f"{name} did not show {fact!r}"
    charts = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    assert charts >= CHARTS.get(name, 0), f"{name} drew {charts} charts"


def _missing_student_work(notebook: nbformat.NotebookNode, error: nbformat.NotebookNode) -> bool:
    """An error that says only that the student's work is missing: the placeholder's
    NotImplementedError, a NameError for a name that a solution cell defines, or the Dockerfile
    notebook 4 asks for, which a provided build cell needs (the folder may hold one a test before
    this one wrote: notebooks run in their own folder, shared)."""
    if error.ename in ("NotImplementedError", DockerfileMissing.__name__):
        return True
    missing = re.fullmatch(r"name '(\w+)' is not defined", error.evalue)
    return (
        error.ename == "NameError"
        and missing is not None
        and any(
            re.search(rf"^\s*(def\s+)?{missing[1]}\b", cell.source, re.MULTILINE)
            for cell in notebook.cells
            if cell.metadata.get("nbgrader", {}).get("solution")
        )
    )


@pytest.mark.parametrize("name", _params(STUDENTS))
def test_student_notebook_fails_only_where_work_is_expected(name, cluster_for):
    cluster_for(name)
    notebook = _execute(STUDENTS / f"{name}.ipynb", name, allow_errors=True)
    unexpected = []
    for cell in notebook.cells:
        graded = "nbgrader" in cell.metadata and (
            cell.metadata.nbgrader.get("solution") or cell.metadata.nbgrader.get("grade")
        )
        for output in cell.get("outputs", []):
            if (
                output.output_type == "error"
                and not graded
                and not _missing_student_work(notebook, output)
            ):
                unexpected.append(f"{cell.source[:80]!r}: {output.ename}: {output.evalue}")
    assert not unexpected, "cells without student work failed:\n" + "\n".join(unexpected)
    graded_errors = [
        cell
        for cell in notebook.cells
        if cell.metadata.get("nbgrader", {}).get("solution")
        and any(o.output_type == "error" for o in cell.get("outputs", []))
    ]
    assert graded_errors, "an unsolved notebook should stop at its exercises"


def test_masters_carry_valid_nbgrader_metadata():
    ids = set()
    for path in sorted(MASTERS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        cells = [c for c in notebook.cells if "nbgrader" in c.metadata]
        assert cells, f"{path.name} has no graded cells"
        for cell in cells:
            meta = cell.metadata.nbgrader
            where = f"{path.name}:{meta.get('grade_id')}"
            assert meta["schema_version"] == 3 and re.fullmatch(r"[a-z0-9-]+", meta["grade_id"]), (
                where
            )
            assert meta["grade_id"] not in ids, f"duplicate grade_id {where}"
            ids.add(meta["grade_id"])
            assert not cell.get("outputs"), f"{where} has saved outputs"
            if meta["solution"]:
                assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source, (
                    where
                )
                assert not meta["locked"], where
            if meta["grade"]:
                assert meta["locked"] and meta["points"] > 0, where
                assert (
                    cell.source.count("### BEGIN HIDDEN TESTS")
                    == cell.source.count("### END HIDDEN TESTS")
                    == 1
                ), where


CREATES = re.compile(
    r"\.create_namespaced_\w+\(|\bcreate_from_(?:yaml|dict|directory)\((?![^)]*apply=True)"
    r"|kubectl\s+create\b"
)


def test_no_cell_creates_what_a_second_run_would_find_there_already():
    """Objects are applied (kubectl apply, server-side apply), never created.

    Re-running a cell that creates ends in a 409 AlreadyExists traceback, where an apply changes
    only what differs.
    """
    creating = [
        f"{path.name} cell {index}: {match.group(0)}"
        for path in sorted(MASTERS.glob("*.ipynb"))
        for index, cell in enumerate(nbformat.read(path, as_version=4).cells)
        if cell.cell_type == "code" and (match := CREATES.search(cell.source))
    ]
    assert not creating, "\n".join(creating)


def test_nbgrader_generate_assignment_succeeds(tmp_path):
    shutil.copy(REPO_ROOT / "nbgrader_config.py", tmp_path)
    shutil.copytree(MASTERS, tmp_path / notebooks.SOURCE_DIR / notebooks.ASSIGNMENT)
    scripts = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{scripts}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        [sys.executable, "-m", "nbgrader", "generate_assignment", notebooks.ASSIGNMENT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    released = _names(tmp_path / "release" / notebooks.ASSIGNMENT)
    assert released == _names(MASTERS)
    for name in released:
        text = (tmp_path / "release" / notebooks.ASSIGNMENT / f"{name}.ipynb").read_text()
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, name


def test_student_notebooks_match_what_nbgrader_generates():
    stale = notebooks.drift()
    assert not stale, (
        f"notebooks/ drifted from source/ in {stale}: run `python -m autograder notebooks sync`"
    )


def test_drift_is_detected_and_sync_repairs_it(tmp_path):
    shutil.copy(REPO_ROOT / "nbgrader_config.py", tmp_path)
    shutil.copytree(MASTERS, tmp_path / notebooks.SOURCE_DIR / notebooks.ASSIGNMENT)
    shutil.copytree(STUDENTS, tmp_path / notebooks.STUDENT_DIR)
    edited = tmp_path / notebooks.STUDENT_DIR / "02-choosing-a-platform.ipynb"
    notebook = nbformat.read(edited, as_version=4)
    notebook.cells[0].source += "\nAn edit made by hand in the student copy."
    nbformat.write(notebook, edited)
    (tmp_path / notebooks.STUDENT_DIR / "99-orphan.ipynb").write_text(edited.read_text())
    assert notebooks.drift(tmp_path) == ["02-choosing-a-platform.ipynb", "99-orphan.ipynb"]
    assert notebooks.sync(tmp_path) == ["99-orphan.ipynb", "02-choosing-a-platform.ipynb"]
    assert notebooks.drift(tmp_path) == []
