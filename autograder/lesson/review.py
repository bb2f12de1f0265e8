"""The review's own cluster story: a Deployment updated a few times and a pod that keeps crashing.

How many updates and which exit code are drawn afresh at every run (grading runs the notebook
again), so the answers exist only on the cluster: a student reads them there, and the grader
judges them against the cluster, never against a value written down beforehand.
"""

from __future__ import annotations

import random
import uuid

from kubernetes import client

from autograder.lab import workloads
from autograder.lesson.manifests import deployment
from autograder.shared import k8s
from autograder.shared.errors import LabError
from autograder.shared.provider import Lab

PART = "review"
UPDATED, CRASHING = "review-api", "review-crash"


def prepare(lab: Lab, draw: random.Random | None = None) -> None:
    """Deploy `review-api`, update it 1-3 times; start `review-crash`, exiting with 2 to 99.

    Each update is a revision once the controller has seen it, whether or not its pods start,
    so the live revision is the story's even where the image is missing (a graded namespace
    without the student's ml-api:v1): a guess of 1 never matches it.
    """
    draw = draw or random.SystemRandom()
    workloads.apply(lab, [deployment(UPDATED, replicas=2, part=PART)])
    _wait_observed(lab, UPDATED)
    for _ in range(draw.randint(1, 3)):
        # A change to the pod template, as `kubectl set env` or an edit would make: a new revision.
        change = {
            "spec": {"template": {"metadata": {"annotations": {"review/change": uuid.uuid4().hex}}}}
        }
        lab.apps.patch_namespaced_deployment(UPDATED, lab.namespace, change)
        _wait_observed(lab, UPDATED)
    code = draw.randint(2, 99)
    crash = [
        "python",
        "-c",
        f"import sys; print('cannot load the model, giving up'); sys.exit({code})",
    ]
    workloads.apply(lab, [deployment(CRASHING, command=crash, part=PART)])
    seen = k8s.wait_for(
        lab.core.list_namespaced_pod,
        lab.namespace,
        label_selector=f"app={CRASHING}",
        until=lambda pods: any(_restarted(pod) for pod in pods) or workloads.stuck_reason(pods),
        timeout=90,
        what=f"a restart of the {CRASHING} pod",
    )
    if isinstance(seen, str):  # the stuck reason, not a restart
        raise LabError(f"{CRASHING} cannot start, so it never crashes: {seen}")


def _wait_observed(lab: Lab, name: str) -> None:
    """Until the Deployment controller has acted on the latest spec (and recorded its revision)."""
    workloads.watch_deployment(
        lab,
        name,
        until=lambda found: (found.status.observed_generation or 0) >= found.metadata.generation,
        timeout=60,
    )


def _restarted(pod: client.V1Pod) -> bool:
    """Whether a container of the pod has ended at least once (its last state is recorded)."""
    return pod.metadata.deletion_timestamp is None and any(
        status.last_state and status.last_state.terminated
        for status in (pod.status.container_statuses or [])
    )
