"""The practice cluster's kubelet stand-in: runs every pod's containers (pod.py) and routes to them.

kwok registers the nodes and removes pods once their deletion is due; this daemon does the rest of
a kubelet's work for every pod bound to a node: processes, probes, restarts, termination, the pod's
status and events (see pod.py), plus the kwok objects that make `kubectl port-forward` and
`kubectl logs` reach them: one PortForward per pod pointing at its own process (or at a relay into
the process's network when the runtime isolates it) and one Logs object with the current and
previous log of each container.

It runs as a background process (`python -m autograder.practice.router --context C`, started by
`supervise.ensure_router` when the cluster comes up) so a terminal's kubectl works too. It stops its
containers when it stops, and it stops by itself once the cluster is gone. A cluster created before
the runtime still has kwok's own pod stages (kwok marks pods Ready): there it only routes.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import shutil
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from autograder.practice.catalog import KWOK, MANAGED_BY, ClusterImages, preload_reference_images
from autograder.practice.clock import Clock
from autograder.practice.cluster import kubeconfig_of, practice_of
from autograder.practice.events import EventRecorder
from autograder.practice.launcher import Launcher
from autograder.practice.network import Relay, free_ip
from autograder.practice.node import Node
from autograder.practice.pod import PodRuntime
from autograder.practice.supervise import router_pidfile, state_dir
from autograder.shared import kubeconfig
from autograder.shared.processes import stop

logger = logging.getLogger(__name__)

GONE_AFTER = 60.0
TICK_SECONDS = 1  # probes and back-offs are due on their own clock: look again at least this often


def kwok_sets_pod_status(context: str) -> bool:
    """Whether the cluster still runs kwok's default pod stages (made before this runtime)."""
    practice = practice_of(context)
    config = practice.workdir / "kwok.yaml" if practice else None
    return config is not None and config.is_file() and "name: pod-ready" in config.read_text()


