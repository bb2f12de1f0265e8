"""The lesson's common issues, found the way `kubectl get pods`, `describe` and `logs` find them."""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime, timedelta, timezone

from kubernetes import client

from autograder.lab.workloads import live_pods
from autograder.lesson.observe import pod_status
from autograder.practice.catalog import loaded_images
from autograder.providers.choice import provider
from autograder.shared import k8s
from autograder.shared.provider import Lab

PULL_REASONS = {
    "ErrImageNeverPull": "the image is not in the cluster and imagePullPolicy is Never, so the "
    "kubelet will not fetch it: load it first (images.load_into_cluster or "
    "`kind load docker-image {image} --name ml-learning`)",
    "ErrImagePull": "the kubelet tried to pull {image} from a registry and failed: check the "
    "name and tag, or build and load the image and set imagePullPolicy: Never",
    "ImagePullBackOff": "pulling {image} failed and the kubelet is waiting before it retries: "
    "check the tag exists (`docker images`), load it into the cluster",
    "InvalidImageName": "{image} is not a valid image reference: fix the image: line",
}
BACK_OFF_RESET = timedelta(minutes=10)
WAITING_HINTS = {
    "CrashLoopBackOff": "the container starts and exits again and again: read its logs "
    "(`kubectl logs {pod} --previous`) for the error",
    "CreateContainerConfigError": "the pod refers to a ConfigMap or Secret key that is missing",
}


def _unschedulable(pod: client.V1Pod) -> str | None:
    """The scheduler's verdict on a pod it could not place, from its PodScheduled condition."""
    for condition in pod.status.conditions or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            return (condition.message or "").strip() or condition.reason
    return None


def _scheduling_failures(lab: Lab, pod: client.V1Pod) -> list[str]:
    """What the scheduler said of an unplaced pod: its events, else its condition (events lag)."""
    found = lab.core.list_namespaced_event(
        lab.namespace,
        field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod.metadata.name}",
    )
    said = [e.message.strip() for e in found.items if e.reason == "FailedScheduling" and e.message]
    verdict = _unschedulable(pod)
    return said or ([verdict] if verdict else [])


def _crash_looping(status: client.V1ContainerStatus) -> bool:
    """Whether a container is restarting after failures.

    Still unready, or failed within the kubelet's back-off reset (10 minutes), so a pod caught in
    the second its container runs again still counts.
    """
    last = status.last_state.terminated if status.last_state else None
    if not (status.restart_count and last and last.exit_code):
        return False
    return not status.ready or (
        last.finished_at is not None
        and datetime.now(timezone.utc) - last.finished_at < BACK_OFF_RESET
    )


def _status(pod: client.V1Pod) -> str:
    """kubectl's STATUS, except that a container restarting after a failure is crash-looping even in
    the moments between two restarts, when kubectl shows Running."""
    status = pod_status(pod)
    if status == "Running" and any(_crash_looping(s) for s in pod.status.container_statuses or []):
        return "CrashLoopBackOff"
    return status


def diagnose(lab: Lab, selector: str) -> list[str]:
    """Plain-words findings for the pods behind `selector`; an empty list means nothing is wrong."""
    findings = []
    pods = live_pods(lab, selector)
    if not pods:
        return [f"no pods match {selector}: is the Deployment applied, and does its label match?"]
    for pod in pods:
        name, status = pod.metadata.name, _status(pod)
        if not pod.spec.node_name:
            reasons = _scheduling_failures(lab, pod)
            if reasons:
                findings.append(
                    f"pod {name} is Pending, not placed on any node; the scheduler says: "
                    f"{reasons[-1]} Lower its requests or add capacity."
                )
        elif status in WAITING_HINTS:
            # What the crashed run printed is the student's to read (`kubectl logs`):
            # often the fix itself.
            findings.append(f"pod {name} is {status}: " + WAITING_HINTS[status].format(pod=name))
    findings += image_problems(lab, selector)
    return findings


def _ready_seconds(pod: client.V1Pod) -> float:
    """How long the pod has been Ready; 0 when it is not."""
    since = next(
        (
            c.last_transition_time
            for c in pod.status.conditions or []
            if c.type == "Ready" and c.status == "True"
        ),
        None,
    )
    return (datetime.now(timezone.utc) - since).total_seconds() if since else 0.0


def _settled(pod: client.V1Pod, steady: float = 0) -> bool:
    """Whether a pod is worth diagnosing: ready `steady` seconds, stuck, or refused a node."""
    if not pod.spec.node_name:
        return _unschedulable(pod) is not None
    return _status(pod) in k8s.STUCK_REASONS or (
        k8s.condition_true(pod) and _ready_seconds(pod) >= steady
    )


def wait_until_settled(lab: Lab, selector: str, timeout: float = 60, steady: float = 0) -> None:
    """Give new pods time to be scheduled and started (or fail), Ready ones `steady` s to crash."""
    with suppress(k8s.WaitTimeout):  # unsettled pods are diagnosed as they are
        k8s.wait_for(
            lab.core.list_namespaced_pod,
            lab.namespace,
            label_selector=selector,
            timeout=timeout,
            until=lambda pods: pods and all(_settled(pod, steady) for pod in pods),
            what=f"the pods behind {selector} settling",
        )


def image_problems(lab: Lab, selector: str = "app=ml-api") -> list[str]:
    """Plain-words reasons why pods matching `selector` cannot get their image."""
    problems = []
    loads_only = provider(lab.provider).loads_images_only
    known = loaded_images(lab) if loads_only else set()
    for pod in live_pods(lab, selector):
        reasons = {
            status.name: status.state.waiting.reason
            for status in pod.status.container_statuses or []
            if status.state and status.state.waiting and status.state.waiting.reason in PULL_REASONS
        }
        for container in pod.spec.containers:
            reason = reasons.get(container.name)
            if loads_only and container.image not in known:
                # Loading is the cure on practice, whatever the pull policy; a cluster made before
                # the pod runtime reports no pull at all, so the kubelet's reason is named for it.
                problems.append(
                    f"pod {pod.metadata.name}: {container.image} was never loaded into the cluster "
                    f"({reason or 'a real kubelet would report ErrImageNeverPull'}). "
                    + PULL_REASONS["ErrImageNeverPull"].format(image=container.image)
                )
            elif reason:
                problems.append(
                    f"pod {pod.metadata.name}: {reason}: "
                    + PULL_REASONS[reason].format(image=container.image)
                )
    return problems
