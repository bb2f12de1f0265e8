"""Round trips through `grade_class` on the real practice cluster with real nbgrader.

A small cluster assignment (the lesson's deploy, service, scale, update, rollback and cleanup
steps, one graded test per step) is generated in a throwaway course directory; submissions that
are solved, untouched, partial, broken and hostile must each get exactly the score they earned,
leave no namespace behind and touch no other namespace.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from kubernetes import client
from nbformat.v4 import new_code_cell, new_notebook

import student_app
from autograder import MANIFESTS, REPO_ROOT
from autograder.grading import sandbox
from autograder.grading.classrun import submissions
from autograder.grading.classrun.course import Course, GradingError, ensure_in_gradebook
from autograder.grading.classrun.ledger import Ledger
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.settings import GradingSettings
from autograder.lab import workloads
from autograder.shared import kubeconfig

ASSIGNMENT = "k8s-steps"
NOTEBOOK = "steps.ipynb"
# The submission builds its own v1 and v2: a graded namespace runs no image it did not build.
SETUP = "\n".join(
    [
        "from autograder.lesson.checks import *",
        "from autograder.lab import connect, images, workloads",
        "lab = connect()",
        student_app.write_folder("v1.0"),
        student_app.load("ml-api:v1"),
        student_app.load("ml-api:v2"),
    ]
)
# The student's own manifests, typed into their cells (the course's copies are
# hidden from a graded kernel).
DEPLOYMENT, SERVICE = workloads.load_manifests(
    MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml"
)
WAIT = '\nworkloads.wait_for_rollout(lab, "ml-api", progress=False)'
STEPS = [  # (step, solution, test, points)
    (
        "deploy",
        f"workloads.apply(lab, [{DEPLOYMENT!r}]){WAIT}",
        'deployment_ready(lab, "ml-api", replicas=3).assert_passed()',
        3,
    ),
    (
        "service",
        f"workloads.apply(lab, [{SERVICE!r}])",
        'eventually(service_routes, lab, "ml-api-service", "ml-api").assert_passed()',
        2,
    ),
    (
        "scale",
        f"!kubectl scale deployment ml-api --replicas=5{WAIT}\n"
        f"!kubectl scale deployment ml-api --replicas=3{WAIT}",
        'scaled_to(lab, "ml-api", 5).assert_passed()\n'
        'changed_with_kubectl(lab, "ml-api", "scale").assert_passed()',
        1,
    ),
    (
        "update",
        f"!kubectl set image deployment/ml-api ml-api=ml-api:v2{WAIT}",
        'rolled_out(lab, "ml-api", "ml-api:v2", replaced="ml-api:v1").assert_passed()\n'
        'changed_with_kubectl(lab, "ml-api", "set image").assert_passed()',
        1,
    ),
    (
        "rollback",
        f"!kubectl rollout undo deployment/ml-api{WAIT}",
        'rolled_back(lab, "ml-api", "ml-api:v1", replaced="ml-api:v2").assert_passed()\n'
        'changed_with_kubectl(lab, "ml-api", "rollout undo").assert_passed()',
        2,
    ),
    (
        "cleanup",
        "!kubectl delete deployment,service -l app=ml-api",
        'eventually(namespace_clean, lab, "app=ml-api", deployed="ml-api", '
        "timeout=60).assert_passed()",
        1,
    ),
]
# Every step done with what the course ships instead of the student's own work: its step functions,
# its manifests (by Python and by `kubectl apply -f`) and its actions. Each must earn nothing.
COURSE_ANSWERS = {
    "deploy": """from autograder import MANIFESTS
try:
    from autograder.course import steps
    steps.deploy_first_app(lab)
except ImportError as error:
    print("no course steps:", error)
workloads.apply(lab, workloads.load_manifests(MANIFESTS / "deployment.yaml"))
!kubectl apply -f {MANIFESTS / "deployment.yaml"}""",
    "service": """from autograder import MANIFESTS
