"""The lesson on a real kind cluster, made from the node image built here offline."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Iterator

import docker
import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiException

import student_app
from autograder import MANIFESTS, REPO_ROOT, notebooks
from autograder.build import nodeimage, nodeparts
from autograder.course import actions
from autograder.grading import sandbox
from autograder.grading.classrun.kindimages import SubmissionImages
from autograder.lab import images as model_images
from autograder.lab import workloads as w
from autograder.lab.cluster import connect
from autograder.lab.traffic import port_forward
from autograder.lesson import fleet
from autograder.practice import catalog, dockerfile
from autograder.providers import kind as kind_module
from autograder.providers.kind import Kind
from autograder.shared import binaries, kubeconfig
from autograder.shared import k8s as shared_k8s
from autograder.shared.ports import wait_http
from autograder.shared.provider import ClusterError, Lab
from test_admission import hostile_specs, submit
from test_notebooks import record_time
from test_student_images import grade_own_apps

pytestmark = [pytest.mark.kind, pytest.mark.docker, pytest.mark.slow]

FEATURES = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def node_image() -> nodeimage.NodeImage:
    return nodeimage.build()


@pytest.fixture(scope="module")
def kind_cluster(node_image: nodeimage.NodeImage) -> Kind:
    """The lab's kind cluster, recreated when it runs another node image than the one just built."""
    kind = Kind()
    client = docker.from_env()
    try:
        stale = client.containers.get(kind.node).image.id != client.images.get(node_image.tag).id
    except docker.errors.NotFound:
        stale = False
    if stale:
        kind.down()
    kind.up()
    return kind


@pytest.fixture(scope="module")
def built_model_server_images() -> list[str]:
    for tag, version in (("ml-api:v1", "v1.0"), ("ml-api:v2", "v2.0")):
        model_images.build(tag, version=version, progress=False)
    return ["ml-api:v1", "ml-api:v2"]


@pytest.fixture
def model_server_images(kind_cluster: Kind, built_model_server_images: list[str]) -> list[str]:
    """The course's v1 and v2 on the nodes: loaded for each test (a kind load of what a node holds
    is a check), since grading on kind removes them."""
    lab = connect("kind")
    for tag in built_model_server_images:
        model_images.load_into_cluster(lab, tag)
    return built_model_server_images


@pytest.fixture
def kind_lab(kind_cluster: Kind, model_server_images: list[str]) -> Iterator[Lab]:
    lab = connect("kind", namespace=f"t-kind-{uuid.uuid4().hex[:6]}")
    yield lab
    lab.core.delete_namespace(lab.namespace)


def node_container(kind: Kind):
    return docker.from_env().containers.get(kind.node)


def answer_through_service(lab: Lab, image: str) -> dict:
    """/predict through `kubectl port-forward service/...` once only `image` pods serve.

    The lesson's Deployment has no readiness probe, so a pod counts as ready as soon as its
    container starts, a moment before Flask listens (and kubectl's port-forward quits on a
    refused connection); port-forward also picks one pod when it starts, so pods of the
    previous image must be gone first.
    """
    deadline = time.monotonic() + 120
    while True:
        pods = lab.core.list_namespaced_pod(lab.namespace, label_selector="app=ml-api").items
        if {pod.spec.containers[0].image for pod in pods} == {image} and all(
            flask_listens(lab, pod.metadata.name) for pod in pods
        ):
            break
        assert time.monotonic() < deadline, f"pods of {image} did not all serve within 120 s"
        time.sleep(1)
    with port_forward(lab) as forward:
        wait_http(f"{forward.url}/health", timeout=30)
        return forward.predict(FEATURES)


def flask_listens(lab: Lab, pod: str) -> bool:
    try:
        return "Running on" in lab.core.read_namespaced_pod_log(pod, lab.namespace)
    except ApiException:
        return False


def test_a_second_build_reuses_the_image(node_image: nodeimage.NodeImage) -> None:
    again = nodeimage.build()
    assert again.cached and again.tag == node_image.tag


