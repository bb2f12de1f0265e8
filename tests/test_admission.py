"""What a submission's pods may take from the cluster, graded by `grade_class` on a real cluster.

Two hostile submissions from a trial: one whose early cell holds both GPU nodes with a Deployment
asking for `nvidia.com/gpu` and every CPU it can (pods of 3 CPUs, and a flood of pods as large as
a grading pod may be), graded beside a solved one whose exclusive notebook needs those GPUs and most
of the cluster's CPU for lesson01's fleet; and one that asks for a privileged pod with the node's
root, its namespaces and another identity (the grader's ServiceAccount). The first's GPU pods are
refused by the quota and its large ones by the pod-size policy (both lent to an exclusive notebook
only), its flood stops at the pod allowance; the second's by Pod Security and by the grader's
account living elsewhere. Each gets exactly the points its honest cells earn, and the solved one
keeps full marks.
"""

from __future__ import annotations

import inspect
import json
import threading
from pathlib import Path

import nbformat
import pytest
from kubernetes import client
from kubernetes.utils import parse_quantity
from nbformat.v4 import new_code_cell, new_notebook

import student_app
from autograder.grading import sandbox
from autograder.grading.classrun import submissions
from autograder.grading.classrun.course import Course
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.settings import GradingSettings
from autograder.grading.worker import extended
from autograder.lesson import fleet
from autograder.shared import kubeconfig
from test_grading import _meta, edit, new_course, replace_step

ASSIGNMENT = "scarce"
EARLY, GPUS = "early.ipynb", "gpus.ipynb"
SETUP = "\n".join(
    [  # the submission builds the ml-api:v1 it deploys: a graded namespace runs no other
        "from autograder.lab import connect, images, workloads",
        "from autograder.lesson.checks import *",
        "lab = connect()",
        student_app.write_folder("v1.0"),
        student_app.load("ml-api:v1"),
    ]
)
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
# Early in the notebook, the hog takes every GPU and every CPU it can, reports what it holds once
# its Deployments have made all the pods they may, and holds it until its neighbour is graded: the
# test puts the ConfigMap RELEASE in its namespace then (HOG_SECONDS at most, should that not come).
HOG_SECONDS = 90
RELEASE = "neighbour-graded"
HOG = f"""import time, yaml
from kubernetes.utils import parse_quantity
from autograder.lesson import manifests
hog = yaml.safe_load('''{GPU_MODEL}''')
hog["metadata"]["name"] = "hog"
cores = manifests.deployment("cores", replicas=7, requests={{"cpu": "3"}})
flood = manifests.deployment("flood", replicas=40, requests={{"cpu": "500m", "memory": "1Gi"}})
workloads.apply(lab, [hog, cores, flood])
time.sleep(20)
held = [c.resources.requests for pod in lab.core.list_namespaced_pod(lab.namespace).items
        if pod.spec.node_name for c in pod.spec.containers]
cpus = float(sum(parse_quantity(r['cpu']) for r in held))
gib = float(sum(parse_quantity(r['memory']) for r in held)) / 2**30
print(f"PROBE holds {{len(held)}} pods, {{cpus:g}} CPUs, {{gib:g}} GiB")
deadline = time.monotonic() + {HOG_SECONDS - 20}
while time.monotonic() < deadline and not lab.core.list_namespaced_config_map(
        lab.namespace, field_selector="metadata.name={RELEASE}").items:
    time.sleep(1)
answer = 42"""
# The solved one's exclusive notebook needs most of the cluster's CPU:
# lesson01's fleet, every pod placed.
FLEET = """from autograder.lesson import fleet, troubleshoot
workloads.apply(lab, fleet.fleet_manifests())
troubleshoot.wait_until_settled(lab, "lesson-part=bin-packing", timeout=60)"""
FLEET_PLACED = """placed = [pod.spec.node_name for pod in lab.core.list_namespaced_pod(
    lab.namespace, label_selector="lesson-part=bin-packing").items]
assert len(placed) == 21 and all(placed), (
    f"{placed.count(None)} of {len(placed)} fleet pods found no node")"""


