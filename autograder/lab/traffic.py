"""Traffic to simulated pods: `kubectl port-forward` on the practice cluster reaches the student's app.

kwok plays every kubelet. For a port-forward it dials whatever the PortForward object with the
pod's name and namespace names. The router keeps one local model-server process per image the
pods run (started from that image's app, with its MODEL_VERSION) and one PortForward per pod
pointing at the process for that pod's image (plus a Logs object, so `kubectl logs` shows that
server's output). New pods from `set image` or `rollout undo` get their own target, so an
answer always carries the version of the image the serving pod runs.

The router runs as a background process (`python -m autograder.lab.traffic --context C`) so a
terminal's `kubectl port-forward` works too. It stops its model servers when it stops, and it
stops by itself once the cluster is gone.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import requests
from kubernetes import client, watch
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError

from autograder.lab import binaries, kubeconfig, ports, probe
from autograder.lab.cluster import Lab
from autograder.lab.practice import Practice
from autograder.lab.provider import Log

CATALOG_NAMESPACE = "kube-system"
CATALOG_NAME = "lab-images"
CATALOG_KEY = "images.json"
KWOK = ("kwok.x-k8s.io", "v1alpha1")
MANAGED_BY = {"app.kubernetes.io/managed-by": "k8s-ml-lab-traffic"}
GONE_AFTER = 60.0
PR_SET_PDEATHSIG = 1
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


class ImageNotLoaded(RuntimeError):
    """Pods run an image the practice cluster never received; the message says how to load it."""


def state_dir(context: str) -> Path:
    """Where the router keeps its lock, pid and logs for one cluster context."""
    path = binaries.cache_root() / "traffic" / context
    path.mkdir(parents=True, exist_ok=True)
    return path


def kubeconfig_file(context: str) -> Path | None:
    """A practice cluster's own kubeconfig: right even when ~/.kube/config lacks or changes the context."""
    if not context.startswith("kwok-"):
        return None
    path = Practice(cluster=context.removeprefix("kwok-")).kubeconfig_file
    return path if path.is_file() else None


def safe_name(tag: str) -> str:
    """An image tag as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tag)


def snapshot_dir(tag: str, digest: str) -> Path:
    """Where one content of an image's app is kept: rebuilding v2 never changes what v1 serves."""
    return binaries.cache_root() / "practice-images" / safe_name(tag) / digest[:16]


def catalog(core: client.CoreV1Api) -> dict[str, dict]:
    """The images loaded into the practice cluster: tag -> {"app": folder, "env": {...}}."""
    try:
        config_map = core.read_namespaced_config_map(CATALOG_NAME, CATALOG_NAMESPACE)
    except client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return json.loads((config_map.data or {}).get(CATALOG_KEY, "{}"))


def _loaded_images(lab: Lab) -> set[str]:
    """Tags in the catalog; a namespace-scoped identity (a graded kernel) may not read it, and
    then every image counts as loaded: the router, which can, still serves only loaded ones."""
    try:
        return set(catalog(lab.core))
    except client.ApiException as error:
        if error.status != 403:
            raise
        return {image for pod in lab.core.list_namespaced_pod(lab.namespace).items for image in _images(pod)}


