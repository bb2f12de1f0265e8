"""What a submission's pods may take from the cluster, graded by `grade_class` on the real practice cluster.

Two hostile submissions from a trial: one whose early cell holds both GPU nodes with a Deployment
asking for `nvidia.com/gpu`, graded beside a solved one whose exclusive notebook needs those GPUs;
and one that asks for a privileged pod with the node's root, its namespaces and another identity
(the grader's ServiceAccount). The first's pods are refused by the quota (GPUs are lent to an
exclusive notebook only), the second's by Pod Security and by the grader's account living elsewhere;
each gets exactly the points its honest cells earn, and the solved one keeps full marks.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import nbformat
import pytest
from kubernetes import client
from nbformat.v4 import new_code_cell, new_notebook
from test_grading import _meta, edit, new_course, replace_step

from autograder.grading import extended, sandbox, submissions
from autograder.grading.course import Course
from autograder.grading.runner import grade_class, table
from autograder.grading.settings import GradingSettings
from autograder.lab import kubeconfig

ASSIGNMENT = "scarce"
EARLY, GPUS = "early.ipynb", "gpus.ipynb"
SETUP = "from autograder.lab import connect, workloads\nfrom autograder.lesson.checks import *\nlab = connect()"
GPU_MODEL = """apiVersion: apps/v1
kind: Deployment
metadata: {name: gpu-model, labels: {app: gpu-model}}
spec:
  replicas: 2
  selector: {matchLabels: {app: gpu-model}}
  template:
    metadata: {labels: {app: gpu-model}}
    spec:
      containers:
        - name: gpu-model
          image: ml-api:v1
          imagePullPolicy: Never
          resources: {requests: {nvidia.com/gpu: "1"}, limits: {nvidia.com/gpu: "1"}}
"""
DEPLOY_GPUS = f"""import yaml
workloads.apply(lab, [yaml.safe_load('''{GPU_MODEL}''')])
try:
    workloads.wait_for_rollout(lab, "gpu-model", timeout=20, progress=False)
except Exception as error:
    print("not rolled out:", error)"""
# Early in the notebook, the hog takes every GPU for longer than its neighbour needs them.
HOG_SECONDS = 90
HOG = f"""import time, yaml
hog = yaml.safe_load('''{GPU_MODEL}''')
hog["metadata"]["name"] = "hog"
workloads.apply(lab, [hog])
time.sleep({HOG_SECONDS})
answer = 42"""



def submit(apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, specs: dict[str, dict]) -> list[str]:
    """Create a Deployment of each pod spec; how the cluster answered each: why its pods were refused, or none were."""
    import time
    answers = []
    for name, spec in specs.items():
        labels = {"app": name}
        apps.create_namespaced_deployment(namespace, {"metadata": {"name": name}, "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec}}})
        for _ in range(300):
            pods = core.list_namespaced_pod(namespace, label_selector=f"app={name}").items
            failures = [condition.message for rs in apps.list_namespaced_replica_set(
                namespace, label_selector=f"app={name}").items for condition in rs.status.conditions or []
                if condition.type == "ReplicaFailure"]
            if pods or failures:
                break
            time.sleep(0.2)
        reason = ("PodSecurity" if "violates PodSecurity" in failures[0] else
                  "no ServiceAccount" if "serviceaccount" in failures[0] else failures[0]) if failures else ""
        answers.append(f"{name} refused by {reason}" if failures else f"{name} made {len(pods)} pod(s)")
    return answers


def privileged(specs: dict[str, dict]) -> str:
    """An answer cell that submits `specs` as the student and prints the cluster's answers."""
    return (f"from __future__ import annotations\nfrom kubernetes import client\n{inspect.getsource(submit)}\n"
            f"for line in submit(lab.apps, lab.core, lab.namespace, {specs!r}):\n    print('PROBE', line)\nanswer = 42")


