"""Around the lesson's kubectl steps: read manifests, apply objects, wait for rollouts, history."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import yaml
from kubernetes import client
from tqdm.auto import tqdm

from autograder.shared import k8s
from autograder.shared.errors import LabError
from autograder.shared.provider import Lab


class Namespaced(Protocol):
    """What reading a namespace's workloads takes: its name and an apps client (as a `Lab` has)."""

    namespace: str

    @property
    def apps(self) -> client.AppsV1Api: ...


class NamespacedPods(Namespaced, Protocol):
    """What reading its pods takes too: a core client (as a `Lab` has)."""

    @property
    def core(self) -> client.CoreV1Api: ...


# A new pod waiting for one of these reasons does not get past it by waiting: the image is not
# there, or the app exits at start.
STUCK_REASONS = frozenset(
    {
        "ErrImageNeverPull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
    }
)


class RolloutTimeout(LabError, TimeoutError):
    """A Deployment did not reach the wanted state in time; the message says what it is stuck on."""


class RolloutStuck(RolloutTimeout):
    """The rollout's new pods wait on what time does not fix; the message names the pod and why."""


class DeploymentMissing(LabError, LookupError):
    """A wait on a Deployment that is not in the namespace: nothing will ever roll it out."""


def load_manifests(*paths: Path | str) -> list[dict]:
    """Every YAML document in `paths`, in order, skipping empty ones."""
    return [doc for path in paths for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


def apply(lab: Lab, documents: Iterable[dict]) -> list[str]:
    """`kubectl apply --server-side -f`: every document, of any kind, into the lab's namespace."""
    return k8s.apply(lab.api, documents, lab.namespace)


def rollout_state(deployment: client.V1Deployment) -> tuple[bool, str]:
    """Whether a rollout is complete as `kubectl rollout status` judges it, no surplus left."""
    spec, status = deployment.spec, deployment.status
    want = spec.replicas if spec.replicas is not None else 1
    updated = status.updated_replicas or 0
    total = status.replicas or 0
    available = status.available_replicas or 0
    if (status.observed_generation or 0) < deployment.metadata.generation:
        return False, "waiting for the controller to see the new spec"
    if updated < want:
        return False, f"{updated} of {want} new replicas updated"
    if total > updated:
        return False, f"{total - updated} old replicas pending termination"
    if total > want:  # a scale-down: kubectl would already say done, but the surplus pods still run
        return False, f"{total - want} surplus replicas pending termination"
    if available < updated:
        return False, f"{available} of {updated} updated replicas available"
    return True, f"{available}/{want} replicas ready and up to date"


def wait_for_rollout(lab: Lab, name: str, timeout: float = 180, progress: bool = True) -> float:
    """Block until the Deployment's rollout is complete; returns the seconds it took."""
    started = time.monotonic()
    with tqdm(desc=f"rollout {name}", unit="ready", disable=not progress, leave=False) as bar:

        def complete(deployment: client.V1Deployment) -> bool:
            done, message = rollout_state(deployment)
            if not done:
                raise_if_stuck(lab, deployment)
            if bar.total != deployment.spec.replicas:  # a notebook's widget learns its length here
                bar.reset(total=deployment.spec.replicas)
            bar.n = deployment.status.ready_replicas or 0
            bar.set_postfix_str(message)
            return done

        try:
            watch_deployment(lab, name, complete, timeout)
        except k8s.WaitTimeout as error:
            raise RolloutTimeout(str(error)) from None
    return time.monotonic() - started


def raise_if_stuck(lab: Lab, deployment: client.V1Deployment) -> None:
    """End a wait at once when the rollout's new pods wait on what time does not fix."""
    if reason := stuck_reason(new_pods(lab, deployment)):
        raise RolloutStuck(
            f"the rollout of deployment/{deployment.metadata.name} cannot finish: {reason}; "
            "`kubectl describe pod` says more"
        )


def watch_deployment(
    lab: Lab,
    name: str,
    until: Callable[[client.V1Deployment], bool],
    timeout: float,
    resync: float = 2,
) -> None:
    """Watch deployment/`name` until `until(it)` holds; a timeout says how far its rollout got.

    A Deployment that is not there (or goes) ends the watch at once, as `kubectl rollout status`
    does, instead of waiting out the timeout for an apply that was never made.
    """

    def present(found: list[client.V1Deployment]) -> bool:
        if not found:
            raise DeploymentMissing(
                f"deployment/{name} is not in namespace {lab.namespace}: apply its manifest "
                "first (`kubectl get deployments` lists the ones there)"
            )
        return until(found[0])

    k8s.wait_for(
        lab.apps.list_namespaced_deployment,
        lab.namespace,
        field_selector=f"metadata.name={name}",
        until=present,
        timeout=timeout,
        what=f"the rollout of deployment/{name}",
        resync=resync,
        seen=lambda found: rollout_state(found[0])[1] if found else "no such Deployment",
    )


def live_pods(lab: Lab, selector: str) -> list[client.V1Pod]:
    """The pods behind `selector` not on their way out: a replaced pod's old trouble is over."""
    pods = lab.core.list_namespaced_pod(lab.namespace, label_selector=selector).items
    return [pod for pod in pods if pod.metadata.deletion_timestamp is None]


def new_pods(lab: NamespacedPods, deployment: client.V1Deployment) -> list[client.V1Pod]:
    """The pods of the Deployment's current revision: those its rollout waits for.

    None until the controller has seen the Deployment's latest spec: right after a `rollout
    undo` the newest ReplicaSet is still the one being left, and its pods are not the rollout's.
    """
    if (deployment.status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return []
    current = next(
        (
            replica_set
            for replica_set in k8s.owned_replica_sets(lab.apps, deployment)
            if k8s.revision(replica_set) == k8s.revision(deployment)
        ),
        None,
    )
    template = (current.metadata.labels or {}).get("pod-template-hash") if current else None
    if template is None:
        return []
    labels = {**(deployment.spec.selector.match_labels or {}), "pod-template-hash": template}
    return lab.core.list_namespaced_pod(lab.namespace, label_selector=k8s.selector(labels)).items


def stuck_reason(pods: list[client.V1Pod]) -> str | None:
    """The first of `pods` whose container waits for one of STUCK_REASONS, and why."""
    for pod in pods:
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting if status.state else None
            if waiting and waiting.reason in STUCK_REASONS:
                why = waiting.message or "no message"
                return f"pod {pod.metadata.name} is in {waiting.reason} ({why})"
    return None


@dataclass(frozen=True)
class Revision:
    """One line of `kubectl rollout history`: a ReplicaSet the Deployment has owned."""

    number: int
    replica_set: str
    images: tuple[str, ...]
    ready: int


def history(lab: Namespaced, name: str) -> list[Revision]:
    """The Deployment's revisions, oldest first, read from its ReplicaSets."""
    deployment = lab.apps.read_namespaced_deployment(name, lab.namespace)
    revisions = [
        Revision(
            number=k8s.revision(rs),
            replica_set=rs.metadata.name,
            images=tuple(c.image for c in rs.spec.template.spec.containers),
            ready=rs.status.ready_replicas or 0,
        )
        for rs in k8s.owned_replica_sets(lab.apps, deployment)
    ]
    return sorted(revisions, key=lambda revision: revision.number)
