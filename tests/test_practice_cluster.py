"""The lesson's workload steps on the real practice control plane: no mocked Kubernetes."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from autograder import MANIFESTS
from autograder.bench.cluster import practice_rss_mib
from autograder.course import actions
from autograder.course.steps import serve_lesson_images
from autograder.lab import cluster
from autograder.lab import workloads as w
from autograder.practice.cluster import Practice
from autograder.providers import choice
from autograder.shared import kubeconfig
from autograder.shared.provider import Lab

pytestmark = pytest.mark.cluster

LESSON = (MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml")


@pytest.fixture(autouse=True, scope="module")
def lesson_images(practice_cluster: Practice) -> None:
    """ml-api:v1 and v2 on the nodes, whatever ran before: the runtime starts loaded images only."""
    serve_lesson_images(cluster.connect("practice"))


def deploy(lab: Lab) -> None:
    w.apply(lab, w.load_manifests(*LESSON))
    w.wait_for_rollout(lab, "ml-api", progress=False)


def ready_pods(lab: Lab) -> list[str]:
    pods = lab.core.list_namespaced_pod(lab.namespace, label_selector="app=ml-api").items
    return sorted(
        pod.metadata.name
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    )


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.25)


def test_three_replicas_become_ready_with_the_lessons_resources(lab: Lab) -> None:
    deploy(lab)
    deployment = lab.apps.read_namespaced_deployment("ml-api", lab.namespace)
    assert deployment.status.ready_replicas == 3
    assert len(ready_pods(lab)) == 3
    resources = deployment.spec.template.spec.containers[0].resources
    assert resources.requests == {"cpu": "100m", "memory": "128Mi"}
    assert resources.limits == {"cpu": "200m", "memory": "256Mi"}
    nodes = {pod.spec.node_name for pod in lab.core.list_namespaced_pod(lab.namespace).items}
    assert nodes and all(node.startswith("practice-") for node in nodes), (
        "the real scheduler placed them"
    )


def test_scale_to_five_and_back_to_three(lab: Lab) -> None:
    deploy(lab)
    actions.scale(lab, "ml-api", 5)
    w.wait_for_rollout(lab, "ml-api", progress=False)
    assert len(ready_pods(lab)) == 5
    actions.scale(lab, "ml-api", 3)
    w.wait_for_rollout(lab, "ml-api", progress=False)
    wait_until(lambda: len(lab.core.list_namespaced_pod(lab.namespace).items) == 3)
    assert len(ready_pods(lab)) == 3


def test_rolling_update_then_undo(lab: Lab) -> None:
    deploy(lab)
    actions.set_image(lab, "ml-api", "ml-api", "ml-api:v2")
    w.wait_for_rollout(lab, "ml-api", progress=False)
    revisions = w.history(lab, "ml-api")
    assert [(r.number, r.images) for r in revisions] == [(1, ("ml-api:v1",)), (2, ("ml-api:v2",))]
    assert revisions[0].replica_set != revisions[1].replica_set, "a new ReplicaSet carries v2"
    assert revisions[1].ready == 3 and revisions[0].ready == 0

    assert actions.rollback(lab, "ml-api") == 1
    w.wait_for_rollout(lab, "ml-api", progress=False)
    revisions = w.history(lab, "ml-api")
    assert [(r.number, r.images) for r in revisions] == [(2, ("ml-api:v2",)), (3, ("ml-api:v1",))]
    images = {
        pod.spec.containers[0].image
        for pod in lab.core.list_namespaced_pod(lab.namespace).items
        if pod.metadata.deletion_timestamp is None
    }
    assert images == {"ml-api:v1"}


def test_rollback_without_history_is_explained(lab: Lab) -> None:
    deploy(lab)
    with pytest.raises(ValueError, match="no earlier revision"):
        actions.rollback(lab, "ml-api")


def test_service_endpoints_list_the_ready_pods(lab: Lab) -> None:
    deploy(lab)
    pod_ips = {pod.status.pod_ip for pod in lab.core.list_namespaced_pod(lab.namespace).items}

    def endpoint_ips() -> set[str]:
        endpoints = lab.core.read_namespaced_endpoints("ml-api-service", lab.namespace)
        return {a.ip for s in endpoints.subsets or [] for a in s.addresses or []}

    wait_until(lambda: endpoint_ips() == pod_ips)
    endpoints = lab.core.read_namespaced_endpoints("ml-api-service", lab.namespace)
    assert {p.port for s in endpoints.subsets for p in s.ports} == {8080}
    assert (
        lab.core.read_namespaced_service("ml-api-service", lab.namespace).spec.ports[0].port == 80
    )


def test_a_deleted_pod_is_replaced(lab: Lab) -> None:
    deploy(lab)
    victim = ready_pods(lab)[0]
    lab.core.delete_namespaced_pod(victim, lab.namespace)
    wait_until(lambda: len(ready_pods(lab)) == 3 and victim not in ready_pods(lab))


def test_cleanup_by_label_removes_deployment_and_service(lab: Lab) -> None:
    deploy(lab)
    assert sorted(actions.delete_by_label(lab, "app=ml-api")) == [
        "deployment/ml-api",
        "service/ml-api-service",
    ]
    wait_until(lambda: not lab.core.list_namespaced_pod(lab.namespace).items)


def test_connect_reuses_the_current_practice_context(
    practice_cluster: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(choice.PROVIDER_ENV, raising=False)
    assert kubeconfig.current_context() == practice_cluster.context
    assert choice.choose().name == "practice"


def test_connect_points_plain_kubectl_at_the_labs_namespace(lab: Lab) -> None:
    """A notebook's `!kubectl get pods` after connect(): the lab's namespace, no --context or -n."""
    deploy(lab)
    assert kubectl_get_pods() == ready_pods(lab)
    user_file = Path(kubeconfig.default_file())
    before = user_file.read_bytes()
    other = cluster.connect("practice", namespace=f"{lab.namespace}-other")
    try:
        assert kubectl_get_pods() == [], "a connect() to another namespace moves kubectl there"
        again = cluster.connect("practice", namespace=lab.namespace)
        assert kubectl_get_pods() == ready_pods(lab)
        assert again.kubeconfig_file is not None and os.environ["KUBECONFIG"] == str(
            again.kubeconfig_file
        )
        assert user_file.read_bytes() == before, "the user's kubeconfig is never rewritten"
    finally:
        other.core.delete_namespace(other.namespace)


def kubectl_get_pods() -> list[str]:
    """What `kubectl get pods` lists, run as a notebook's `!` line runs it (this environment)."""
    done = subprocess.run(
        ["kubectl", "get", "pods", "-o", "name"], capture_output=True, text=True, check=True
    )
    return sorted(line.removeprefix("pod/") for line in done.stdout.split())