def hostile_specs(node: str, command: str) -> dict[str, dict]:
    """Pod specs that would own a node: its root, its namespaces, privilege, root's uid, the grader's identity."""
    container = {"name": "root", "image": "ml-api:v1", "imagePullPolicy": "Never", "command": ["sh", "-c", command],
                 "securityContext": {"privileged": True, "runAsUser": 0, "capabilities": {"add": ["SYS_ADMIN"]}},
                 "volumeMounts": [{"name": "host", "mountPath": "/host"}]}
    host = {"hostNetwork": True, "hostPID": True, "hostIPC": True, "nodeName": node,
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}], "containers": [container]}
    as_grader = {"serviceAccountName": "grader-reader", "automountServiceAccountToken": True,
                 "containers": [{"name": "reader", "image": "ml-api:v1", "imagePullPolicy": "Never"}]}
    return {"host-root": host, "as-grader": as_grader,
            "everything": {**host, "serviceAccountName": "grader-reader", "automountServiceAccountToken": True}}


def masters() -> dict[str, nbformat.NotebookNode]:
    """An early notebook with one answer, and an exclusive one that needs both GPU nodes."""
    early = [new_code_cell(SETUP, metadata=_meta("setup", locked=True)),
             new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
                           metadata=_meta("answer", solution=True)),
             new_code_cell("assert answer == 42", metadata=_meta("test-answer", grade=True, locked=True, points=1))]
    gpus = [new_code_cell(SETUP, metadata=_meta("setup-gpus", locked=True)),
            new_code_cell(f"### BEGIN SOLUTION\n{DEPLOY_GPUS}\n### END SOLUTION",
                          metadata=_meta("gpu-deployment", solution=True)),
            new_code_cell('gpu = {"nvidia.com/gpu": "1"}\neventually(deployment_ready, lab, "gpu-model", replicas=2, '
                          'requests=gpu, limits=gpu, port=None).assert_passed()',
                          metadata=_meta("test-gpu-deployment", grade=True, locked=True, points=2)),
            new_code_cell('workloads.delete_by_label(lab, "app=gpu-model")', metadata=_meta("cleanup", locked=True))]
    notebooks = {EARLY: new_notebook(cells=early), GPUS: new_notebook(cells=gpus)}
    for notebook in notebooks.values():
        notebook.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return notebooks


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory, practice_cluster) -> Path:
    """The two-notebook assignment, its GPU notebook exclusive and lent two GPUs, generated into a gradebook."""
    notebooks = masters()
    return new_course(tmp_path_factory.mktemp("course"), notebooks.pop(EARLY), ASSIGNMENT, EARLY, more=notebooks,
                      settings=f'c.ClusterVerifiedExecute.exclusive_notebooks = ["{GPUS[:-6]}"]\n'
                               'c.ClusterVerifiedExecute.exclusive_quota = {"requests.nvidia.com/gpu": "2"}\n')


def _probes(course: Path, student: str) -> list[str]:
    path = course / "autograded" / student / ASSIGNMENT / EARLY
    cell = next(cell for cell in nbformat.read(path, as_version=4).cells
                if cell.metadata.get("nbgrader", {}).get("grade_id") == "answer")
    text = "".join(output.get("text", "") + output.get("evalue", "") for output in cell.outputs)
    return [line.removeprefix("PROBE ") for line in text.splitlines() if line.startswith("PROBE ")] or [text]


@pytest.mark.cluster
@pytest.mark.slow
def test_a_gpu_hog_and_a_privileged_pod_cost_the_solved_submission_nothing(course: Path, practice_cluster) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    core = client.CoreV1Api(admin)
    node = sorted(n.metadata.name for n in core.list_node().items)[0]
    early = {cell.metadata.nbgrader["grade_id"] for cell in nbformat.read(
        course / "source" / ASSIGNMENT / EARLY, as_version=4).cells if cell.metadata.nbgrader.get("solution")}
    for student, code in [("gpu-hog", HOG),
                          ("privileged", privileged(hostile_specs(node, "cat /host/etc/shadow")))]:
        submissions.write(course, ASSIGNMENT, student, early)  # the GPU notebook as released
        edit(course, student, replace_step("answer", code), assignment=ASSIGNMENT, notebook=EARLY)
    submissions.write(course, ASSIGNMENT, "solved", None)

    # The hog and the privileged one start together; the solved one takes the privileged one's worker
    # while the hog still holds its Deployment.
    outcomes = grade_class(course, ASSIGNMENT, ["gpu-hog", "privileged", "solved"], provider="practice",
                           settings=GradingSettings(jobs=2, cell_timeout=HOG_SECONDS + 30, patience=8))

    print(table(outcomes))
    assert {o.student: (o.status, o.score, o.max_score) for o in outcomes} == {
        "gpu-hog": ("graded", 1, 3), "privileged": ("graded", 1, 3), "solved": ("graded", 3, 3)}
    assert _probes(course, "privileged") == [
        "host-root refused by PodSecurity", "as-grader refused by no ServiceAccount",
        "everything refused by no ServiceAccount"]
    assert sandbox.leftovers(admin, Course(course).key) == []


