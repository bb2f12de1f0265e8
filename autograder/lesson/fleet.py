"""Beyond the lesson on many nodes: a node failure, GPU placement and many models packed."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from kubernetes.utils import parse_quantity
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from autograder.lesson.manifests import deployment
from autograder.shared import k8s
from autograder.shared.provider import Lab

GPU = "nvidia.com/gpu"
CORDON_TAINT = "node.kubernetes.io/unschedulable"


def schedulable_nodes(lab: Lab) -> list[str]:
    """Nodes the scheduler may use: not cordoned and not tainted NoSchedule/NoExecute.

    The node controller mirrors a cordon as the taint node.kubernetes.io/unschedulable and
    lifts it a moment after an uncordon; spec.unschedulable is the truth, so that taint is skipped.
    """
    return sorted(
        n.metadata.name
        for n in lab.core.list_node().items
        if not n.spec.unschedulable
        and not any(
            t.effect in ("NoSchedule", "NoExecute") and t.key != CORDON_TAINT
            for t in n.spec.taints or []
        )
    )


@contextmanager
def node_failure(lab: Lab, node: str, selector: str) -> Iterator[list[str]]:
    """Take `node` out as a crash would for the pods behind `selector`, and put it back afterwards.

    A dead node stops reporting; the node controller taints it and, once the pods' tolerance
    (300 s by default) runs out, their pods are deleted. Here the node is cordoned and this
    namespace's pods on it are deleted at once, so other namespaces' pods are left alone.
    Yields the names of the pods that were lost.
    """
    others = [name for name in schedulable_nodes(lab) if name != node]
    if not others:
        raise ValueError(
            f"no other schedulable node to move the pods of {node} to: this needs a "
            "multi-node cluster such as the practice cluster"
        )
    lab.core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        lost = [
            p.metadata.name
            for p in lab.core.list_namespaced_pod(
                lab.namespace, label_selector=selector, field_selector=f"spec.nodeName={node}"
            ).items
        ]
        for name in lost:
            lab.core.delete_namespaced_pod(name, lab.namespace, grace_period_seconds=0)
        yield lost
    finally:
        lab.core.patch_node(node, {"spec": {"unschedulable": False}})


def wait_for_ready_pods(lab: Lab, selector: str, count: int, timeout: float = 60) -> float:
    """Block until `count` live, ready pods match `selector` (from pods, not a lagging status)."""
    started = time.monotonic()
    k8s.wait_for(
        lab.core.list_namespaced_pod,
        lab.namespace,
        label_selector=selector,
        until=lambda pods: sum(map(k8s.pod_ready, pods)) == count,
        timeout=timeout,
        what=f"{count} ready pods behind {selector}",
        seen=lambda pods: f"{sum(map(k8s.pod_ready, pods))} ready",
    )
    return time.monotonic() - started


def plot_pods_per_node(
    before: Mapping[str, int], after: Mapping[str, int], nodes: list[str], crashed: str
) -> Figure:
    """Pods per node before and after a node failure, side by side."""
    figure = Figure(figsize=(9, 3.8), layout="constrained")
    ax = figure.subplots()
    width = 0.4
    positions = range(len(nodes))
    ax.bar(
        [p - width / 2 for p in positions], [before.get(n, 0) for n in nodes], width, label="before"
    )
    ax.bar(
        [p + width / 2 for p in positions], [after.get(n, 0) for n in nodes], width, label="after"
    )
    ax.set_xticks(
        list(positions), [f"{n}\n(crashed)" if n == crashed else n for n in nodes], fontsize=8
    )
    ax.set_ylabel("ml-api pods")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    ax.set_title(f"{crashed} fails: its pods are recreated on the other nodes")
    return figure


def gpu_nodes(lab: Lab) -> list[str]:
    """Nodes that offer at least one nvidia.com/gpu."""
    return sorted(
        n.metadata.name
        for n in lab.core.list_node().items
        if parse_quantity((n.status.allocatable or {}).get(GPU, "0")) > 0
    )


def missing_features(lab: Lab) -> list[str]:
    """What notebook 7 needs that this cluster lacks, each with the way to get it."""
    missing = []
    if len(schedulable_nodes(lab)) < 2:
        missing.append("a second schedulable node, for the node failure (7.1)")
    if not gpu_nodes(lab):
        missing.append("nodes offering nvidia.com/gpu, for GPU scheduling (7.2)")
    return missing


@dataclass(frozen=True)
class Model:
    """One model to serve: how many replicas and what each replica requests."""

    name: str
    replicas: int
    cpu: str
    memory: str


MODEL_FLEET: tuple[Model, ...] = (
    Model("fraud-detector", 4, "500m", "1Gi"),
    Model("recommender", 3, "1", "4Gi"),
    Model("image-classifier", 2, "2", "6Gi"),
    Model("churn-model", 6, "250m", "512Mi"),
    Model("text-embedder", 2, "3", "12Gi"),
    Model("search-ranker", 4, "750m", "2Gi"),
)


def fleet_manifests(
    models: tuple[Model, ...] = MODEL_FLEET, part: str = "bin-packing"
) -> list[dict]:
    """One Deployment per model, requests equal to limits so each replica's share is fixed."""
    return [
        deployment(
            m.name,
            replicas=m.replicas,
            part=part,
            requests={"cpu": m.cpu, "memory": m.memory},
            limits={"cpu": m.cpu, "memory": m.memory},
        )
        for m in models
    ]


def fleet_requests(models: tuple[Model, ...] = MODEL_FLEET) -> tuple[float, float]:
    """Total CPU cores and GiB of memory the fleet asks for."""
    cpu = sum(float(parse_quantity(m.cpu)) * m.replicas for m in models)
    memory = sum(float(parse_quantity(m.memory)) * m.replicas for m in models) / 2**30
    return cpu, memory
