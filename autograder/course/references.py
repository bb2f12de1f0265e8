"""The hidden tests' own answers for notebook 7: what the cluster holds, read the grader's way."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from kubernetes import client
from kubernetes.utils import parse_quantity

from autograder.lab.workloads import live_pods
from autograder.shared.provider import Lab

GPU = "nvidia.com/gpu"


def pods_per_node(lab: Lab, selector: str) -> Counter[str]:
    """How many live pods behind `selector` each node runs."""
    return Counter(p.spec.node_name for p in live_pods(lab, selector) if p.spec.node_name)


@dataclass(frozen=True)
class NodeLoad:
    """How much of one node the scheduled pods have requested."""

    node: str
    cpu: float
    cpu_allocatable: float
    memory: float
    memory_allocatable: float
    gpus: int
    gpus_allocatable: int
    pods: tuple[str, ...]


def _requests(pod: client.V1Pod, resource: str) -> float:
    return float(
        sum(
            parse_quantity((c.resources.requests or {}).get(resource, "0"))
            for c in pod.spec.containers
            if c.resources
        )
    )


def node_loads(lab: Lab, selector: str = "") -> list[NodeLoad]:
    """Per node, the requests of this namespace's running pods against what the node can give."""
    placed: dict[str, list[client.V1Pod]] = {}
    for pod in live_pods(lab, selector):
        if pod.spec.node_name:
            placed.setdefault(pod.spec.node_name, []).append(pod)
    loads = []
    for node in sorted(lab.core.list_node().items, key=lambda n: n.metadata.name):
        mine = placed.get(node.metadata.name, [])
        allocatable = node.status.allocatable or {}
        loads.append(
            NodeLoad(
                node=node.metadata.name,
                cpu=sum(_requests(p, "cpu") for p in mine),
                cpu_allocatable=float(parse_quantity(allocatable.get("cpu", "0"))),
                memory=sum(_requests(p, "memory") for p in mine) / 2**30,
                memory_allocatable=float(parse_quantity(allocatable.get("memory", "0"))) / 2**30,
                gpus=int(sum(_requests(p, GPU) for p in mine)),
                gpus_allocatable=int(parse_quantity(allocatable.get(GPU, "0"))),
                pods=tuple(sorted(p.metadata.name for p in mine)),
            )
        )
    return loads