@pytest.mark.cluster
def test_only_the_grader_lends_gpus_and_no_identity_does_more(practice_cluster, tmp_path: Path) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    sandbox.ensure_node_access(admin)
    box = sandbox.create(admin, "grade-lending-test", course="lending", assignment="x", student="s", workdir=tmp_path)
    try:
        student, lender = (client.CoreV1Api(kubeconfig.api_client(config_file=path))
                           for path in (box.student_kubeconfig, box.lender_kubeconfig))
        quota = client.CoreV1Api(admin).read_namespaced_resource_quota(sandbox.EXTENDED_QUOTA, box.namespace)
        assert quota.spec.hard == {"requests.nvidia.com/gpu": "0"}
        refused = []
        for who, attempt in [
            ("student raises", lambda: student.patch_namespaced_resource_quota(
                sandbox.EXTENDED_QUOTA, box.namespace, {"spec": {"hard": {"requests.nvidia.com/gpu": "9"}}})),
            ("lender lifts the pod quota", lambda: lender.patch_namespaced_resource_quota(
                "grading", box.namespace, {"spec": {"hard": {"pods": "1000"}}})),
            ("lender makes a pod", lambda: lender.create_namespaced_pod(box.namespace, {
                "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "ml-api:v1"}]}})),
            ("lender reads secrets", lambda: lender.list_namespaced_secret(box.namespace)),
        ]:
            with pytest.raises(client.ApiException) as error:
                attempt()
            refused.append((who, error.value.status))
        assert refused == [(who, 403) for who, _ in refused]

        with extended.lent(kubeconfig.api_client(config_file=box.lender_kubeconfig), box.namespace,
                           {"requests.nvidia.com/gpu": "2"}, timeout=30):
            lent = client.CoreV1Api(admin).read_namespaced_resource_quota(sandbox.EXTENDED_QUOTA, box.namespace)
            assert lent.status.hard == {"requests.nvidia.com/gpu": "2"}
        back = client.CoreV1Api(admin).read_namespaced_resource_quota(sandbox.EXTENDED_QUOTA, box.namespace)
        assert back.status.hard == {"requests.nvidia.com/gpu": "0"}
        labels = client.CoreV1Api(admin).read_namespace(box.namespace).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        accounts = {a.metadata.name for a in client.CoreV1Api(admin).list_namespaced_service_account(
            box.namespace).items}
        assert accounts == {"default", "student"}, "the grader's accounts live in its own namespace"
    finally:
        sandbox.delete(admin, box.namespace)
    assert sandbox.leftovers(admin, "lending") == []


def test_a_pod_holds_an_extended_resource_by_a_request_or_a_limit_alone() -> None:
    pod = lambda resources: client.V1Pod(spec=client.V1PodSpec(containers=[  # noqa: E731
        client.V1Container(name="c", resources=client.V1ResourceRequirements(**resources))]))
    assert extended.holds(pod({"limits": {"nvidia.com/gpu": "1"}}), ["nvidia.com/gpu"])
    assert extended.holds(pod({"requests": {"nvidia.com/gpu": "1"}}), ["nvidia.com/gpu"])
    assert not extended.holds(pod({"requests": {"cpu": "64"}}), ["nvidia.com/gpu"])
    nodes = [client.V1Node(status=client.V1NodeStatus(allocatable=allocatable)) for allocatable in (
        {"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "1Ti", "hugepages-2Mi": "0"},
        {"cpu": "8", "nvidia.com/gpu": "1", "example.com/fpga": "2"})]
    assert sandbox.extended_resources(nodes) == ["example.com/fpga", "nvidia.com/gpu"]