def register_image(lab: Lab, tag: str, app: Path, env: dict[str, str]) -> None:
    """Record that the cluster holds `tag` and which app and environment it serves."""
    entry = {"app": str(app), "env": env}
    for _ in range(10):
        try:
            current = lab.core.read_namespaced_config_map(CATALOG_NAME, CATALOG_NAMESPACE)
        except client.ApiException as error:
            if error.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=CATALOG_NAME, labels=MANAGED_BY),
                data={CATALOG_KEY: json.dumps({tag: entry})})
            try:
                lab.core.create_namespaced_config_map(CATALOG_NAMESPACE, body)
                return
            except client.ApiException as race:
                if race.status != 409:
                    raise
                continue
        images = json.loads((current.data or {}).get(CATALOG_KEY, "{}"))
        images[tag] = entry
        current.data = {CATALOG_KEY: json.dumps(images, sort_keys=True)}
        try:
            lab.core.replace_namespaced_config_map(CATALOG_NAME, CATALOG_NAMESPACE, current)
            return
        except client.ApiException as error:
            if error.status != 409:  # someone else changed it in between: read again
                raise
    raise RuntimeError(f"could not record {tag} in {CATALOG_NAMESPACE}/{CATALOG_NAME}: too many conflicts")


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
        except (RuntimeError, TimeoutError):
            backend.stop()
            raise
        return backend

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
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
        api = kubeconfig.api_client(self.context, kubeconfig_file(self.context))
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def reconcile(self) -> str:
        """One pass: start/stop model servers, create/replace PortForwards; returns the pods' version."""
        images = catalog(self.core)
        pods = self.core.list_pod_for_all_namespaces()
        serving = [pod for pod in pods.items if _serving(pod) and _images(pod) & images.keys()]
        for tag in {tag for pod in serving for tag in _images(pod)} & images.keys():
            self._ensure_backend(tag, images[tag])
        for pod in serving:
            forwards, logs = _routes(pod, self.backends)
            try:
                if forwards:
                    self._ensure_pod_object(pod, "PortForward", "portforwards", {"forwards": forwards})
                    self._ensure_pod_object(pod, "Logs", "logs", {"logs": logs})
            except client.ApiException as error:
                # A namespace being deleted refuses new objects (403); the pod goes with it.
                if error.status not in (403, 404, 409):
                    raise
        in_use = {tag for pod in serving for tag in _images(pod)}
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
        except (RuntimeError, TimeoutError, OSError) as error:
            self.failed[tag] = entry
            print(f"model server for {tag} did not start: {error}", flush=True)

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


def _serving(pod: client.V1Pod) -> bool:
    return bool(pod.spec.node_name) and pod.metadata.deletion_timestamp is None \
        and pod.status.phase == "Running"


def _images(pod: client.V1Pod) -> set[str]:
    return {container.image for container in pod.spec.containers}


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
        print("another router already serves this cluster", flush=True)
        return 0
    router = Router(context, directory)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    last_answer = time.monotonic()
    try:
        while time.monotonic() - last_answer < GONE_AFTER:
            try:
                version = router.reconcile()
                (directory / "router.pid").write_text(str(os.getpid()))
                last_answer = time.monotonic()
                for _ in watch.Watch().stream(router.core.list_pod_for_all_namespaces,
                                              resource_version=version, timeout_seconds=2):
                    break
            except (client.ApiException, HTTPError, OSError, ConfigException) as error:
                print(f"cluster did not answer: {str(error)[:300]}", flush=True)
                time.sleep(1)
                with suppress(ConfigException, OSError):
                    router.connect()
        print(f"cluster {context} unreachable for {GONE_AFTER:.0f} s; stopping", flush=True)
        return 0
    finally:
        router.close()
        (directory / "router.pid").unlink(missing_ok=True)


def router_pid(context: str) -> int | None:
    """The pid of the router serving `context`, when one runs."""
    pidfile = state_dir(context) / "router.pid"
    try:
        pid = int(pidfile.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError):
        return None
    return pid if b"autograder.lab.traffic" in cmdline else None


def ensure_router(lab: Lab, log: Log = print, timeout: float = 30) -> int:
    """Start the router for this practice cluster unless one runs; returns its pid."""
    pid = router_pid(lab.context)
    if pid:
        return pid
    directory = state_dir(lab.context)
    with (directory / "router.log").open("ab") as out:
        # Its own session: the router outlives a notebook kernel restart, as the cluster does.
        process = subprocess.Popen([sys.executable, "-m", "autograder.lab.traffic", "--context", lab.context],
                                   cwd=PACKAGE_PARENT, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while (pid := router_pid(lab.context)) is None:
        if process.poll() is not None and process.returncode != 0 or time.monotonic() > deadline:
            tail = (directory / "router.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the traffic router did not start; its log ({directory / 'router.log'}):\n{tail}")
        time.sleep(0.2)
    log(f"traffic router running (pid {pid}, log {directory / 'router.log'})")
    return pid


def stop_router(context: str, timeout: float = 15) -> bool:
    """Stop the router (and its model servers) for `context`; False when none ran."""
    pid = router_pid(context)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return True


def wait_routed(lab: Lab, selector: str, timeout: float = 30) -> None:
    """Block until every serving pod behind `selector` has its PortForward, so traffic can flow."""
    custom = client.CustomObjectsApi(lab.api)
    deadline = time.monotonic() + timeout
    while True:
        pods = [pod for pod in lab.core.list_namespaced_pod(lab.namespace, label_selector=selector).items
                if _serving(pod)]
        unloaded = sorted({image for pod in pods for image in _images(pod)} - _loaded_images(lab))
        if unloaded:
            raise ImageNotLoaded(
                f"the pods behind {selector} run {', '.join(unloaded)}, which was never loaded into "
                "the practice cluster (a real kubelet would report ErrImageNeverPull): run "
                "images.load_into_cluster(lab, TAG) first")
        routed = {item["metadata"]["name"] for item in custom.list_namespaced_custom_object(
            *KWOK, lab.namespace, "portforwards")["items"]}
        missing = [pod.metadata.name for pod in pods if pod.metadata.name not in routed]
        if pods and not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"no route to pods {missing or '(none running)'} behind {selector} after "
                f"{timeout:.0f} s; the router's log says why: {state_dir(lab.context) / 'router.log'}")
        time.sleep(0.2)