class Router:
    """Keeps the containers, statuses and kwok routes of every pod in step with the cluster."""

    def __init__(self, context: str, state: Path, clock: Clock | None = None) -> None:
        self.context = context
        self.state = state
        self.legacy = kwok_sets_pod_status(context)
        self.pods: dict[str, PodRuntime] = {}
        self.relays: dict[tuple[str, str], Relay] = {}
        self.host_ips: dict[str, str] = {}
        self.published: dict[tuple[str, str], dict] = {}  # (pod uid, plural): the spec last written
        self.clock = clock or Clock()
        self.launcher = Launcher(state / "launcher")
        self.connect()
        preload_reference_images(self.core)

    def connect(self) -> None:
        """(Re)read the kubeconfig: a restarted or recreated cluster has new port and certs."""
        api = kubeconfig.api_client(self.context, kubeconfig_of(self.context))
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.node = Node(self.launcher, EventRecorder(self.core, self.clock), self.clock)
        for runtime in self.pods.values():
            runtime.node = self.node

    def reconcile(self) -> str:
        """One pass over every pod bound to a node; returns the list's resourceVersion to watch."""
        images = ClusterImages(self.core)
        pods = self.core.list_pod_for_all_namespaces()
        now = self.clock.monotonic()
        used_ips = {pod.status.pod_ip for pod in pods.items if pod.status and pod.status.pod_ip}
        present = set()
        for pod in pods.items:
            uid = pod.metadata.uid
            if not pod.spec.node_name or (
                uid not in self.pods and pod.status.phase in ("Succeeded", "Failed")
            ):
                continue
            present.add(uid)
            runtime = self.pods.get(uid)
            if runtime is None:
                ip = pod.status.pod_ip or free_ip(used_ips)
                runtime = self.pods[uid] = PodRuntime(pod, self.state / "pods" / uid, ip, self.node)
            runtime.sync(pod, images.of(pod.metadata.namespace), now)
            try:
                self._publish(runtime)
            except client.ApiException as error:
                # A namespace being deleted refuses new objects (403); a pod
                # gone meanwhile is 404/409.
                if error.status not in (403, 404, 409, 422):
                    raise
        for uid in set(self.pods) - present:
            self._forget(uid)
        return pods.metadata.resource_version

    def _publish(self, runtime: PodRuntime) -> None:
        """Write what the cluster sees of this pod: status, routes, logs; drop it once over."""
        if runtime.finished() and not self.legacy:
            self.core.delete_namespaced_pod(
                runtime.name,
                runtime.namespace,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=runtime.uid)
                ),
            )
            return
        forwards, logs = [], []
        for one in runtime.containers:
            if one.running():
                port = self._relay(runtime, one).port if self.node.isolates else one.port
                target = {"address": "127.0.0.1", "port": port}
                declared = [entry.container_port for entry in one.spec.ports or []]
                forwards.append(
                    {"ports": declared, "target": target} if declared else {"target": target}
                )
            logs.append(
                {
                    "containers": [one.name],
                    "logsFile": str(one.log),
                    "follow": True,
                    **(
                        {"previousLogsFile": str(one.previous_log)}
                        if one.previous_log.exists()
                        else {}
                    ),
                }
            )
        # Routes and logs first: once the status says Running or Ready, `kubectl logs` and
        # `kubectl port-forward` must find the pod's kwok objects.
        self._ensure_pod_object(runtime.pod, "Logs", "logs", {"logs": logs})
        if forwards:
            self._ensure_pod_object(
                runtime.pod, "PortForward", "portforwards", {"forwards": forwards}
            )
        if not self.legacy:
            status = runtime.status(self._host_ip(runtime.pod.spec.node_name))
            if status != runtime.last_status:
                self.core.patch_namespaced_pod_status(
                    runtime.name, runtime.namespace, {"status": status}
                )
                runtime.last_status = status

    def _relay(self, runtime: PodRuntime, one) -> Relay:
        key = (runtime.uid, one.name)
        if key not in self.relays:
            self.relays[key] = Relay(one)
        return self.relays[key]

    def _host_ip(self, node: str) -> str:
        """The node's InternalIP, as kubelet reports it in hostIP."""
        if node not in self.host_ips:
            addresses = self.core.read_node(node).status.addresses or []
            self.host_ips[node] = next(
                (a.address for a in addresses if a.type == "InternalIP"), "10.0.0.1"
            )
        return self.host_ips[node]

    def _forget(self, uid: str) -> None:
        """The pod is gone from the API: its processes, relays, events and files go too."""
        self.pods.pop(uid).kill()
        for key in [key for key in self.relays if key[0] == uid]:
            self.relays.pop(key).close()
        for key in [key for key in self.published if key[0] == uid]:
            del self.published[key]
        self.node.events.forget(uid)
        shutil.rmtree(self.state / "pods" / uid, ignore_errors=True)

    def _ensure_pod_object(self, pod: client.V1Pod, kind: str, plural: str, spec: dict) -> None:
        """Create or update the kwok object (same name as the pod) that kwok reads for that pod."""
        key = (pod.metadata.uid, plural)
        if (
            self.published.get(key) == spec
        ):  # only the router writes these: unchanged means nothing to do
            return
        name, namespace = pod.metadata.name, pod.metadata.namespace
        body: dict[str, Any] = {
            "apiVersion": "/".join(KWOK),
            "kind": kind,
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": MANAGED_BY,
                # The garbage collector deletes it with its pod.
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod.metadata.uid}
                ],
            },
            "spec": spec,
        }
        try:  # most are new: create first, read only when it exists (one request instead of two)
            self.custom.create_namespaced_custom_object(*KWOK, namespace, plural, body)
        except client.ApiException as error:
            if error.status != 409:
                raise
            current = self.custom.get_namespaced_custom_object(*KWOK, namespace, plural, name)
            if current.get("spec") != spec:
                body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                self.custom.replace_namespaced_custom_object(*KWOK, namespace, plural, name, body)
        self.published[key] = spec

    def close(self) -> None:
        """Stop every container (SIGTERM, then SIGKILL after 5 s), every relay and the launcher."""
        for runtime in self.pods.values():
            for one in runtime.containers:
                if one.process is not None:
                    one.signal_all(signal.SIGTERM)
                    stop(one.process.pid, grace=5)
                    one.signal_all(signal.SIGKILL)
        for relay in self.relays.values():
            relay.close()
        self.pods.clear()
        self.launcher.close()


def serve(context: str) -> int:
    """The router's main loop: reconcile after every pod change, exit when the cluster is gone."""
    directory = state_dir(context)
    lock = (directory / "router.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        logger.info("another router already serves this cluster")
        return 0
    router = Router(context, directory)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last_answer = time.monotonic()
    try:
        while time.monotonic() - last_answer < GONE_AFTER:
            try:
                version = router.reconcile()
                router_pidfile(context).write()
                last_answer = time.monotonic()
                for _ in watch.Watch().stream(
                    router.core.list_pod_for_all_namespaces,
                    resource_version=version,
                    timeout_seconds=TICK_SECONDS,
                ):
                    break
            except (client.ApiException, HTTPError, OSError, ConfigException) as error:
                logger.warning("cluster did not answer: %s", str(error)[:300])
                # No API server to watch: wait a moment before reconnecting (it may be restarting).
                time.sleep(1)
                with suppress(ConfigException, OSError):
                    router.connect()
        logger.info("cluster %s unreachable for %.0f s; stopping", context, GONE_AFTER)
        return 0
    finally:
        router.close()
        router_pidfile(context).remove()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    parser = argparse.ArgumentParser(
        prog="python -m autograder.practice.router", description=__doc__
    )
    parser.add_argument(
        "--context", required=True, help="the practice cluster's kubeconfig context"
    )
    return serve(parser.parse_args(argv).context)


if __name__ == "__main__":
    sys.exit(main())
