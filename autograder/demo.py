"""The lesson's hands-on steps 3 to 7 end to end, timed, for `make run` and the benchmark."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from autograder import MANIFESTS
from autograder.course import actions
from autograder.lab import workloads as w
from autograder.lab.cluster import connect
from autograder.shared.provider import Lab

DEPLOYMENT = "ml-api"


@dataclass(frozen=True)
class Step:
    """One row of the summary table."""

    name: str
    seconds: float
    result: str


def lesson_flow(lab: Lab, progress: bool = False) -> list[Step]:
    """Deploy, expose, scale 5 and back to 3, roll out v2, roll back: the lesson's steps by hand."""
    steps: list[Step] = []

    def timed(name: str, action: Callable[[], str]) -> None:
        started = time.monotonic()
        result = action()
        steps.append(Step(name, time.monotonic() - started, result))

    def deploy() -> str:
        w.apply(lab, w.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml"))
        w.wait_for_rollout(lab, DEPLOYMENT, progress=progress)
        return _ready(lab)

    def scale_to(replicas: int) -> Callable[[], str]:
        def action() -> str:
            actions.scale(lab, DEPLOYMENT, replicas)
            w.wait_for_rollout(lab, DEPLOYMENT, progress=progress)
            return _ready(lab)

        return action

    def update() -> str:
        actions.set_image(lab, DEPLOYMENT, "ml-api", "ml-api:v2")
        w.wait_for_rollout(lab, DEPLOYMENT, progress=progress)
        return _current(lab)

    def undo() -> str:
        actions.rollback(lab, DEPLOYMENT)
        w.wait_for_rollout(lab, DEPLOYMENT, progress=progress)
        return _current(lab)

    timed("apply deployment + service, 3/3 ready", deploy)
    timed("scale to 5", scale_to(5))
    timed("scale back to 3", scale_to(3))
    timed("rolling update to ml-api:v2", update)
    timed("rollout undo", undo)
    endpoints = lab.core.read_namespaced_endpoints("ml-api-service", lab.namespace)
    ready = sum(len(subset.addresses or []) for subset in endpoints.subsets or [])
    steps.append(Step("service endpoints", 0.0, f"{ready} ready pod addresses"))
    return steps


def _ready(lab: Lab) -> str:
    status = lab.apps.read_namespaced_deployment_status(DEPLOYMENT, lab.namespace).status
    return f"{status.ready_replicas or 0}/{status.replicas or 0} ready"


def _current(lab: Lab) -> str:
    revisions = w.history(lab, DEPLOYMENT)
    newest = revisions[-1]
    return f"revision {newest.number} runs {', '.join(newest.images)}"


def format_table(steps: list[Step]) -> str:
    """A plain-text table a terminal and a CI log both show well."""
    width = max(len(step.name) for step in steps)
    lines = [f"{'step':<{width}}  {'seconds':>7}  result", f"{'-' * width}  {'-' * 7}  {'-' * 30}"]
    lines += [f"{step.name:<{width}}  {step.seconds:>7.1f}  {step.result}" for step in steps]
    return "\n".join(lines)


def run_lesson_flow(provider: str | None = None) -> int:
    """`python -m autograder demo`: the flow in a throwaway namespace, then its summary table."""
    lab = connect(provider, namespace=f"demo-{int(time.time())}")
    print(f"Running the lesson flow on {lab}")
    try:
        steps = lesson_flow(lab, progress=sys.stderr.isatty())
        revisions = w.history(lab, DEPLOYMENT)
    finally:
        lab.core.delete_namespace(lab.namespace)
    print(format_table(steps))
    print("\nrollout history:")
    for revision in revisions:
        print(
            f"  revision {revision.number}: {', '.join(revision.images)} ({revision.replica_set})"
        )
    return 0
