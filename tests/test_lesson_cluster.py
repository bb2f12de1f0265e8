"""The notebooks' cluster helpers against the real practice control plane."""

from __future__ import annotations

import random

import pytest

from autograder.course import actions, references
from autograder.lab import workloads
from autograder.lesson import fleet, manifests, observe, review, troubleshoot
from autograder.shared import k8s

pytestmark = pytest.mark.cluster


def test_nodes_table_lists_the_practice_nodes(lab):
    table = observe.nodes(lab)
    assert table.column("NAME") == [
        "practice-gpu-1",
        "practice-gpu-2",
        "practice-worker-1",
        "practice-worker-2",
        "practice-worker-3",
    ]
    assert table.column("GPU") == ["1", "1", "0", "0", "0"]
    assert observe.cluster_ready(lab).passed
    assert fleet.gpu_nodes(lab) == ["practice-gpu-1", "practice-gpu-2"]


def test_unschedulable_pod_is_explained_by_the_scheduler(lab):
    workloads.apply(lab, [manifests.deployment("too-big", requests={"cpu": "64"})])
    troubleshoot.wait_until_settled(lab, "app=too-big", timeout=30)
    findings = troubleshoot.diagnose(lab, "app=too-big")
    assert len(findings) == 1 and "Insufficient cpu" in findings[0] and "Pending" in findings[0]
    assert observe.pods(lab, "app=too-big").column("STATUS") == ["Pending"]


def test_missing_image_and_missing_pods_are_reported(lab):
    assert troubleshoot.diagnose(lab, "app=nothing") == [
        "no pods match app=nothing: is the Deployment applied, and does its label match?"
    ]
    workloads.apply(lab, [manifests.deployment("ghost", image="ml-api:never-built")])
    troubleshoot.wait_until_settled(lab, "app=ghost", timeout=30)
    assert any(
        "ml-api:never-built was never loaded" in f for f in troubleshoot.diagnose(lab, "app=ghost")
    )


def test_a_container_that_exits_after_starting_is_diagnosed_once_steady(lab):
    crash = ["python", "-c", "import sys; sys.exit('model file /models/model.pkl not found')"]
    workloads.apply(lab, [manifests.deployment("crasher", command=crash)])
    troubleshoot.wait_until_settled(lab, "app=crasher", timeout=60, steady=5)
    findings = troubleshoot.diagnose(lab, "app=crasher")
    assert len(findings) == 1 and "CrashLoopBackOff" in findings[0], findings
    # What the crashed run printed is the student's to read:
    # the diagnosis names the command, not the output.
    assert "kubectl logs crasher-" in findings[0] and "model.pkl" not in findings[0], findings


def test_gpu_pods_only_land_on_gpu_nodes(lab):
    workloads.apply(lab, [manifests.deployment("gpu", replicas=3, limits={"nvidia.com/gpu": "1"})])
    troubleshoot.wait_until_settled(lab, "app=gpu", timeout=30)
    placed = references.pods_per_node(lab, "app=gpu")
    assert sorted(placed.items()) == [("practice-gpu-1", 1), ("practice-gpu-2", 1)]
    assert any("Insufficient nvidia.com/gpu" in f for f in troubleshoot.diagnose(lab, "app=gpu"))


def test_node_failure_moves_pods_and_always_uncordons(lab):
    workloads.apply(lab, [manifests.deployment("spread", replicas=5)])
    fleet.wait_for_ready_pods(lab, "app=spread", 5)
    node = references.pods_per_node(lab, "app=spread").most_common(1)[0][0]
    with (
        pytest.raises(RuntimeError, match="boom"),
        fleet.node_failure(lab, node, "app=spread") as lost,
    ):
        assert lost and node not in fleet.schedulable_nodes(lab)
        fleet.wait_for_ready_pods(lab, "app=spread", 5)
        assert node not in references.pods_per_node(lab, "app=spread")
        raise RuntimeError("boom")
    assert node in fleet.schedulable_nodes(lab)


def test_watch_rollout_records_both_replica_sets(lab):
    workloads.apply(lab, [manifests.deployment("roll", replicas=3)])
    workloads.wait_for_rollout(lab, "roll", progress=False)
    lab.apps.patch_namespaced_deployment("roll", lab.namespace, {"spec": {"minReadySeconds": 1}})
    actions.set_image(lab, "roll", "roll", "ml-api:v2")
    timeline = observe.watch_rollout(lab, "roll", live=False)
    assert sorted(timeline.labels.values()) == ["revision 1: ml-api:v1", "revision 2: ml-api:v2"]
    final = {timeline.labels[name]: series[-1] for name, series in timeline.ready.items()}
    assert final == {"revision 1: ml-api:v1": 0, "revision 2: ml-api:v2": 3}
    assert len(timeline.seconds) > 3
    assert [r[1] for r in observe.rollout_history(lab, "roll").rows] == ["ml-api:v1", "ml-api:v2"]


def test_bin_packing_loads_add_up(lab):
    workloads.apply(lab, fleet.fleet_manifests())
    fleet.wait_for_ready_pods(lab, "lesson-part=bin-packing", 21, timeout=120)
    loads = references.node_loads(lab, "lesson-part=bin-packing")
    assert sum(load.cpu for load in loads) == pytest.approx(fleet.fleet_requests()[0])
    assert all(load.cpu <= load.cpu_allocatable for load in loads)
    assert observe.plot_bin_packing(lab, "lesson-part=bin-packing") is not None


def test_logs_failure_is_a_sentence(lab):
    text = observe.logs(lab, "no-such-pod")
    assert text.startswith("(the cluster could not return logs of no-such-pod: 404")


def test_the_practice_cluster_has_what_notebook_7_needs(lab):
    assert fleet.missing_features(lab) == []


@pytest.mark.cluster
def test_the_reviews_answers_are_drawn_each_run_and_read_off_the_cluster(lab) -> None:
    review.prepare(lab, random.Random(7))
    draw = random.Random(7)
    updates, code = draw.randint(1, 3), draw.randint(2, 99)
    assert (
        k8s.revision(lab.apps.read_namespaced_deployment("review-api", lab.namespace))
        == updates + 1
    )
    [pod] = lab.core.list_namespaced_pod(lab.namespace, label_selector="app=review-crash").items
    assert [status.last_state.terminated.exit_code for status in pod.status.container_statuses] == [
        code
    ]
    assert pod.spec.node_name