def serves_kwok_routes(lab: Lab) -> bool:
    """Whether the cluster has kwok's PortForward API, i.e. its pods are simulated."""
    groups = client.ApisApi(lab.api).get_api_versions().groups or []
    return any(group.name == KWOK[0] for group in groups)


@dataclass
class Forward(probe.ModelServer):
    """A running port-forward: the local URL that reaches the Service."""

    local_port: int


@contextmanager
def port_forward(lab: Lab, service: str = "ml-api-service", local_port: int | None = None,
                 timeout: float = 30) -> Iterator[Forward]:
    """`kubectl port-forward service/NAME LOCAL:PORT` for the block's duration, on any cluster.

    kubectl, not the Python client: the client only forwards to a named pod through a socket
    object, while kubectl resolves the Service to a ready pod and listens on a local port,
    which is what the lesson teaches and what curl or a browser can use.
    """
    spec = lab.core.read_namespaced_service(service, lab.namespace).spec
    selector = ",".join(f"{key}={value}" for key, value in (spec.selector or {}).items())
    if lab.provider == "practice":
        ensure_router(lab)
    if lab.provider == "practice" or serves_kwok_routes(lab):
        # Simulated pods answer only once the router has given each one its PortForward
        # (a grader's student kernel sees the practice cluster as "existing").
        wait_routed(lab, selector, timeout)
    local_port = ports.free_port() if local_port is None else local_port
    ports.require_free(local_port)
    url = f"http://127.0.0.1:{local_port}"
    deadline = time.monotonic() + timeout
    while True:
        process = _kubectl_port_forward(lab, service, local_port, spec.ports[0].port)
        if _answers_health(url, process, deadline):
            break
        _stop(process)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"service/{service} did not answer /health through port-forward within {timeout:.0f} s; "
                "are its pods Running, and does the app listen on the Service's targetPort?")
        time.sleep(0.5)
    try:
        yield Forward(url=url, local_port=local_port)
    finally:
        _stop(process)


def _kubectl_port_forward(lab: Lab, service: str, local_port: int, port: int) -> subprocess.Popen[str]:
    """Start `kubectl port-forward service/NAME` and return once it listens (or raise its error)."""
    kubectl = binaries.ensure(["kubectl"])["kubectl"]
    config = lab.kubeconfig_file or kubeconfig_file(lab.context)
    process = subprocess.Popen(
        [str(kubectl), *(["--kubeconfig", str(config)] if config else []),
         "--context", lab.context, "-n", lab.namespace, "port-forward",
         f"service/{service}", f"{local_port}:{port}", "--address", "127.0.0.1"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    if not first.startswith("Forwarding from"):
        _stop(process)
        raise RuntimeError(f"kubectl port-forward service/{service} failed: "
                           f"{(first + process.stderr.read()).strip()}")
    # kubectl prints a line per connection: keep reading so its pipes never fill up.
    for pipe in (process.stdout, process.stderr):
        threading.Thread(target=pipe.read, daemon=True).start()
    return process


def _answers_health(url: str, process: subprocess.Popen[str], deadline: float) -> bool:
    """Whether the app answers through the forward; False once kubectl has given up.

    A pod can be Ready before its app listens (the lesson's Deployment has no readiness
    probe); kubectl then loses the connection and exits, and the caller starts it again.
    """
    while process.poll() is None and time.monotonic() < deadline:
        try:
            probe.health(url)
            return True
        except requests.RequestException:
            time.sleep(0.3)
    return False


def _stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.lab.traffic", description=__doc__)
    parser.add_argument("--context", required=True, help="the practice cluster's kubeconfig context")
    return serve(parser.parse_args(argv).context)


if __name__ == "__main__":
    sys.exit(main())
