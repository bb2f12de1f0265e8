"""The practice cluster's pod runtime.

Each simulated pod's containers are real processes, reported as kubelet would.

kwok registers the nodes, keeps them alive and removes pods once their deletion is due; everything
kubelet does for a pod happens in this room. Per container (lifecycle.py): the image is looked up in
the pod's namespace, then the cluster's catalog (absent: ErrImagePull, then ImagePullBackOff with
back-off, or ErrImageNeverPull), the files of the image's WORKDIR are copied to a private folder and
started with its ENTRYPOINT and CMD as the pod's command and args override them, and with its ENV
and the pod's env (by the launcher), its output becomes CRI log files (logs.py: current and
previous, read by kwok for `kubectl logs [--previous]`), readiness and liveness probes (probes.py:
httpGet, tcpSocket, exec) run against it, an exit restarts it after kubelet's back-off (10 s
doubling to 5 min: Waiting CrashLoopBackOff, lastState.terminated) and a deletion sends SIGTERM,
then SIGKILL once the grace period is over. Here, the pod: its grace period and its status, written
through the pods/status subresource with kubelet's fields; events (events.py) carry kubelet's
reasons and texts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kubernetes import client

from autograder.practice.lifecycle import Container
from autograder.practice.node import Node

DEFAULT_GRACE = 30


class PodRuntime:
    """One pod on a simulated node: its containers, IP, events and status."""

    def __init__(self, pod: client.V1Pod, folder: Path, ip: str, node: Node) -> None:
        self.pod = pod
        self.node = node
        self.folder = folder
        self.ip = ip
        self.started_at = node.clock.stamp()
        folder.mkdir(parents=True, exist_ok=True)
        if node.isolates:
            os.chmod(folder, 0o711)
        self.containers = [Container(self, spec) for spec in pod.spec.containers]
        for one in self.containers:
            one.folder.mkdir(exist_ok=True)
            one.log.touch()
        self.last_status: dict | None = None

    name = property(lambda self: self.pod.metadata.name)
    namespace = property(lambda self: self.pod.metadata.namespace)
    uid = property(lambda self: self.pod.metadata.uid)
    restart_policy = property(lambda self: self.pod.spec.restart_policy or "Always")
    deleting = property(lambda self: self.pod.metadata.deletion_timestamp is not None)

    @property
    def grace(self) -> float:
        seconds = self.pod.metadata.deletion_grace_period_seconds
        if seconds is None:
            seconds = self.pod.spec.termination_grace_period_seconds
        return float(DEFAULT_GRACE if seconds is None else seconds)

    def event(self, reason: str, message: str, kind: str, container: str) -> None:
        self.node.events.record(self.pod, reason, message, kind, container)

    def sync(self, pod: client.V1Pod, images: Mapping[str, dict], now: float) -> None:
        if self.deleting is False and pod.metadata.deletion_timestamp is not None:
            for one in self.containers:
                if one.running():
                    self.event("Killing", f"Stopping container {one.name}", "Normal", one.name)
        self.pod = pod
        for one in self.containers:
            if self.deleting:
                one.stop(self.grace, now)
            one.sync(images, now)

    def finished(self) -> bool:
        """Deleted and every process gone: kubelet would now remove the pod for good."""
        return self.deleting and not any(one.process is not None for one in self.containers)

    def kill(self) -> None:
        """The pod vanished (forced deletion): its processes go at once."""
        for one in self.containers:
            one.kill()

    def status(self, host_ip: str) -> dict:
        """The pod's status as kubelet writes it: phase, conditions, IPs and containerStatuses."""
        statuses = [one.status() for one in self.containers]
        final = [one.terminated for one in self.containers if one.terminated]
        if len(final) == len(self.containers):
            phase = "Succeeded" if all(state["exitCode"] == 0 for state in final) else "Failed"
        elif any(one.starts for one in self.containers):
            phase = "Running"
        else:
            phase = "Pending"
        unready = [entry["name"] for entry in statuses if not entry["ready"]]
        ready = "False" if unready else "True"
        message = f"containers with unready status: [{' '.join(unready)}]" if unready else None
        reason = (
            "PodCompleted"
            if phase in ("Succeeded", "Failed")
            else ("ContainersNotReady" if unready else None)
        )
        conditions = {
            "PodReadyToStartContainers": ("True", None, None),
            "Initialized": ("True", None, None),
            "ContainersReady": (ready, reason, message),
            "Ready": (ready, reason, message),
        }
        previous = {c.type: c for c in self.pod.status.conditions or []} if self.pod.status else {}
        now = self.node.clock.stamp()
        entries = []
        for kind, (value, why, text) in conditions.items():
            old = previous.get(kind)
            since = (
                old.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ")
                if old and old.status == value and old.last_transition_time
                else now
            )
            entries.append(
                {
                    "type": kind,
                    "status": value,
                    "lastTransitionTime": since,
                    "lastProbeTime": None,
                    "reason": why,
                    "message": text,
                }
            )
        ip = host_ip if self.pod.spec.host_network else self.ip
        return {
            "phase": phase,
            "conditions": entries,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": self.started_at,
            "containerStatuses": statuses,
        }
