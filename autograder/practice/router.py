"""The practice cluster's traffic router: the student's own app answers for each simulated pod.

kwok plays every kubelet. For a port-forward it dials whatever the PortForward object with the
pod's name and namespace names. The router keeps one local model-server process per image the
pods run (started from that image's app, with its MODEL_VERSION) and one PortForward per pod
pointing at the process for that pod's image (plus a Logs object, so `kubectl logs` shows that
server's output). New pods from `set image` or `rollout undo` get their own target, so an
answer always carries the version of the image the serving pod runs.

It runs as a background process (`python -m autograder.practice.router --context C`, started by
`supervise.ensure_router`) so a terminal's `kubectl port-forward` works too. It stops its model
servers when it stops, and it stops by itself once the cluster is gone.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from kubernetes import client, watch
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from autograder.errors import LabError
from autograder.lab import kubeconfig, ports
from autograder.lab.practice import kubeconfig_of
from autograder.practice.catalog import KWOK, MANAGED_BY, catalog, pod_images, safe_name, serving
from autograder.practice.supervise import router_pidfile, state_dir
from autograder.processes import stop

logger = logging.getLogger(__name__)

GONE_AFTER = 60.0

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to stop a model server when its router dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

def _write_cri_log(pipe: IO[bytes], stream: str, path: Path, lock: threading.Lock) -> None:
    """Copy a model server's output into `path` in the CRI log format kwok reads for `kubectl logs`."""
    with path.open("ab") as out:
        for line in pipe:
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with lock:
                out.write(f"{stamp} {stream} F ".encode() + line.rstrip(b"\n") + b"\n")
                out.flush()

@dataclass
class Backend:
    """One model-server process serving one image's app on a loopback port, logging to a file."""

    tag: str
    entry: dict
    port: int
    log_path: Path
    process: subprocess.Popen

    @classmethod
    def start(cls, tag: str, entry: dict, log_dir: Path) -> Backend:
        port = ports.free_port()
        log_path = log_dir / f"{safe_name(tag)}-{port}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "app.py", "run", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=entry["app"], env={**os.environ, **entry["env"], "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent)
        lock = threading.Lock()
        for pipe, stream in ((process.stdout, "stdout"), (process.stderr, "stderr")):
            threading.Thread(target=_write_cri_log, args=(pipe, stream, log_path, lock), daemon=True).start()
        backend = cls(tag=tag, entry=entry, port=port, log_path=log_path, process=process)
        try:
            ports.wait_http(f"http://127.0.0.1:{port}/health", 30, alive=lambda: process.poll() is None)
        except ports.NotAnswering:
            backend.stop()
            raise
        return backend

    def stop(self) -> None:
        stop(self.process, grace=10)
        self.log_path.unlink(missing_ok=True)

class Router:
    """Keeps model servers and PortForward objects in step with the pods of the cluster."""

    def __init__(self, context: str, log_dir: Path) -> None:
        self.context = context
        self.log_dir = log_dir
        self.backends: dict[str, Backend] = {}
        self.failed: dict[str, dict] = {}
        self.connect()

    def connect(self) -> None:
        """(Re)read the kubeconfig: a restarted or recreated cluster has a new port and new certs."""
        api = kubeconfig.api_client(self.context, kubeconfig_of(self.context))
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def reconcile(self) -> str:
        """One pass: start/stop model servers, create/replace PortForwards; returns the pods' version."""
        images = catalog(self.core)
        pods = self.core.list_pod_for_all_namespaces()
        running = [pod for pod in pods.items if serving(pod) and pod_images(pod) & images.keys()]
        for tag in {tag for pod in running for tag in pod_images(pod)} & images.keys():
            self._ensure_backend(tag, images[tag])
        for pod in running:
            forwards, logs = _routes(pod, self.backends)
            try:
                if forwards:
                    self._ensure_pod_object(pod, "PortForward", "portforwards", {"forwards": forwards})
                    self._ensure_pod_object(pod, "Logs", "logs", {"logs": logs})
            except client.ApiException as error:
                # A namespace being deleted refuses new objects (403); the pod goes with it.
                if error.status not in (403, 404, 409):
                    raise
        in_use = {tag for pod in running for tag in pod_images(pod)}
        for tag in [tag for tag in self.backends if tag not in in_use]:
            self.backends.pop(tag).stop()
        return pods.metadata.resource_version

    def _ensure_backend(self, tag: str, entry: dict) -> None:
        backend = self.backends.get(tag)
        if backend and backend.entry == entry and backend.process.poll() is None:
            return
        if self.failed.get(tag) == entry:
            return  # this app already failed to start; wait for a new load of the image
        if backend:
            self.backends.pop(tag).stop()
        try:
            self.backends[tag] = Backend.start(tag, entry, self.log_dir)
            self.failed.pop(tag, None)
        except (LabError, OSError) as error:
            self.failed[tag] = entry
            logger.warning("model server for %s did not start: %s", tag, error)

    def _ensure_pod_object(self, pod: client.V1Pod, kind: str, plural: str, spec: dict) -> None:
        """Create or update the kwok object (same name as the pod) that kwok reads for that pod."""
        name, namespace = pod.metadata.name, pod.metadata.namespace
        body = {
            "apiVersion": "/".join(KWOK), "kind": kind,
            "metadata": {"name": name, "namespace": namespace, "labels": MANAGED_BY,
                         # The garbage collector deletes it with its pod.
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": name,
                                              "uid": pod.metadata.uid}]},
            "spec": spec,
        }
        try:
            current = self.custom.get_namespaced_custom_object(*KWOK, namespace, plural, name)
        except client.ApiException as error:
            if error.status != 404:
                raise
            self.custom.create_namespaced_custom_object(*KWOK, namespace, plural, body)
            return
        if current.get("spec") != spec:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.custom.replace_namespaced_custom_object(*KWOK, namespace, plural, name, body)

    def close(self) -> None:
        for backend in self.backends.values():
            backend.stop()
        self.backends.clear()

def _routes(pod: client.V1Pod, backends: dict[str, Backend]) -> tuple[list[dict], list[dict]]:
    """kwok rules for one pod: each container's ports and logs lead to its image's model server."""
    forwards: list[dict] = []
    logs: list[dict] = []
    for container in pod.spec.containers:
        backend = backends.get(container.image)
        if backend is None:
            continue
        target = {"address": "127.0.0.1", "port": backend.port}
        declared = [port.container_port for port in container.ports or []]
        forwards.append({"ports": declared, "target": target} if declared else {"target": target})
        logs.append({"containers": [container.name], "logsFile": str(backend.log_path), "follow": True})
    return forwards, logs

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
                for _ in watch.Watch().stream(router.core.list_pod_for_all_namespaces,
                                              resource_version=version, timeout_seconds=2):
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
    parser = argparse.ArgumentParser(prog="python -m autograder.practice.router", description=__doc__)
    parser.add_argument("--context", required=True, help="the practice cluster's kubeconfig context")
    return serve(parser.parse_args(argv).context)


if __name__ == "__main__":
    sys.exit(main())
