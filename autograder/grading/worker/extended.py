"""A submission's share of the nodes is lent to its exclusive notebook only, and taken back.

Every grading namespace's lent quota holds each extended resource the nodes advertise at 0 and its
pods at a few, and an admission policy keeps each pod small while the quota is not lent
(sandbox.py), so outside the notebook that needs the GPUs and a fleet a submission holds no GPU and
little CPU or memory.
Exclusive notebooks run one submission at a time (nodes.exclusive): while the worker lends its
submission the GPUs and room for many pods of any size, no other submission can hold more than that
little. When the notebook ends the quota is back and every pod made under it is removed, so none
outlives it: what its Deployments make again is judged by the ordinary limits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client

from autograder.grading import sandbox
from autograder.shared.errors import LabError
from autograder.shared.waiting import CONVERGING_INTERVAL, poll


@contextmanager
def lent(
    api: client.ApiClient, namespace: str, grant: dict[str, str], timeout: float
) -> Iterator[None]:
    """The namespace's lent quota raised to `grant` (many pods of any size) while the block runs.

    Then it is back to the ordinary limits, and every pod made under it is gone.
    """
    core = client.CoreV1Api(api)
    _set_quota(core, namespace, sandbox.lent_quota(grant), timeout, lent=True)
    try:
        yield
    finally:
        hard = core.read_namespaced_resource_quota(sandbox.LENT_QUOTA, namespace).spec.hard or {}
        scarce = [key.removeprefix("requests.") for key in hard if key != "pods"]
        _set_quota(core, namespace, sandbox.unlent_quota(scarce), timeout, lent=False)
        _remove_lent_pods(core, namespace, scarce, timeout)


def _set_quota(
    core: client.CoreV1Api, namespace: str, hard: dict[str, str], timeout: float, *, lent: bool
) -> None:
    """Change the quota, wait until admission enforces it: it judges by status, not spec."""
    marker = {sandbox.LENT_ANNOTATION: "true" if lent else None}
    core.patch_namespaced_resource_quota(
        sandbox.LENT_QUOTA, namespace, {"metadata": {"annotations": marker}, "spec": {"hard": hard}}
    )
    quota = poll(
        lambda: core.read_namespaced_resource_quota(sandbox.LENT_QUOTA, namespace),
        sandbox.enforced,
        timeout,
        CONVERGING_INTERVAL,
    )
    if not sandbox.enforced(quota):
        raise LabError(
            f"the quota {sandbox.LENT_QUOTA} of {namespace} was not enforced within "
            f"{timeout:.0f} s: "
            "is kube-controller-manager running? (kubectl get pods -n kube-system)"
        )


def holds(pod: client.V1Pod, resources: list[str]) -> bool:
    """Whether a container of `pod` asks for one of `resources` (a limit alone asks as much)."""
    containers = [*(pod.spec.init_containers or []), *pod.spec.containers]
    return any(
        name in (getattr(container.resources, field) or {})
        for container in containers
        if container.resources
        for field in ("requests", "limits")
        for name in resources
    )


def _remove_lent_pods(
    core: client.CoreV1Api, namespace: str, scarce: list[str], timeout: float
) -> None:
    """Delete at once every pod the namespace runs as the lending ends (each may have been lent).

    Until none of them, nor any that holds one of the `scarce` resources, is left.
    """
    lent_pods = {pod.metadata.uid for pod in core.list_namespaced_pod(namespace).items}

    def remaining() -> list[client.V1Pod]:
        found = [
            pod
            for pod in core.list_namespaced_pod(namespace).items
            if pod.metadata.uid in lent_pods or holds(pod, scarce)
        ]
        for pod in found:
            try:
                core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
            except client.ApiException as error:
                if error.status != 404:
                    raise
        return found

    if poll(remaining, lambda found: not found, timeout, CONVERGING_INTERVAL):
        raise LabError(
            f"pods made while {namespace} was lent its quota were still there after {timeout:.0f} s"
        )