def test_practice_memory_is_measured(practice_cluster: Practice) -> None:
    assert practice_rss_mib(practice_cluster) > 50


def listeners(marker: str) -> dict[int, int]:
    """Port -> pid of the listening sockets of processes whose command line mentions `marker`."""
    pids = {
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if marker in " ".join(p.info["cmdline"] or [])
    }
    return {
        c.laddr.port: c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.pid in pids
    }


@pytest.mark.slow
def test_stale_cluster_is_restarted_and_down_leaves_nothing_behind(
    practice_cluster: Practice, caplog: pytest.LogCaptureFixture
) -> None:
    spare = Practice(cluster="lab-test-lifecycle", gpu_nodes=False, make_current=False)
    spare.down()
    spare.up()
    try:
        assert listeners(str(spare.workdir)), "the spare cluster's components listen on ports"
        spare.stop()
        assert not spare.answers()
        spare.up()
        assert spare.answers(), "a stopped cluster is detected and restarted"
        owned = listeners(str(spare.workdir))
    finally:
        spare.down()
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(spare.workdir) in " ".join(p.info["cmdline"] or [])
    ]
    # A freed port may be taken again at once by another program; none may still be the cluster's.
    still = {
        c.laddr.port: c.pid
        for c in psutil.net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in owned and c.pid in owned.values()
    }
    assert not still, f"ports still held by the deleted cluster's processes: {still}"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="autograder"):
        spare.down()
    assert caplog.messages == ["No practice cluster 'lab-test-lifecycle' to delete."]