def release_once_graded(
    admin: client.ApiClient,
    course: str,
    holder: str,
    graded: str,
    stop: threading.Event,
    released: list[str],
) -> None:
    """Put RELEASE in `holder`'s namespace once `graded`'s has come and gone: graded, it is done.

    `released` gets `holder` when its namespace was still there: it held until then.
    """
    core = client.CoreV1Api(admin)
    seen = False
    while not stop.wait(0.5):
        namespaces = {
            (ns.metadata.annotations or {}).get(sandbox.STUDENT_ANNOTATION): ns
            for ns in core.list_namespace(label_selector=sandbox.course_selector(course)).items
        }
        alive = graded in namespaces and namespaces[graded].metadata.deletion_timestamp is None
        seen = seen or alive
        if seen and not alive:
            if holder in namespaces:
                core.create_namespaced_config_map(
                    namespaces[holder].metadata.name, {"metadata": {"name": RELEASE}}
                )
                released.append(holder)
            return


def submit(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, specs: dict[str, dict]
) -> list[str]:
    """Create a Deployment of each pod spec; how the cluster answered: why its pods were refused."""
    import time

    answers = []
    for name, spec in specs.items():
        labels = {"app": name}
        apps.create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": spec},
                },
            },
        )
        for _ in range(300):
            pods = core.list_namespaced_pod(namespace, label_selector=f"app={name}").items
            failures = [
                condition.message
                for rs in apps.list_namespaced_replica_set(
                    namespace, label_selector=f"app={name}"
                ).items
                for condition in rs.status.conditions or []
                if condition.type == "ReplicaFailure"
            ]
            if pods or failures:
                break
            time.sleep(0.2)
        reason = (
            (
                "PodSecurity"
                if "violates PodSecurity" in failures[0]
                else "no ServiceAccount"
                if "serviceaccount" in failures[0]
                else failures[0]
            )
            if failures
            else ""
        )
        answers.append(
            f"{name} refused by {reason}" if failures else f"{name} made {len(pods)} pod(s)"
        )
    return answers


def privileged(specs: dict[str, dict]) -> str:
    """An answer cell that submits `specs` as the student and prints the cluster's answers."""
    return (
        "from __future__ import annotations\nfrom kubernetes import client\n"
        f"{inspect.getsource(submit)}\nfor line in submit(lab.apps, lab.core, lab.namespace, "
        f"{specs!r}):\n    print('PROBE', line)\nanswer = 42"
    )


def hostile_specs(node: str, command: str) -> dict[str, dict]:
    """Pod specs that would own a node: its root, namespaces, privilege, uid 0, the grader."""
    container = {
        "name": "root",
        "image": "ml-api:v1",
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", command],
        "securityContext": {
            "privileged": True,
            "runAsUser": 0,
            "capabilities": {"add": ["SYS_ADMIN"]},
        },
        "volumeMounts": [{"name": "host", "mountPath": "/host"}],
    }
    host = {
        "hostNetwork": True,
        "hostPID": True,
        "hostIPC": True,
        "nodeName": node,
        "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
        "containers": [container],
    }
    as_grader = {
        "serviceAccountName": "grader-reader",
        "automountServiceAccountToken": True,
        "containers": [{"name": "reader", "image": "ml-api:v1", "imagePullPolicy": "Never"}],
    }
    return {
        "host-root": host,
        "as-grader": as_grader,
        "everything": {
            **host,
            "serviceAccountName": "grader-reader",
            "automountServiceAccountToken": True,
        },
    }


