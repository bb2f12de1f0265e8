"""A submission's extended resources (GPUs) are lent to its exclusive notebook only, and taken back after it.

Every grading namespace's quota holds each extended resource the nodes advertise at 0 (sandbox.py),
so outside the notebook that needs the GPUs a pod asking for one is refused. Exclusive notebooks run
one submission at a time (nodes.exclusive): while the worker lends its submission the GPUs, no other
submission can hold one. When the notebook ends the quota is 0 again and the pods still holding an
extended resource are removed, so none outlives it (its Deployment's new pods are refused by the quota).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import client

from autograder.errors import LabError
from autograder.grading.sandbox import EXTENDED_QUOTA, enforced
from autograder.waiting import CONVERGING_INTERVAL, poll


@contextmanager
def lent(api: client.ApiClient, namespace: str, grant: dict[str, str], timeout: float) -> Iterator[None]:
    """The namespace's extended-resource quota raised to `grant` while the block runs, then 0 and its holders gone."""
    core = client.CoreV1Api(api)
    _set_quota(core, namespace, grant, timeout)
    try:
        yield
    finally:
        hard = core.read_namespaced_resource_quota(EXTENDED_QUOTA, namespace).spec.hard or {}
        _set_quota(core, namespace, dict.fromkeys(hard, "0"), timeout)
        _remove_holders(core, namespace, [key.removeprefix("requests.") for key in hard], timeout)


def _set_quota(core: client.CoreV1Api, namespace: str, hard: dict[str, str], timeout: float) -> None:
    """Change the quota and wait until admission enforces it: it judges pods by the quota's status, not its spec."""
    core.patch_namespaced_resource_quota(EXTENDED_QUOTA, namespace, {"spec": {"hard": hard}})
    if not enforced(poll(lambda: core.read_namespaced_resource_quota(EXTENDED_QUOTA, namespace), enforced, timeout,
                         CONVERGING_INTERVAL)):
        raise LabError(f"the quota {EXTENDED_QUOTA} of {namespace} was not enforced within {timeout:.0f} s: "
                       "is kube-controller-manager running? (kubectl get pods -n kube-system)")


def holds(pod: client.V1Pod, resources: list[str]) -> bool:
    """Whether any container of `pod` asks for one of `resources` (a limit alone asks for as much)."""
    containers = [*(pod.spec.init_containers or []), *pod.spec.containers]
    return any(name in (getattr(container.resources, field) or {})
               for container in containers if container.resources
               for field in ("requests", "limits") for name in resources)


def _remove_holders(core: client.CoreV1Api, namespace: str, resources: list[str], timeout: float) -> None:
    """Delete at once every pod that holds one of `resources`, until none is left."""
    def remaining() -> list[client.V1Pod]:
        found = [pod for pod in core.list_namespaced_pod(namespace).items if holds(pod, resources)]
        for pod in found:
            try:
                core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
            except client.ApiException as error:
                if error.status != 404:
                    raise
        return found

    if resources and poll(remaining, lambda found: not found, timeout, CONVERGING_INTERVAL):
        raise LabError(f"pods holding {', '.join(resources)} in {namespace} were still there after {timeout:.0f} s")