workloads.apply(lab, workloads.load_manifests(MANIFESTS / "service.yaml"))
!kubectl apply -f {MANIFESTS / "service.yaml"}""",
    "scale": 'from autograder.course import actions\nactions.scale(lab, "ml-api", 5)',
    "update": "from autograder.course import actions\n"
    'actions.set_image(lab, "ml-api", "ml-api", "ml-api:v2")',
    "rollback": 'from autograder.course import actions\nactions.rollback(lab, "ml-api")',
    "cleanup": 'from autograder.course import actions\nactions.delete_by_label(lab, "app=ml-api")',
}
# The commands' steps done with the Kubernetes client, as the course's actions do
# them: right state, wrong tool.
CLIENT_FOR_COMMANDS = {
    "scale": 'lab.apps.patch_namespaced_deployment_scale("ml-api", lab.namespace, '
    '{"spec": {"replicas": 5}})'
    f'{WAIT}\nlab.apps.patch_namespaced_deployment_scale("ml-api", lab.namespace, '
    f'{{"spec": {{"replicas": 3}}}})'
    f"{WAIT}",
    "update": 'lab.apps.patch_namespaced_deployment("ml-api", lab.namespace, '
    '{"spec": {"template": {"spec": '
    f'{{"containers": [{{"name": "ml-api", "image": "ml-api:v2"}}]}}}}}}}}){WAIT}',
    "rollback": 'lab.apps.patch_namespaced_deployment("ml-api", lab.namespace, '
    '{"spec": {"template": {"spec": '
    f'{{"containers": [{{"name": "ml-api", "image": "ml-api:v1"}}]}}}}}}}}){WAIT}',
}
POINTS = {step: points for step, _, _, points in STEPS}
FULL = sum(POINTS.values())


def _meta(grade_id: str, **flags: object) -> dict:
    return {
        "nbgrader": {
            "grade_id": grade_id,
            "grade": False,
            "solution": False,
            "locked": False,
            "schema_version": 3,
            **flags,
        }
    }


def master() -> nbformat.NotebookNode:
    """The instructor's notebook: a solution cell and a partly hidden test cell per step."""
    cells = [new_code_cell(SETUP, metadata=_meta("setup", locked=True))]
    for step, solution, test, points in STEPS:
        cells.append(
            new_code_cell(
                f"### BEGIN SOLUTION\n{solution}\n### END SOLUTION",
                metadata=_meta(step, solution=True),
            )
        )
        cells.append(
            new_code_cell(
                f"### BEGIN HIDDEN TESTS\n{test}\n### END HIDDEN TESTS",
                metadata=_meta(f"test-{step}", grade=True, locked=True, points=points),
            )
        )
    notebook = new_notebook(cells=cells)
    notebook.metadata.kernelspec = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


def edit(
    course: Path, student: str, change, assignment: str = ASSIGNMENT, notebook: str = NOTEBOOK
) -> None:
    """Apply `change(cell)` to every cell of a student's submitted notebook."""
    path = course / "submitted" / student / assignment / notebook
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        change(cell)
    nbformat.write(notebook, path)


def replace_step(step: str, source: str):
    def change(cell: nbformat.NotebookNode) -> None:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == step:
            cell.source = source

    return change


MONKEYPATCH = """import autograder.lesson.checks as checks
faked = lambda *args, **kwargs: checks.CheckResult("faked", True, "faked")
for name in list(checks.CHECKS):
    checks.CHECKS[name] = faked
    globals()[name] = faked
checks.eventually = globals()["eventually"] = lambda check, *args, **kwargs: faked()"""

STEAL = """from kubernetes import client as k, config as kc
for stolen in ["{home}/.kube/config", "{cluster}/kubeconfig.yaml"]:
    try:
        k.CoreV1Api(kc.new_client_from_config(config_file=stolen)).delete_namespace("{bystander}")
        print("deleted with", stolen)
    except Exception as error:
        print("could not use", stolen, type(error).__name__)
"""


@pytest.fixture(scope="module")
def bystander(practice_cluster) -> str:
    """A namespace no submission may touch."""
    api = kubeconfig.api_client(practice_cluster.context)
    core = client.CoreV1Api(api)
    name = f"bystander-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_config_map(
        name, {"metadata": {"name": "precious"}, "data": {"keep": "me"}}
    )
    yield name
    core.delete_namespace(name)