def masters() -> dict[str, nbformat.NotebookNode]:
    """An early notebook with one answer, and an exclusive one needing both GPU nodes, most CPUs."""
    early = [
        new_code_cell(SETUP, metadata=_meta("setup", locked=True)),
        new_code_cell(
            "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
            metadata=_meta("answer", solution=True),
        ),
        new_code_cell(
            "assert answer == 42", metadata=_meta("test-answer", grade=True, locked=True, points=1)
        ),
    ]
    gpus = [
        new_code_cell(SETUP, metadata=_meta("setup-gpus", locked=True)),
        new_code_cell(
            f"### BEGIN SOLUTION\n{DEPLOY_GPUS}\n### END SOLUTION",
            metadata=_meta("gpu-deployment", solution=True),
        ),
        new_code_cell(
            'gpu = {"nvidia.com/gpu": "1"}\n'
            'eventually(deployment_ready, lab, "gpu-model", replicas=2, '
            "requests=gpu, limits=gpu, port=None).assert_passed()",
            metadata=_meta("test-gpu-deployment", grade=True, locked=True, points=2),
        ),
        new_code_cell(
            f"### BEGIN SOLUTION\n{FLEET}\n### END SOLUTION", metadata=_meta("fleet", solution=True)
        ),
        new_code_cell(
            FLEET_PLACED, metadata=_meta("test-fleet", grade=True, locked=True, points=2)
        ),
        new_code_cell(
            "!kubectl delete deployments -l app=gpu-model\n"
            "!kubectl delete deployments -l lesson-part=bin-packing",
            metadata=_meta("cleanup", locked=True),
        ),
    ]
    notebooks = {EARLY: new_notebook(cells=early), GPUS: new_notebook(cells=gpus)}
    for notebook in notebooks.values():
        notebook.metadata.kernelspec = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
    return notebooks


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory, practice_cluster) -> Path:
    """The two-notebook assignment, generated into a gradebook.

    Its GPU notebook is exclusive and lent two GPUs and the fleet's pods.
    """
    notebooks = masters()
    return new_course(
        tmp_path_factory.mktemp("course"),
        notebooks.pop(EARLY),
        ASSIGNMENT,
        EARLY,
        more=notebooks,
        settings=f'c.ClusterVerifiedExecute.exclusive_notebooks = ["{GPUS[:-6]}"]\n'
        'c.ClusterVerifiedExecute.exclusive_quota = {"requests.nvidia.com/gpu": "2"}\n',
    )


def _probes(course: Path, student: str) -> list[str]:
    path = course / "autograded" / student / ASSIGNMENT / EARLY
    cell = next(
        cell
        for cell in nbformat.read(path, as_version=4).cells
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "answer"
    )
    text = "".join(output.get("text", "") + output.get("evalue", "") for output in cell.outputs)
    return [
        line.removeprefix("PROBE ") for line in text.splitlines() if line.startswith("PROBE ")
    ] or [text]


@pytest.mark.cluster
@pytest.mark.slow
def test_a_gpu_hog_and_a_privileged_pod_cost_the_solved_submission_nothing(
    course: Path, practice_cluster
) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    core = client.CoreV1Api(admin)
    node = sorted(n.metadata.name for n in core.list_node().items)[0]
    early = {
        cell.metadata.nbgrader["grade_id"]
        for cell in nbformat.read(course / "source" / ASSIGNMENT / EARLY, as_version=4).cells
        if cell.metadata.nbgrader.get("solution")
    }
    for student, code in [
        ("hog", HOG),
        ("privileged", privileged(hostile_specs(node, "cat /host/etc/shadow"))),
    ]:
        submissions.write(course, ASSIGNMENT, student, early)  # the GPU notebook as released
        edit(course, student, replace_step("answer", code), assignment=ASSIGNMENT, notebook=EARLY)
    submissions.write(course, ASSIGNMENT, "solved", None)

    # The hog and the privileged one start together; the solved one takes the privileged one's
    # worker while the hog holds its Deployments, until the solved one is graded.
    stop, released = threading.Event(), []
    releaser = threading.Thread(
        target=release_once_graded,
        args=(admin, Course(course).key, "hog", "solved", stop, released),
    )
    releaser.start()
    try:
        outcomes = grade_class(
            course,
            ASSIGNMENT,
            ["hog", "privileged", "solved"],
            provider="practice",
            settings=GradingSettings(jobs=2, cell_timeout=HOG_SECONDS + 30, patience=8),
        )
    finally:
        stop.set()
        releaser.join()

    print(table(outcomes))
    assert {o.student: (o.status, o.score, o.max_score) for o in outcomes} == {
        "hog": ("graded", 1, 5),
        "privileged": ("graded", 1, 5),
        "solved": ("graded", 5, 5),
    }
    cap = {
        resource: float(parse_quantity(sandbox.POD_CAP[resource])) for resource in sandbox.COMPUTE
    }
    assert released == ["hog"], "the hog held its pods until the solved one was graded"
    allowance = int(sandbox.POD_ALLOWANCE)
    assert _probes(course, "hog") == [
        f"holds {allowance} pods, {allowance * cap['cpu']:g} CPUs, "
        f"{allowance * cap['memory'] / 2**30:g} GiB"
    ]
    assert _probes(course, "privileged") == [
        "host-root refused by PodSecurity",
        "as-grader refused by no ServiceAccount",
        "everything refused by no ServiceAccount",
    ]
    assert sandbox.leftovers(admin, Course(course).key) == []


