"""A submission typed from the page earns nothing on the cluster.

Every answer is a literal a student could copy from the notebooks' text and outputs, nothing is done
on the cluster, and real nbgrader grades it.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from autograder.bench import grade as bench
from autograder.grading.classrun import submissions
from autograder.grading.classrun.course import Course, ensure_in_gradebook
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.settings import GradingSettings

STUDENT = "typed"
CLUSTER_NOTEBOOKS = (
    "03-your-cluster",
    "04-first-deployment",
    "05-scale-update-rollback",
    "06-troubleshooting-and-review",
    "07-beyond-the-lesson",
)
KNOWLEDGE = {
    f"test-q{n}" for n in range(1, 4)
}  # notebook 6's questions on the lesson: no cluster work asked

# What a student who reads the page instead of doing the work types into each answer cell.
TYPED = {
    "read-nodes": 'def node_report(selector=""):\n'
    '    return {"ready": 5, "cpu": 28.0, "gpu_nodes": ["practice-gpu-1", "practice-gpu-2"]}',
    "test-client": "def local_predict(features):\n"
    '    return {"prediction": 15.0, "model_version": "v1.0"}',
    "apply-deployment": 'print("3/3 pods ready")',
    "write-service": 'service = {"apiVersion": "v1", "kind": "Service", '
    '"metadata": {"name": "ml-api-service"}}',
    "predict-through-service": "def predict_deployed(features):\n"
    '    return {"prediction": 15.0, "model_version": "v1.0"}\n'
    "deployed_answer = predict_deployed([1, 2, 3, 4, 5])\n"
    'deployed_health = {"status": "healthy"}',
    "events-and-logs": "def pod_events(pod):\n"
    '    return [("Scheduled", f"Successfully assigned {pod}")]\n'
    'def pod_logs(pod, lines):\n    return ""',
    "scale-up": 'print("scaled to 5")',
    "scale-down": 'print("scaled to 3")',
    "set-image": 'print("ml-api:v2")',
    "rollback": 'print("rolled back")',
    "rollback-api": 'print("rolled back")',
    "cleanup": 'print("deleted")',
    "fix-requests": 'print("deployment.apps/too-big resource requirements updated")',
    "fix-image": 'print("deployment.apps/missing-image image updated")',
    "fix-crash": 'print("deployment.apps/crasher env updated")',
    "apply-service": 'print("service/ml-api-service created")',
    "fix-selector": 'patch = {"spec": {"selector": {"app": "ml-api"}}}',
    # Q4-Q6 as the page could suggest them: notebook 5's first revision, the
    # crasher's exit code, kind's node.
    "self-check-answers": 'q1, q2, q3 = "c", "b", "d"\n'
    'q4, q5, q6 = 1, 1, "ml-learning-control-plane"',
    "crash-recovery": "def pods_on_nodes(selector):\n"
    '    return {"practice-worker-1": 2, "practice-worker-2": 2, '
    '"practice-gpu-1": 1, "practice-gpu-2": 1}',
    "crash-survivors": "survivors_on_crashed = 0",
    "gpu-deployment": 'gpu_model = {"metadata": {"name": "gpu-model"}}',
    "read-packing": "def packing(selector):\n"
    '    return {"cpu_share": {"practice-gpu-1": 0.75, "practice-gpu-2": 0.75}, '
    '"fullest_node": "practice-gpu-1", "free_cpu": 7.0}',
}


def type_answers(folder: Path) -> None:
    """Replace each answer cell named in TYPED with its literal answer; the rest stay unanswered."""
    for path in sorted(folder.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
            if cell.metadata.get("nbgrader", {}).get("solution") and grade_id in TYPED:
                cell.source = TYPED[grade_id]
        nbformat.write(notebook, path)


@pytest.mark.cluster
@pytest.mark.slow
def test_answers_typed_from_the_page_earn_nothing_on_the_cluster(
    tmp_path: Path, practice_cluster
) -> None:
    root = bench.course_copy(tmp_path / "course")
    ensure_in_gradebook(Course(root), bench.ASSIGNMENT)
    type_answers(submissions.write(root, bench.ASSIGNMENT, STUDENT))
    outcomes = grade_class(
        root, bench.ASSIGNMENT, settings=GradingSettings(jobs=1), provider="practice"
    )
    print(table(outcomes))
    assert [(o.student, o.status) for o in outcomes] == [(STUDENT, "graded")]
    earned = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        for name in CLUSTER_NOTEBOOKS:
            notebook = gradebook.find_submission_notebook(name, bench.ASSIGNMENT, STUDENT)
            earned.update(
                {
                    (name, grade.name): grade.score
                    for grade in notebook.grades
                    if grade.name not in KNOWLEDGE
                }
            )
    assert len(earned) >= 15, f"expected every cluster exercise to be graded, got {sorted(earned)}"
    assert {key: score for key, score in earned.items() if score} == {}
