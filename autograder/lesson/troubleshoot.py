"""The lesson's common issues, found the way `kubectl get pods`, `describe` and `logs` find them."""

from __future__ import annotations

import time

from kubernetes import client

from autograder.lab import images
from autograder.lab.cluster import Lab
from autograder.lesson.observe import pod_status

STUCK = {"CrashLoopBackOff", "CreateContainerConfigError", *images.PULL_REASONS}
WAITING_HINTS = {
    "CrashLoopBackOff": "the container starts and exits again and again: read its logs "
                        "(`kubectl logs POD --previous`) for the error",
    "CreateContainerConfigError": "the pod refers to a ConfigMap or Secret key that is missing",
}


def _last_logs(lab: Lab, pod: client.V1Pod, lines: int = 5) -> str:
    try:
        text = lab.core.read_namespaced_pod_log(pod.metadata.name, lab.namespace, previous=True,
                                                tail_lines=lines)
    except client.ApiException:
        return ""
    return " | ".join(line for line in (text or "").splitlines() if line.strip())


def _scheduling_failures(lab: Lab, pod: client.V1Pod) -> list[str]:
    found = lab.core.list_namespaced_event(
        lab.namespace, field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod.metadata.name}")
    return [e.message.strip() for e in found.items if e.reason == "FailedScheduling" and e.message]


def diagnose(lab: Lab, selector: str) -> list[str]:
    """Plain-words findings for the pods behind `selector`; an empty list means nothing is wrong."""
    findings = []
    pods = lab.core.list_namespaced_pod(lab.namespace, label_selector=selector).items
    if not pods:
        return [f"no pods match {selector}: is the Deployment applied, and does its label match?"]
    for pod in pods:
        name, status = pod.metadata.name, pod_status(pod)
        if not pod.spec.node_name:
            reasons = _scheduling_failures(lab, pod)
            if reasons:
                findings.append(f"pod {name} is Pending, not placed on any node; the scheduler says: "
                                f"{reasons[-1]} Lower its requests or add capacity.")
        elif status in WAITING_HINTS:
            logs = _last_logs(lab, pod)
            findings.append(f"pod {name} is {status}: {WAITING_HINTS[status]}"
                            + (f"; its last output: {logs}" if logs else ""))
    findings += images.image_problems(lab, selector)
    return findings


def _settled(lab: Lab, pod: client.V1Pod) -> bool:
    """Whether a pod has reached a state worth diagnosing: ready, stuck, or refused by the scheduler."""
    if not pod.spec.node_name:
        return bool(_scheduling_failures(lab, pod))
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return ready or pod_status(pod) in STUCK


def wait_until_settled(lab: Lab, selector: str, timeout: float = 60) -> None:
    """Give new pods time to be scheduled and started (or to fail) before diagnosing them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = lab.core.list_namespaced_pod(lab.namespace, label_selector=selector).items
        if pods and all(_settled(lab, pod) for pod in pods):
            return
        time.sleep(0.5)