@pytest.mark.cluster
def test_only_the_grader_lends_gpus_and_no_identity_does_more(
    practice_cluster, tmp_path: Path
) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    sandbox.ensure_node_access(admin)
    box = sandbox.create(
        admin, "grade-lending-test", course="lending", assignment="x", student="s", workdir=tmp_path
    )
    try:
        student, lender = (
            client.CoreV1Api(kubeconfig.api_client(config_file=path))
            for path in (box.student_kubeconfig, box.lender_kubeconfig)
        )
        quota = client.CoreV1Api(admin).read_namespaced_resource_quota(
            sandbox.LENT_QUOTA, box.namespace
        )
        assert quota.spec.hard == {"pods": sandbox.POD_ALLOWANCE, "requests.nvidia.com/gpu": "0"}
        refused = []
        for who, attempt in [
            (
                "student raises",
                lambda: student.patch_namespaced_resource_quota(
                    sandbox.LENT_QUOTA,
                    box.namespace,
                    {"spec": {"hard": {"requests.nvidia.com/gpu": "9"}}},
                ),
            ),
            (
                "student lends",
                lambda: student.patch_namespaced_resource_quota(
                    sandbox.LENT_QUOTA,
                    box.namespace,
                    {"metadata": {"annotations": {sandbox.LENT_ANNOTATION: "true"}}},
                ),
            ),
            (
                "lender lifts the pod quota",
                lambda: lender.patch_namespaced_resource_quota(
                    "grading", box.namespace, {"spec": {"hard": {"pods": "1000"}}}
                ),
            ),
            (
                "lender makes a pod",
                lambda: lender.create_namespaced_pod(
                    box.namespace,
                    {
                        "metadata": {"name": "p"},
                        "spec": {"containers": [{"name": "c", "image": "ml-api:v1"}]},
                    },
                ),
            ),
            ("lender reads secrets", lambda: lender.list_namespaced_secret(box.namespace)),
        ]:
            with pytest.raises(client.ApiException) as error:
                attempt()
            refused.append((who, error.value.status))
        assert refused == [(who, 403) for who, _ in refused]

        admit = client.CoreV1Api(admin)
        assert sizes(admit, box.namespace) == OUTSIDE
        with extended.lent(
            kubeconfig.api_client(config_file=box.lender_kubeconfig),
            box.namespace,
            {"requests.nvidia.com/gpu": "2"},
            timeout=30,
        ):
            lent = admit.read_namespaced_resource_quota(sandbox.LENT_QUOTA, box.namespace)
            assert lent.status.hard == {"pods": sandbox.LENT_PODS, "requests.nvidia.com/gpu": "2"}
            assert sizes(admit, box.namespace) == dict.fromkeys(OUTSIDE, "admitted")
            admit.create_namespaced_pod(
                box.namespace, pod_of({"cpu": "3", "memory": "4Gi"}, "kept-too-long")
            )
        back = admit.read_namespaced_resource_quota(sandbox.LENT_QUOTA, box.namespace)
        assert back.status.hard == {"pods": sandbox.POD_ALLOWANCE, "requests.nvidia.com/gpu": "0"}
        assert sizes(admit, box.namespace) == OUTSIDE
        assert admit.list_namespaced_pod(box.namespace).items == [], (
            "no pod made while lent outlives it"
        )
        labels = client.CoreV1Api(admin).read_namespace(box.namespace).metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        accounts = {
            a.metadata.name
            for a in client.CoreV1Api(admin).list_namespaced_service_account(box.namespace).items
        }
        assert accounts == {"default", "student"}, "the grader's accounts live in its own namespace"
    finally:
        sandbox.delete(admin, box.namespace)
    assert sandbox.leftovers(admin, "lending") == []


def pod_of(requests: dict[str, str], name: str = "size", containers: int = 1) -> dict:
    """A pod of `containers` containers, each asking for `requests`."""
    return {
        "metadata": {"name": name},
        "spec": {
            "containers": [
                {"name": f"c{n}", "image": "ml-api:v1", "resources": {"requests": requests}}
                for n in range(containers)
            ]
        },
    }