def test_the_node_holds_exactly_what_kubeadm_pulls(kind_cluster: Kind) -> None:
    code, output = node_container(kind_cluster).exec_run(
        ["ctr", "--namespace=k8s.io", "images", "ls", "-q"]
    )
    assert code == 0
    assert set(nodeparts.KUBEADM_IMAGES) <= set(output.decode().split())


def test_kind_load_puts_the_model_server_in_the_node(
    kind_cluster: Kind, model_server_images: list[str]
) -> None:
    for tag in model_server_images:
        code, output = node_container(kind_cluster).exec_run(
            ["crictl", "inspecti", f"docker.io/library/{tag}"]
        )
        assert code == 0, output.decode()


def test_the_lesson_flow_runs_real_containers(kind_lab: Lab) -> None:
    w.apply(kind_lab, w.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml"))
    w.wait_for_rollout(kind_lab, "ml-api", timeout=240, progress=False)
    pods = kind_lab.core.list_namespaced_pod(kind_lab.namespace, label_selector="app=ml-api").items
    running = [pod for pod in pods if pod.status.phase == "Running"]
    assert len(running) == 3
    assert all(
        pod.status.container_statuses[0].container_id.startswith("containerd://") for pod in running
    )
    assert answer_through_service(kind_lab, "ml-api:v1") == {
        "prediction": 15.0,
        "model_version": "v1.0",
    }

    actions.scale(kind_lab, "ml-api", 5)
    w.wait_for_rollout(kind_lab, "ml-api", timeout=240, progress=False)
    actions.scale(kind_lab, "ml-api", 3)
    w.wait_for_rollout(kind_lab, "ml-api", timeout=240, progress=False)

    actions.set_image(kind_lab, "ml-api", "ml-api", "ml-api:v2")
    w.wait_for_rollout(kind_lab, "ml-api", timeout=240, progress=False)
    assert answer_through_service(kind_lab, "ml-api:v2")["model_version"] == "v2.0"

    actions.rollback(kind_lab, "ml-api")
    w.wait_for_rollout(kind_lab, "ml-api", timeout=240, progress=False)
    assert answer_through_service(kind_lab, "ml-api:v1")["model_version"] == "v1.0"


def test_a_node_that_is_not_ready_is_explained_with_its_logs(kind_cluster: Kind) -> None:
    node = node_container(kind_cluster)
    assert node.exec_run(["systemctl", "stop", "kubelet"]).exit_code == 0
    try:
        diagnosis = kind_cluster.node_diagnosis()
    finally:
        assert node.exec_run(["systemctl", "start", "kubelet"]).exit_code == 0
    assert diagnosis.startswith("kubelet")  # a one-line summary comes first
    assert "Last 30 lines from kubelet" in diagnosis
    assert "Last 30 lines from containerd" in diagnosis
    assert "Stopp" in diagnosis  # systemd's "Stopping/Stopped kubelet" line


def test_docker_down_is_reported_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    binaries.ensure(["kind"])  # so the reason given is Docker's, not a missing kind binary
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert "Docker daemon does not answer" in (Kind().unusable_reason() or "")
    with pytest.raises(nodeimage.NodeImageError, match="docker-engine start"):
        nodeimage.build()


def test_an_interrupted_build_tags_nothing(
    node_image: nodeimage.NodeImage, caplog: pytest.LogCaptureFixture
) -> None:
    client = docker.from_env()
    caplog.set_level(logging.INFO, logger="autograder.build")
    before = client.images.get(node_image.tag).id

    class Interrupt(logging.Handler):
        """Ctrl-C at the moment the build reports its check."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("node image check"):
                raise KeyboardInterrupt

    handler = Interrupt()
    logging.getLogger("autograder.build").addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            nodeimage.build(force=True)
    finally:
        logging.getLogger("autograder.build").removeHandler(handler)
    assert client.images.get(node_image.tag).id == before
    leftovers = [tag for image in client.images.list() for tag in image.tags if "staging-" in tag]
    assert leftovers == []
    assert client.containers.list(all=True, filters={"name": "k8s-ml-lab-preload-"}) == []


def test_a_half_created_cluster_is_recreated(kind_cluster: Kind) -> None:
    """The new nodes start empty: the tests after this one load the images they run."""
    node_container(kind_cluster).stop(timeout=10)
    kind_cluster.up()
    lab = connect("kind")
    assert len(lab.core.list_node().items) == kind_cluster.node_count


def test_a_node_that_never_gets_ready_is_deleted_and_explained(
    node_image: nodeimage.NodeImage, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = docker.from_env()
    broken = "k8s-ml-lab/kind-node:test-no-cni"
    context = io.BytesIO(
        f"FROM {node_image.tag}\nRUN rm /etc/cni/net.d/10-lab-ptp.conflist\n".encode()
    )
    client.images.build(fileobj=context, tag=broken, rm=True)
    monkeypatch.setenv("LAB_KIND_IMAGE", broken)
    monkeypatch.setattr(kind_module, "READY_WAIT", "15s")
    without_cni = Kind(cluster="lab-no-cni")
    try:
        with pytest.raises(ClusterError) as failure:
            without_cni.up()
        message = str(failure.value)
        assert "did not become Ready" in message and "the node says: " in message
        assert "kubelet's last error" in message and "cni" in message.lower()
        assert not without_cni.exists()
    finally:
        without_cni.down()
        client.images.remove(broken)


def test_two_workers_offer_a_gpu_each_and_their_pods_reach_each_other(kind_lab: Lab) -> None:
    nodes = {node.metadata.name: node for node in kind_lab.core.list_node().items}
    workers = sorted(
        name
        for name, node in nodes.items()
        if "node-role.kubernetes.io/control-plane" not in (node.metadata.labels or {})
    )
    assert len(nodes) == 3 and len(workers) == 2
    assert len({node.spec.pod_cidr for node in nodes.values()}) == 3, (
        "each node hands out its own pod range"
    )
    assert fleet.gpu_nodes(kind_lab) == workers
    for worker in workers:
        kind_lab.core.create_namespaced_pod(
            kind_lab.namespace,
            {
                "metadata": {"name": f"net-{worker}", "labels": {"app": "net-check"}},
                "spec": {
                    "nodeName": worker,
                    "containers": [
                        {
                            "name": "ml-api",
                            "image": "ml-api:v1",
                            "imagePullPolicy": "Never",
                            "readinessProbe": {
                                "httpGet": {"path": "/health", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        )
    fleet.wait_for_ready_pods(kind_lab, "app=net-check", 2, timeout=120)
    for pod in kind_lab.core.list_namespaced_pod(
        kind_lab.namespace, label_selector="app=net-check"
    ).items:
        home = nodes[pod.spec.node_name]
        assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(home.spec.pod_cidr)
        other = next(worker for worker in workers if worker != pod.spec.node_name)
        code, output = (
            docker.from_env()
            .containers.get(other)
            .exec_run(["curl", "-sS", "-m", "5", f"http://{pod.status.pod_ip}:8080/health"])
        )
        assert (code, output) == (0, b'{"status":"healthy"}\n'), (
            f"{other} -> {pod.metadata.name} on {home.metadata.name}"
        )


def test_a_grading_namespace_refuses_a_pod_that_would_own_its_node(
    kind_cluster: Kind, model_server_images: list[str], tmp_path
) -> None:
    """Pod Security and the grader's accounts kept out of the student's namespace, real kubelet."""
    admin = kubeconfig.api_client(kind_cluster.context)
    sandbox.ensure_node_access(admin)
    namespace = f"grade-privileged-{uuid.uuid4().hex[:6]}"
    box = sandbox.create(
        admin,
        namespace,
        course="kind-admission",
        assignment="x",
        student="hostile",
        workdir=tmp_path,
    )
    student = kubeconfig.api_client(config_file=box.student_kubeconfig)
    read = "cat /host/etc/kubernetes/admin.conf /host/etc/kubernetes/pki/ca.key; sleep 600"
    try:
        answers = submit(
            k8s.AppsV1Api(student),
            k8s.CoreV1Api(student),
            namespace,
            hostile_specs(kind_cluster.node, read),
        )
        nodes = docker.from_env().containers.list(
            filters={"label": f"io.x-k8s.kind.cluster={kind_cluster.cluster}"}
        )
        started = {
            node.name: node.exec_run(
                ["crictl", "ps", "-a", "-q", "--label", f"io.kubernetes.pod.namespace={namespace}"]
            ).output
            for node in nodes
        }
    finally:
        sandbox.delete(admin, namespace)
    assert answers == [
        "host-root refused by PodSecurity",
        "as-grader refused by no ServiceAccount",
        "everything refused by no ServiceAccount",
    ]
    assert started and set(started.values()) == {b""}, (
        f"containers of {namespace} ran on a node: {started}"
    )


# A laptop's path: the student's own Docker builds, `kind load`, the lab's namespace. Every master
# also runs on kind in the round trip below, graded (jailed kernels, the grader's builds); 01 and
# 02 need no cluster, and 06 and 07 build no image, so the round trip covers them.
AT_HOME_ON_KIND = ("03-your-cluster", "04-first-deployment", "05-scale-update-rollback")


@pytest.mark.parametrize("name", AT_HOME_ON_KIND)
def test_the_hands_on_masters_run_on_kind_at_home(
    name: str, model_server_images: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The solved masters of the hands-on steps as a student runs them on a laptop's kind."""
    monkeypatch.setenv("LAB_CLUSTER", "kind")
    namespace = f"nb-kind-{name[:2]}-{uuid.uuid4().hex[:6]}"
    lab = connect("kind", namespace=namespace)
    try:
        notebook, seconds = notebooks.execute(
            REPO_ROOT / "source" / "lesson01" / f"{name}.ipynb", namespace=namespace
        )
    finally:
        lab.core.delete_namespace(namespace)
    record_time(f"kind/{name}", seconds)
    assert notebooks.errors(notebook) == ()
    shown = "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )
    expected = {
        "04-first-deployment": ["{'model_version': 'v1.0', 'prediction': 15.0}", "PASS"],
        "05-scale-update-rollback": ["{'model_version': 'v2.0', 'prediction': 6.0}", "PASS"],
    }
    assert [text for text in expected.get(name, []) if text not in shown] == []


def node_image_id(kind: Kind, reference: str) -> str | None:
    """The image id a node's containerd gives `reference`, None when it holds no such image."""
    code, output = node_container(kind).exec_run(
        ["crictl", "inspecti", "-o", "go-template", "--template", "{{.status.id}}", reference]
    )
    return output.decode().strip() if code == 0 else None


def test_the_grader_builds_a_kernels_record_into_the_nodes_and_nothing_else(
    kind_cluster: Kind, model_server_images: list[str], tmp_path
) -> None:
    """What a graded kernel records is built by the grader, outside it; a failing Dockerfile is
    the student's error, and a record may not replace an image the nodes run for the cluster."""
    admin = kubeconfig.api_client(kind_cluster.context)
    core = k8s.CoreV1Api(admin)
    namespace = f"t-kindimg-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    folder = tmp_path / "ml-api"
    folder.mkdir()
    (folder / "app.py").write_text(student_app.app("direct"))
    (folder / "requirements.txt").write_text("flask\n")
    (folder / "Dockerfile").write_text(student_app.DOCKERFILE)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Dockerfile").write_text("FROM python:3.11-slim\nRUN exit 3\n")
    pause = nodeparts.PAUSE_IMAGE
    pause_before = node_image_id(kind_cluster, pause)
    course_v1 = node_image_id(kind_cluster, "docker.io/library/ml-api:v1")
    images = SubmissionImages(kind_cluster, admin)
    pushed = {
        tag: catalog.push(core, namespace, tag, source, {}, docker_builds=True)
        for tag, source in (("ml-api:v1", folder), ("ml-api:broken", broken), (pause, folder))
    }
    try:
        with images.serving(namespace):
            assert node_image_id(kind_cluster, "docker.io/library/ml-api:v2") is None, (
                "the course's own v2 left on the nodes"
            )
            assert catalog.wait_loaded(core, namespace, "ml-api:v1", pushed["ml-api:v1"], 180)
            with pytest.raises(dockerfile.BuildFailed, match="RUN exit 3"):
                catalog.wait_loaded(core, namespace, "ml-api:broken", pushed["ml-api:broken"], 180)
            with pytest.raises(dockerfile.BuildFailed, match="not an image name grading builds"):
                catalog.wait_loaded(core, namespace, pause, pushed[pause], 60)
        built_v1 = node_image_id(kind_cluster, "docker.io/library/ml-api:v1")
        assert built_v1 not in (None, course_v1), "the student's build is not the node's ml-api:v1"
        assert node_image_id(kind_cluster, pause) == pause_before
        # What the next submission could name to run this one's build: each name crictl lists.
        names = {
            name
            for node in kind_cluster.node_containers()
            for image in json.loads(node.exec_run(["crictl", "images", "-o", "json"]).output)[
                "images"
            ]
            if image["id"] == built_v1
            for name in [*(image.get("repoTags") or []), *(image.get("repoDigests") or [])]
        }
        assert any("@sha256:" in name for name in names), names
        images.clear()
        assert {name: node_image_id(kind_cluster, name) for name in names} == dict.fromkeys(names)
        left = {
            node.name: node.exec_run(["ctr", "--namespace=k8s.io", "images", "ls", "-q"]).output
            for node in kind_cluster.node_containers()
        }
        assert [node for node, listed in left.items() if built_v1.encode() in listed] == []
        assert all(pause.encode() in listed for listed in left.values())
        for index, name in enumerate(sorted(names)):
            core.create_namespaced_pod(
                namespace,
                {
                    "metadata": {"name": f"earlier-build-{index}", "labels": {"app": "earlier"}},
                    "spec": {
                        "containers": [{"name": "app", "image": name, "imagePullPolicy": "Never"}]
                    },
                },
            )
        assert waiting_reasons(core, namespace, "app=earlier", len(names)) == {"ErrImageNeverPull"}
    finally:
        core.delete_namespace(namespace)
        images.clear()


def waiting_reasons(core: k8s.CoreV1Api, namespace: str, selector: str, count: int) -> set[str]:
    """Why the containers of `count` pods behind `selector` wait, or 'running', once each has
    passed ContainerCreating."""

    def reasons(pods: list[k8s.V1Pod]) -> set[str] | None:
        states = [status.state for pod in pods for status in pod.status.container_statuses or []]
        said = {
            "running"
            if state.running
            else (state.waiting or state.terminated or k8s.V1ContainerStateWaiting()).reason
            for state in states
        }
        return said if len(states) == count and not said & {None, "ContainerCreating"} else None

    return shared_k8s.wait_for(
        core.list_namespaced_pod,
        namespace,
        label_selector=selector,
        until=reasons,
        timeout=120,
        what=f"the pods behind {selector} to start or say why not",
    )


def test_grading_on_kind_deploys_each_submissions_own_app_and_v2(
    tmp_path, model_server_images: list[str]
) -> None:
    """test_student_images's submissions on real containers; the course's own v1 and v2 are on
    the nodes when grading starts, and must serve none of them."""
    grade_own_apps(tmp_path, "kind")


def test_the_masters_earn_full_marks_and_the_release_none_on_kind(
    round_trip, kind_cluster: Kind
) -> None:
    round_trip("kind")
