"""What a submission may change on the cluster's nodes, put back before the next submission grades.

The lesson lets a student cordon nodes (notebook 07 simulates a crash that way); a submission that
leaves one cordoned would cost the next student points. The node controller mirrors a cordon as
its own `node.kubernetes.io/*` taints and lifts them after the uncordon, so those taints are its to
restore, not the grader's.
"""

from __future__ import annotations

import fcntl
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kubernetes import client

from autograder.grading.names import LEDGER_DIR
from autograder.shared import k8s
from autograder.shared.errors import LabError
from autograder.shared.waiting import poll

logger = logging.getLogger(__name__)
CONTROLLER_TAINTS = "node.kubernetes.io/"
Snapshot = dict[str, dict]


def _state(node: client.V1Node) -> dict:
    """The fields of one node a submission could change."""
    meta, spec = node.metadata, node.spec
    return {
        "unschedulable": bool(spec.unschedulable),
        "taints": sorted(
            (
                {"key": t.key, "value": t.value, "effect": t.effect}
                for t in spec.taints or []
                if not t.key.startswith(CONTROLLER_TAINTS)
            ),
            key=json.dumps,
        ),
        "labels": dict(meta.labels or {}),
        "annotations": dict(meta.annotations or {}),
        "ownerReferences": [
            client.ApiClient().sanitize_for_serialization(r) for r in meta.owner_references or []
        ],
    }


def snapshot(admin: client.ApiClient) -> Snapshot:
    """Every node's changeable fields, by node name."""
    return {node.metadata.name: _state(node) for node in client.CoreV1Api(admin).list_node().items}


def restore_patch(before: dict, now: dict, controller_taints: list[dict]) -> list[dict]:
    """A JSON patch putting `before` back where `now` differs; the controller's taints are kept."""
    paths = {
        "unschedulable": "/spec/unschedulable",
        "taints": "/spec/taints",
        "labels": "/metadata/labels",
        "annotations": "/metadata/annotations",
        "ownerReferences": "/metadata/ownerReferences",
    }
    patch = []
    for field, path in paths.items():
        if before[field] != now[field]:
            value = [*before[field], *controller_taints] if field == "taints" else before[field]
            patch.append({"op": "add", "path": path, "value": value})
    return patch


def differing(nodes: list[client.V1Node], before: Snapshot) -> list[client.V1Node]:
    """The nodes whose changeable fields are not as in `before`."""
    return [
        node
        for node in nodes
        if node.metadata.name in before and _state(node) != before[node.metadata.name]
    ]


@contextmanager
def exclusive(
    lock: Path,
    list_nodes: Callable[[], list[client.V1Node]],
    before: Snapshot | None,
    timeout: float,
) -> Iterator[None]:
    """The lock around a notebook that changes nodes, taken once they are `before` (or timed out).

    A submission's node changes are undone by its clean-up, which takes this lock too: the lock is
    let go while the nodes differ, so one submission's cordons never meet another's notebook 07.
    """
    with open(lock, "w") as handle:

        def restored() -> bool:
            fcntl.flock(handle, fcntl.LOCK_EX)
            if before is None or not differing(list_nodes(), before):
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

        if not poll(restored, bool, timeout, interval=0.2):
            logger.warning(
                "nodes still differ from the run's start after %.0f s: the notebook runs anyway",
                timeout,
            )
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def restore(admin: client.ApiClient, before: Snapshot, timeout: float = 30) -> list[str]:
    """Put every node's fields back as in `before`, then check; returns the nodes that changed."""
    core = client.CoreV1Api(admin)
    changed: set[str] = set()

    def put_back(nodes: list[client.V1Node]) -> bool:
        """On every change of the nodes: patch back what differs; done once nothing does."""
        differing_now = differing(nodes, before)
        for node in differing_now:
            name = node.metadata.name
            logger.warning("node %s was changed by a submission: restoring it", name)
            core.patch_node(
                name, restore_patch(before[name], _state(node), _controller_taints(node))
            )
        changed.update(node.metadata.name for node in differing_now)
        return not differing_now

    try:
        k8s.wait_for(core.list_node, until=put_back, timeout=timeout, what="the nodes' restore")
    except k8s.WaitTimeout as error:
        raise LabError(f"nodes still differ from before the submission: {error}") from None
    return sorted(changed)


def _controller_taints(node: client.V1Node) -> list[dict]:
    return [
        client.ApiClient().sanitize_for_serialization(t)
        for t in node.spec.taints or []
        if t.key.startswith(CONTROLLER_TAINTS)
    ]


def lock_file(course_root: Path) -> Path:
    """The lock a run's workers hold around a notebook that changes nodes, and their restore."""
    return course_root / LEDGER_DIR / "cluster-exclusive.lock"


def saved_file(course_root: Path, assignment: str) -> Path:
    """Where a run keeps its starting point: read by its workers, and the next run if killed."""
    return course_root / LEDGER_DIR / f"{assignment}.nodes.json"


def save(path: Path, state: Snapshot) -> None:
    """Keep the run's starting point on disk: a run killed mid-submission is fixed by the next."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(path)


def load(path: Path) -> Snapshot | None:
    """The starting point an interrupted run left, if any."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None