# Pods by what they ask, and how the API server answers them outside a lending: the
# lesson's pods pass (04's ml-api, 06's fitted too-big, and its 64-CPU demo that no node
# can hold), larger ones do not.
SIZES = {
    "lesson": ({"cpu": "100m", "memory": "128Mi"}, 1),
    "fitted": ({"cpu": "500m", "memory": "1Gi"}, 1),
    "demo": ({"cpu": "64", "memory": "512Gi"}, 1),
    "cores": ({"cpu": "3"}, 1),
    "memory": ({"memory": "8Gi"}, 1),
    "a-millicore-more": ({"cpu": "501m"}, 1),
    "two-halves": ({"cpu": "300m"}, 2),
}
OUTSIDE = {
    "lesson": "admitted",
    "fitted": "admitted",
    "demo": "admitted",
    "cores": "refused: asks 3 CPU and 128Mi",
    "memory": "refused: asks 0.1 CPU and 8192Mi",
    "a-millicore-more": "refused: asks 0.501 CPU and 128Mi",
    "two-halves": "refused: asks 0.6 CPU and 256Mi",
}


def sizes(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    """How the API server answers each of SIZES (a dry run): admitted, or what the refusal asks."""
    answers = {}
    for name, (requests, containers) in SIZES.items():
        try:
            core.create_namespaced_pod(namespace, pod_of(requests, name, containers), dry_run="All")
            answers[name] = "admitted"
        except client.ApiException as error:
            message = json.loads(error.body)["message"]
            cap = (
                f"may ask for at most {sandbox.POD_CAP['cpu']} CPU and {sandbox.POD_CAP['memory']}"
            )
            assert cap in message, message
            answers[name] = (
                "refused: " + message[message.index("this one asks") + 9 : message.index(": lower")]
            )
    return answers


@pytest.mark.cluster
def test_outside_the_exclusive_notebook_a_submission_leaves_the_fleet_its_room(
    practice_cluster,
) -> None:
    nodes = client.CoreV1Api(kubeconfig.api_client(practice_cluster.context)).list_node().items
    total = {
        resource: sum(float(parse_quantity(node.status.allocatable[resource])) for node in nodes)
        for resource in sandbox.COMPUTE
    }
    held = {
        resource: int(sandbox.POD_ALLOWANCE) * float(parse_quantity(sandbox.POD_CAP[resource]))
        for resource in sandbox.COMPUTE
    }
    cpu, memory = fleet.fleet_requests()
    print(
        f"outside notebook 07 a submission holds at most {sandbox.POD_ALLOWANCE} pods x "
        f"{sandbox.POD_CAP['cpu']} CPU / {sandbox.POD_CAP['memory']} = {held['cpu']:g} CPUs, "
        f"{held['memory'] / 2**30:g} GiB of the cluster's {total['cpu']:g} CPUs, "
        f"{total['memory'] / 2**30:g} GiB; "
        f"07's fleet asks {cpu:g} CPUs, {memory:g} GiB"
    )
    assert held["cpu"] + cpu <= total["cpu"] and held["memory"] + memory * 2**30 <= total["memory"]
    gpu_nodes = [
        float(parse_quantity(node.status.allocatable["cpu"]))
        for node in nodes
        if "nvidia.com/gpu" in node.status.allocatable
    ]
    assert held["cpu"] < min(gpu_nodes), (
        "the whole allowance on one GPU node leaves its GPU pod room"
    )


def test_a_pod_holds_an_extended_resource_by_a_request_or_a_limit_alone() -> None:
    def pod(resources: dict) -> client.V1Pod:
        requirements = client.V1ResourceRequirements(**resources)
        return client.V1Pod(
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", resources=requirements)])
        )

    assert extended.holds(pod({"limits": {"nvidia.com/gpu": "1"}}), ["nvidia.com/gpu"])
    assert extended.holds(pod({"requests": {"nvidia.com/gpu": "1"}}), ["nvidia.com/gpu"])
    assert not extended.holds(pod({"requests": {"cpu": "64"}}), ["nvidia.com/gpu"])
    nodes = [
        client.V1Node(status=client.V1NodeStatus(allocatable=allocatable))
        for allocatable in (
            {
                "cpu": "4",
                "memory": "16Gi",
                "pods": "110",
                "ephemeral-storage": "1Ti",
                "hugepages-2Mi": "0",
            },
            {"cpu": "8", "nvidia.com/gpu": "1", "example.com/fpga": "2"},
        )
    ]
    assert sandbox.extended_resources(nodes) == ["example.com/fpga", "nvidia.com/gpu"]