def new_course(
    root: Path,
    notebook: nbformat.NotebookNode,
    assignment: str = ASSIGNMENT,
    name: str = NOTEBOOK,
    more: dict[str, nbformat.NotebookNode] | None = None,
    settings: str = "",
) -> Path:
    """A throwaway course in `root` whose one assignment is `notebook` (and `more`, by file name).

    It has the repository's nbgrader settings and `settings` after them, generated into its
    gradebook.
    """
    shutil.copy2(REPO_ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    with open(root / "nbgrader_config.py", "a") as config:
        config.write(settings)
    (root / "source" / assignment).mkdir(parents=True)
    for file, written in {name: notebook, **(more or {})}.items():
        nbformat.write(written, root / "source" / assignment / file)
    ensure_in_gradebook(Course(root), assignment)
    return root


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory, practice_cluster) -> Path:
    """A throwaway course with the cluster assignment generated into its gradebook."""
    return new_course(tmp_path_factory.mktemp("course"), master())


def _pod_watch(
    admin: client.ApiClient, course_key: str, peaks: dict[str, int], stop: threading.Event
) -> None:
    """Record the most pods each grading namespace ever held."""
    core = client.CoreV1Api(admin)
    while not stop.is_set():
        for namespace in sandbox.leftovers(admin, course_key):
            count = len(core.list_namespaced_pod(namespace).items)
            peaks[namespace] = max(peaks.get(namespace, 0), count)
        time.sleep(0.5)


@pytest.mark.cluster
@pytest.mark.slow
def test_each_submission_gets_the_score_it_earned(
    course: Path, bystander: str, practice_cluster
) -> None:
    write = lambda student, steps=(): submissions.write(course, ASSIGNMENT, student, steps)  # noqa: E731
    write("solved", None)
    write("untouched")
    write("partial", {"deploy", "service"})
    write("broken-first-cell", None)
    edit(course, "broken-first-cell", replace_step("deploy", "raise RuntimeError('typo')"))
    write("infinite-loop", None)
    edit(course, "infinite-loop", replace_step("scale", "while True:\n    pass"))
    write("hostile-namespace", None)
    edit(
        course,
        "hostile-namespace",
        replace_step(
            "deploy",
            (
                f'try:\n    lab.core.delete_namespace("{bystander}")\nexcept Exception as error:\n'
                f'    print("refused", error)\n{STEPS[0][1]}'
            ),
        ),
    )
    write("hostile-steals-admin", None)
    edit(
        course,
        "hostile-steals-admin",
        replace_step(
            "deploy",
            STEAL.format(home=Path.home(), bystander=bystander, cluster=practice_cluster.workdir)
            + STEPS[0][1],
        ),
    )
    write("hostile-scale", {"deploy", "service"})
    edit(
        course,
        "hostile-scale",
        replace_step(
            "scale",
            (
                'lab.apps.patch_namespaced_deployment_scale("ml-api", lab.namespace, '
                '{"spec": {"replicas": 1000}})'
            ),
        ),
    )
    write("hostile-course-answers", None)
    for step, source in COURSE_ANSWERS.items():
        edit(course, "hostile-course-answers", replace_step(step, source))
    write("hostile-client-for-commands", None)
    for step, source in CLIENT_FOR_COMMANDS.items():
        edit(course, "hostile-client-for-commands", replace_step(step, source))
    write("hostile-monkeypatch")
    edit(course, "hostile-monkeypatch", replace_step("deploy", MONKEYPATCH))
    write("hostile-edits-tests")
    edit(
        course,
        "hostile-edits-tests",
        lambda cell: (
            cell.metadata.get("nbgrader", {}).get("grade")
            and cell.update(source="print('all tests pass')")
        ),
    )

    admin = kubeconfig.api_client(practice_cluster.context)
    peaks: dict[str, int] = {}
    stop = threading.Event()
    watcher = threading.Thread(
        target=_pod_watch, args=(admin, Course(course).key, peaks, stop), daemon=True
    )
    watcher.start()
    try:
        outcomes = grade_class(
            course,
            ASSIGNMENT,
            settings=GradingSettings(jobs=3, cell_timeout=25, patience=8),
            provider="practice",
        )
    finally:
        stop.set()
        watcher.join()

    print(table(outcomes))
    got = {o.student: o for o in outcomes}
    expected = {
        "solved": FULL,
        "untouched": 0,
        "partial": POINTS["deploy"] + POINTS["service"],
        "broken-first-cell": 0,
        "infinite-loop": FULL - POINTS["scale"],
        "hostile-namespace": FULL,
        "hostile-steals-admin": FULL,
        "hostile-scale": POINTS["deploy"] + POINTS["service"],
        "hostile-monkeypatch": 0,
        "hostile-edits-tests": 0,
        "hostile-course-answers": 0,
        "hostile-client-for-commands": POINTS["deploy"] + POINTS["service"] + POINTS["cleanup"],
    }
    assert {s: (o.status, o.score) for s, o in got.items()} == {
        s: ("graded", p) for s, p in expected.items()
    }
    assert all(o.max_score == FULL for o in outcomes)
    assert got["partial"].steps[f"{NOTEBOOK[:-6]}/test-scale"] == [0, POINTS["scale"]]

    core = client.CoreV1Api(admin)
    assert core.read_namespaced_config_map("precious", bystander).data == {"keep": "me"}
    assert sandbox.leftovers(admin, Course(course).key) == []
    assert peaks and max(peaks.values()) <= int(sandbox.POD_ALLOWANCE)
    assert (course / "grades.csv").read_text().count(ASSIGNMENT) == len(expected)
    assert (course / "feedback" / "solved" / ASSIGNMENT / "steps.html").is_file()

    again = grade_class(
        course,
        ASSIGNMENT,
        ["solved", "partial"],
        GradingSettings(jobs=2, regrade=True, patience=8),
        provider="practice",
    )
    assert [(o.student, o.score) for o in again] == [
        ("solved", FULL),
        ("partial", got["partial"].score),
    ]

    ledger = Ledger(course, ASSIGNMENT)
    ledger._path("untouched").unlink()
    resumed = grade_class(
        course, ASSIGNMENT, settings=GradingSettings(jobs=2, patience=8), provider="practice"
    )
    assert {o.student: o.score for o in resumed} == expected
    assert [o.student for o in resumed if "resumed" not in o.detail] == ["untouched"]


