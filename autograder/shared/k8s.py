"""The Kubernetes toolkit every room shares: readiness, selectors, revisions, apply, and waiting.

Waiting lists the objects once and then watches from that resourceVersion, re-judging the
wanted state on every event, under one deadline (as kr8s waits): nothing sleeps and re-reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from kubernetes import client, dynamic, watch
from urllib3.exceptions import HTTPError

from autograder.shared.errors import LabError

REVISION = "deployment.kubernetes.io/revision"
FIELD_MANAGER = "k8s-ml-lab"
T = TypeVar("T")


class WaitTimeout(LabError, TimeoutError):
    """What was waited for did not happen in time; the message says what was last seen."""


def condition_true(obj: Any, kind: str = "Ready") -> bool:
    """Whether a pod's or node's condition `kind` is True."""
    return any(c.type == kind and c.status == "True" for c in (obj.status.conditions or []))


def pod_ready(pod: client.V1Pod) -> bool:
    """A live pod whose Ready condition is True (a terminating pod no longer counts)."""
    return pod.metadata.deletion_timestamp is None and condition_true(pod)


# Waiting reasons kubelet keeps a container in until its pod's spec changes: waiting does not help.
STUCK_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
    }
)


def stuck(pod: client.V1Pod) -> str | None:
    """Why a live pod will not get Ready by waiting (no node fits, a container stuck), or None."""
    if pod.metadata.deletion_timestamp is not None:
        return None
    for condition in pod.status.conditions or []:
        if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
            return f"cannot be scheduled: {condition.message}"
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason in STUCK_REASONS:
            return f"is {waiting.reason}"
    return None


def selector(labels: Mapping[str, str] | None) -> str:
    """A label selector string for exactly these labels."""
    return ",".join(f"{key}={value}" for key, value in (labels or {}).items())


def revision(obj: Any) -> int:
    """The rollout revision a Deployment or ReplicaSet carries in its annotation (0 when none)."""
    return int((obj.metadata.annotations or {}).get(REVISION, 0))


def owned_replica_sets(
    apps: client.AppsV1Api, deployment: client.V1Deployment
) -> list[client.V1ReplicaSet]:
    """The ReplicaSets this Deployment owns (not just those its selector happens to match)."""
    found = apps.list_namespaced_replica_set(
        deployment.metadata.namespace,
        label_selector=selector(deployment.spec.selector.match_labels),
    )
    return [
        rs
        for rs in found.items
        if any(owner.uid == deployment.metadata.uid for owner in rs.metadata.owner_references or [])
    ]


_DYNAMIC: dict[int, dynamic.DynamicClient] = {}


def apply(api: client.ApiClient, documents: Iterable[dict], namespace: str) -> list[str]:
    """`kubectl apply --server-side` for any kind: the API server merges, this manager owns."""
    dyn = _DYNAMIC.setdefault(id(api), dynamic.DynamicClient(api))
    applied = []
    for doc in documents:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        target = namespace if resource.namespaced else None
        resource.server_side_apply(
            body=doc,
            name=doc["metadata"]["name"],
            namespace=target,
            field_manager=FIELD_MANAGER,
            force_conflicts=True,
        )
        applied.append(f"{doc['kind'].lower()}/{doc['metadata']['name']}")
    return applied


def wait_for(
    list_objects: Callable[..., Any],
    *args: Any,
    until: Callable[[list[Any]], T | None],
    timeout: float,
    what: str,
    seen: Callable[[list[Any]], str] | None = None,
    resync: float = 2,
    **kwargs: Any,
) -> T:
    """Watch the objects `list_objects(*args, **kwargs)` lists until `until(objects)` is truthy.

    Returns that truthy result.

    Every `resync` seconds the objects are listed afresh (as an informer resyncs), so an `until`
    that also reads other objects is asked again after their last change. `seen(objects)` describes
    the last state for the timeout's message.
    """
    deadline = time.monotonic() + timeout
    objects: dict[str, Any] = {}
    while True:
        listing = list_objects(*args, **kwargs)
        objects = {_key(obj): obj for obj in _items(listing)}
        if result := until(list(objects.values())):
            return result
        wait = min(resync, deadline - time.monotonic())
        seconds = max(1, int(wait))
        # The server ends the watch after whole `seconds`; the read timeout covers a server that
        # does not, and ends a sub-second resync's watch (a timed-out read lists again, below). At
        # the deadline `wait` reaches 0, which urllib3 refuses as a timeout: hence the floor.
        read = max(wait, 0.05) if wait < 1 else seconds + 10
        try:
            for event in watch.Watch().stream(
                list_objects,
                *args,
                resource_version=_version(listing),
                timeout_seconds=seconds,
                _request_timeout=(10, read),
                **kwargs,
            ):
                changed = event["object"]
                if event["type"] == "DELETED":
                    objects.pop(_key(changed), None)
                elif event["type"] in ("ADDED", "MODIFIED"):
                    objects[_key(changed)] = changed
                if result := until(list(objects.values())):
                    return result
                if time.monotonic() >= deadline:
                    break
        except client.ApiException as error:
            if error.status != 410:  # 410 Gone: the resourceVersion is too old; list again
                raise
        except (
            HTTPError
        ):  # the watch's connection stalled, broke or was read past its resync: list again
            pass
        if time.monotonic() >= deadline:
            state = seen(list(objects.values())) if seen else f"{len(objects)} object(s)"
            raise WaitTimeout(f"{what} did not happen within {timeout:.0f} s (last seen: {state})")


def _items(listing: Any) -> list[Any]:
    return listing["items"] if isinstance(listing, dict) else listing.items


def _version(listing: Any) -> str:
    return (
        listing["metadata"]["resourceVersion"]
        if isinstance(listing, dict)
        else listing.metadata.resource_version
    )


def _key(obj: Any) -> str:
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
    get = meta.get if isinstance(meta, dict) else lambda field: getattr(meta, field)
    return f"{get('namespace')}/{get('name')}"
