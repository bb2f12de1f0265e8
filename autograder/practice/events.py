"""kubelet's events for pods, with its reasons and texts, counted as its recorder counts them."""

from __future__ import annotations

import hashlib

from kubernetes import client

from autograder.practice.clock import Clock


class EventRecorder:
    """kubelet's events for pods, repeats counted on one Event as the event recorder does."""

    def __init__(self, core: client.CoreV1Api, clock: Clock) -> None:
        self.core = core
        self.clock = clock
        self.seen: dict[tuple, tuple[str, int]] = {}

    def record(
        self, pod: client.V1Pod, reason: str, message: str, kind: str, container: str
    ) -> None:
        key = (pod.metadata.uid, reason, message)
        namespace, stamp = pod.metadata.namespace, self.clock.stamp()
        try:
            if key in self.seen:
                name, count = self.seen[key]
                self.core.patch_namespaced_event(
                    name, namespace, {"count": count + 1, "lastTimestamp": stamp}
                )
                self.seen[key] = (name, count + 1)
                return
            name = f"{pod.metadata.name}.{hashlib.sha1(repr(key).encode()).hexdigest()[:16]}"
            node = pod.spec.node_name or ""
            self.core.create_namespaced_event(
                namespace,
                {
                    "metadata": {"name": name, "namespace": namespace},
                    "involvedObject": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": pod.metadata.name,
                        "namespace": namespace,
                        "uid": pod.metadata.uid,
                        "fieldPath": f"spec.containers{{{container}}}",
                    },
                    "reason": reason,
                    "message": message,
                    "type": kind,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": "kubelet", "host": node},
                    "reportingComponent": "kubelet",
                    "reportingInstance": node,
                },
            )
            self.seen[key] = (name, 1)
        except client.ApiException as error:
            if error.status not in (403, 404, 409):  # a namespace being deleted refuses new events
                raise

    def forget(self, uid: str) -> None:
        self.seen = {key: value for key, value in self.seen.items() if key[0] != uid}