@pytest.mark.cluster
def test_bad_student_ids_and_missing_submissions_are_reported_not_fatal(course: Path) -> None:
    outcomes = grade_class(
        course, ASSIGNMENT, ["../escape", "nobody-submitted"], provider="practice"
    )
    assert [o.status for o in outcomes] == ["error", "error"]
    assert "folder name" in outcomes[0].detail and "no submission" in outcomes[1].detail


@pytest.mark.root  # the grader refuses to start without its jail
def test_unknown_assignment_names_the_ones_that_exist(tmp_path: Path) -> None:
    (tmp_path / "source" / "lesson01").mkdir(parents=True)
    nbformat.write(new_notebook(), tmp_path / "source" / "lesson01" / "a.ipynb")
    with pytest.raises(GradingError, match=r"unknown assignment 'lesson99'.*found: lesson01"):
        grade_class(tmp_path, "lesson99")


@pytest.mark.root  # the grader refuses to start without its jail
def test_a_cluster_that_is_down_records_nothing(tmp_path: Path) -> None:
    (tmp_path / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(master(), tmp_path / "source" / ASSIGNMENT / NOTEBOOK)
    (tmp_path / "submitted" / "alice" / ASSIGNMENT).mkdir(parents=True)
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\nclusters: [{name: dead, cluster: "
        "{server: 'https://127.0.0.1:9'}}]\nusers: [{name: u, user: {token: x}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: u}}]\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "autograder",
            "grade",
            ASSIGNMENT,
            "--course",
            str(tmp_path),
            "--provider",
            "existing",
        ],
        env={**os.environ, "KUBECONFIG": str(dead)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert (
        "does not answer, so nothing was graded" in done.stderr and "Traceback" not in done.stderr
    )
    assert not (tmp_path / "gradebook.db").exists() and not (tmp_path / ".grading").exists()


@pytest.mark.cluster
@pytest.mark.slow
def test_lesson01_masters_get_full_marks_and_its_release_gets_zero(
    tmp_path: Path, round_trip, practice_cluster
) -> None:
    round_trip("practice")
    assert (
        sandbox.leftovers(
            kubeconfig.api_client(practice_cluster.context), Course(tmp_path / "course").key
        )
        == []
    )
