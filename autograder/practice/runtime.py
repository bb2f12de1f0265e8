"""The practice cluster's pod runtime: each simulated pod's containers are real processes, reported as kubelet would.

kwok registers the nodes, keeps them alive and removes pods once their deletion is due; everything
kubelet does for a pod happens here. Per container: the image is looked up in the pod's namespace,
then the cluster's catalog (absent: ErrImagePull, then ImagePullBackOff with back-off, or
ErrImageNeverPull), the files of the image's WORKDIR are copied to a private folder and started
with its ENTRYPOINT and CMD as the pod's command and args override them, and with its ENV and the
pod's env (by the launcher), its output
becomes CRI log files (current and previous, read by kwok for `kubectl logs [--previous]`), readiness
and liveness probes (httpGet, tcpSocket, exec) run against it, an exit restarts it after kubelet's
back-off (10 s doubling to 5 min: Waiting CrashLoopBackOff, lastState.terminated) and a deletion
sends SIGTERM, then SIGKILL once the grace period is over. The pod's status is written through the
pods/status subresource with kubelet's fields and events with kubelet's reasons and texts.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

from kubernetes import client

from autograder import isolation
from autograder.lab import ports
from autograder.practice import container as sandbox
from autograder.practice.launcher import Launched, Launcher

logger = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
BACKOFF_RESET_AFTER = 600.0  # kubelet forgets a container's back-off once it ran this long
DEFAULT_GRACE = 30
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")
PYTHON_NAMES = ("python", "python3", "python3.11")
SERVER_PORT = 8080  # the lesson's model server's port: the containerPort when the pod declares none
CRI_LINE_BYTES = 16 * 1024  # containerd's longest log line; longer ones are split
LOG_ROTATE_BYTES = 10 * 2**20  # kubelet's containerLogMaxSize default


def now_text() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _copy_cri_log(pipe: IO[bytes], stream: str, out: IO[bytes], lock: threading.Lock) -> None:
    """Copy a container's output into its log file in the CRI format kwok serves to `kubectl logs`.

    As containerd does, a line longer than 16 KiB is split into partial (P) lines; as kubelet does, a
    log past 10 MiB is rotated, and `kubectl logs` shows only what came since. Endless output takes
    neither the runtime's memory nor the machine's disk.
    """
    while chunk := pipe.readline(CRI_LINE_BYTES):
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        whole = chunk.endswith(b"\n")
        with lock:
            if out.tell() > LOG_ROTATE_BYTES:
                out.seek(0)
                out.truncate()
            out.write(f"{stamp} {stream} {'F' if whole else 'P'} ".encode() + chunk.removesuffix(b"\n") + b"\n")
            out.flush()


def _exit_code(returncode: int) -> int:
    """A process killed by a signal exits 128+signal in a container's status, as the shell reports it."""
    return 128 - returncode if returncode < 0 else returncode


def _backoff(exits: int) -> float:
    """kubelet restarts a container at once after its first exit, then after 10 s, 20 s, ... up to 5 min."""
    return 0.0 if exits <= 1 else min(BACKOFF_START * 2 ** (exits - 2), BACKOFF_MAX)


def _on_shared_network(command: list[str], port: int) -> list[str]:
    """Not isolated, every pod shares this machine's network, where a second `app.run(port=8080)` would
    find the port taken: a `python SCRIPT.py` of a Flask app is served by flask on the pod's own port."""
    if len(command) == 2 and command[0] in PYTHON_NAMES and command[1].endswith(".py"):
        return ["python", "-m", "flask", "--app", command[1], "run", "--host", "127.0.0.1", "--port", str(port)]
    return command


def _pull_policy(spec: client.V1Container) -> str:
    if spec.image_pull_policy:
        return spec.image_pull_policy
    return "Always" if ":" not in spec.image.rsplit("/", 1)[-1] or spec.image.endswith(":latest") else "IfNotPresent"


@dataclass
class Probe:
    """One probe of a container and its counters, as kubelet's prober keeps them."""

    spec: client.V1Probe
    next_at: float
    successes: int = 0
    failures: int = 0
    passing: bool = False

    @property
    def period(self) -> float:
        return float(self.spec.period_seconds or 10)


@dataclass
class Container:
    """One container of a pod: its process, restarts, probes and log files."""

    pod: PodRuntime
    spec: client.V1Container
    process: Launched | None = None
    port: int = 0
    starts: int = 0
    exits: int = 0
    started_at: str = ""
    ran_since: float = 0.0
    backoff_until: float = 0.0
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    terminated: dict | None = None  # the final state, when the restart policy ends the container
    last_terminated: dict | None = None
    ready: bool = False
    pull_failures: int = 0
    pull_failed_at: float = 0.0
    kill_at: float | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    pumps: list[threading.Thread] = field(default_factory=list)
    output: IO[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def folder(self) -> Path:
        return self.pod.folder / self.name

    @property
    def log(self) -> Path:
        return self.folder / "current.log"

    @property
    def previous_log(self) -> Path:
        return self.folder / "previous.log"

    @property
    def container_id(self) -> str:
        return f"containerd://{hashlib.sha256(f'{self.pod.uid}/{self.name}/{self.starts}'.encode()).hexdigest()}"

    @property
    def declared_port(self) -> int:
        return next((port.container_port for port in self.spec.ports or []), SERVER_PORT)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def sync(self, images: Mapping[str, dict], now: float) -> None:
        """Move the container one step on, as kubelet's sync loop does."""
        if self.process is not None:
            if self.process.poll() is not None:
                self._exited(now)
            else:
                if self.kill_at is not None and now >= self.kill_at:
                    self.signal_all(signal.SIGKILL)
                elif self.kill_at is None:
                    self._probe(now)
                return
        if self.terminated is not None or self.pod.deleting:
            return
        entry = images.get(self.spec.image)
        if entry is None or "error" in entry:
            self._pull_failed(now, (entry or {}).get("error"))
        elif now >= self.backoff_until:
            self._start(entry, now)

    def _pull_failed(self, now: float, unbuildable: str | None = None) -> None:
        """No such image on the node: kubelet's ErrImageNeverPull, or ErrImagePull then ImagePullBackOff.

        An image whose record cannot be built counts as one that cannot be pulled, and says why.
        """
        image = self.spec.image
        if _pull_policy(self.spec) == "Never" and unbuildable is None:
            message = f'Container image "{image}" is not present with pull policy of Never'
            if self.waiting != ("ErrImageNeverPull", message):
                self.waiting = ("ErrImageNeverPull", message)
                self.pod.event("Failed", message, "Warning", self.name)
            return
        if self.pull_failures and now < self.pull_failed_at + _backoff(self.pull_failures + 1):
            if now >= self.pull_failed_at + 1 and (self.waiting or ("",))[0] != "ImagePullBackOff":
                self.waiting = ("ImagePullBackOff", f'Back-off pulling image "{image}"')
                self.pod.event("BackOff", f'Back-off pulling image "{image}"', "Normal", self.name)
                self.pod.event("Failed", "Error: ImagePullBackOff", "Warning", self.name)
            return
        self.pull_failures += 1
        self.pull_failed_at = now
        reference = image if "/" in image else f"docker.io/library/{image}"
        message = (f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack '
                   f'image "{reference}": ' + (unbuildable or f"{reference}: not found (the practice cluster "
                   "holds only the images loaded with images.load_into_cluster into this namespace)"))
        self.pod.event("Pulling", f'Pulling image "{image}"', "Normal", self.name)
        self.pod.event("Failed", message, "Warning", self.name)
        self.pod.event("Failed", "Error: ErrImagePull", "Warning", self.name)
        self.waiting = ("ErrImagePull", message)

    def _command(self, entry: dict) -> list[str]:
        """The image's ENTRYPOINT and CMD as Kubernetes combines them with the pod's: command replaces the
        entrypoint (and drops the CMD), args replace the CMD."""
        spec = self.spec
        if spec.command:
            command = [*spec.command, *(spec.args or [])]
        else:
            command = [*entry.get("entrypoint", []), *(spec.args or entry.get("cmd", []))]
        if not command:
            raise OSError(f"no command specified: image {spec.image} has no CMD or ENTRYPOINT and the pod none")
        if not sandbox.isolated():
            command = _on_shared_network(command, self.port)
        # The image's python is this interpreter, where the app's libraries are installed.
        return [sys.executable if command[0] in PYTHON_NAMES else command[0], *command[1:]]

    def _environment(self, entry: dict, workdir: Path) -> dict[str, str]:
        """A clean environment: the image's, the pod's literal values, never the runtime's own."""
        env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{isolation.SYSTEM_PATH}", "HOME": str(workdir),
               "HOSTNAME": self.pod.name, "PYTHONUNBUFFERED": "1", "PORT": str(self.port), **entry.get("env", {})}
        env.update({item.name: item.value or "" for item in self.spec.env or [] if item.value_from is None})
        return env

    def _start(self, entry: dict, now: float) -> None:
        workdir = self.folder / "app"
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(entry["app"], workdir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        uid = sandbox.pod_uid(self.pod.uid)
        if sandbox.isolated():
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, uid, sandbox.POD_GID, follow_symlinks=False)
        self.port = self.declared_port if sandbox.isolated() else ports.free_port()
        out = self.output = self.log.open("wb")
        try:
            # In a session of its own (the process group is the container): whatever it forks stops with it.
            self.process = self.pod.launcher.spawn(self._command(entry), self._environment(entry, workdir), workdir,
                                                   uid if sandbox.isolated() else None)
        except OSError as error:
            out.close()
            message = f"failed to create containerd task: exec: {error}"
            self.pod.event("Failed", f"Error: {message}", "Warning", self.name)
            self.process, self.waiting = None, ("CreateContainerError", message)
            self.exits += 1
            self.backoff_until = now + _backoff(self.exits + 1)
            return
        lock = threading.Lock()
        self.pumps = [threading.Thread(target=_copy_cri_log, args=(pipe, stream, out, lock), daemon=True)
                      for pipe, stream in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr"))]
        for pump in self.pumps:
            pump.start()
        self.starts += 1
        logger.info("%s/%s: started container %s (pid %d)", self.pod.namespace, self.pod.name, self.name,
                    self.process.pid)
        self.started_at, self.ran_since, self.waiting, self.ready, self.kill_at = now_text(), now, None, False, None
        delay = lambda probe: now + (probe.initial_delay_seconds or 0)  # noqa: E731
        self.readiness = Probe(self.spec.readiness_probe, delay(self.spec.readiness_probe)) \
            if self.spec.readiness_probe else None
        self.liveness = Probe(self.spec.liveness_probe, delay(self.spec.liveness_probe)) \
            if self.spec.liveness_probe else None
        self.ready = self.readiness is None
        image = self.spec.image
        self.pod.event("Pulled", f'Container image "{image}" already present on machine', "Normal", self.name)
        self.pod.event("Created", f"Created container: {self.name}", "Normal", self.name)
        self.pod.event("Started", f"Started container {self.name}", "Normal", self.name)

    def _exited(self, now: float) -> None:
        """Record how the process ended, keep its log as the previous one, and restart it as the policy says."""
        assert self.process and self.process.returncode is not None and self.output, "only a started container exits"
        code = _exit_code(self.process.returncode)
        self.signal_all(signal.SIGKILL)  # the container is over when its main process is: so are its children
        logger.info("%s/%s: container %s exited with %d", self.pod.namespace, self.pod.name, self.name, code)
        for pump in self.pumps:
            pump.join(timeout=1)
        self.output.close()
        # Until the next start `kubectl logs` shows this run, and `--previous` shows it from now on.
        shutil.copyfile(self.log, self.previous_log)
        self.process = None
        self.ready = False
        state = {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                 "startedAt": self.started_at, "finishedAt": now_text(), "containerID": self.container_id}
        policy = self.pod.restart_policy
        if self.pod.deleting or policy == "Never" or (policy == "OnFailure" and code == 0):
            self.terminated = state
            return
        self.last_terminated = state
        if now - self.ran_since >= BACKOFF_RESET_AFTER:
            self.exits = 0
        self.exits += 1
        wait = _backoff(self.exits)
        self.backoff_until = now + wait
        self.ran_since = now
        if wait:
            message = (f"back-off {wait:.0f}s restarting failed container={self.name} "
                       f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})")
            self.waiting = ("CrashLoopBackOff", message)
            self.pod.event("BackOff", "Back-off restarting failed container "
                           f"{self.name} in pod {self.pod.name}_{self.pod.namespace}({self.pod.uid})",
                           "Warning", self.name)

    def _probe(self, now: float) -> None:
        """Run the probes that are due; readiness sets `ready`, liveness failures restart the container."""
        for kind, probe in (("Readiness", self.readiness), ("Liveness", self.liveness)):
            if probe is None or now < probe.next_at:
                continue
            probe.next_at = now + probe.period
            ok, detail = self._run_probe(probe.spec)
            if ok:
                probe.successes, probe.failures = probe.successes + 1, 0
                if probe.successes >= (probe.spec.success_threshold or 1):
                    probe.passing = True
            else:
                probe.successes, probe.failures = 0, probe.failures + 1
                self.pod.event("Unhealthy", f"{kind} probe failed: {detail}", "Warning", self.name)
                if probe.failures >= (probe.spec.failure_threshold or 3):
                    probe.passing = False
            if kind == "Readiness":
                self.ready = probe.passing
            elif probe.failures >= (probe.spec.failure_threshold or 3):
                self.pod.event("Killing", f"Container {self.name} failed liveness probe, will be restarted",
                               "Normal", self.name)
                self.stop(self.pod.grace, now)
                return

    def _resolve_port(self, port: int | str) -> int:
        if isinstance(port, str) and not port.isdigit():
            port = next((p.container_port for p in self.spec.ports or [] if p.name == port), SERVER_PORT)
        return int(port) if sandbox.isolated() else self.port

    def _run_probe(self, spec: client.V1Probe) -> tuple[bool, str]:
        """One probe run against the container's own process: (passed, kubelet's failure text)."""
        timeout = float(spec.timeout_seconds or 1)
        assert self.process is not None, "only a running container is probed"
        pid = self.process.pid
        if spec.http_get or spec.tcp_socket:
            action = spec.http_get or spec.tcp_socket
            port = self._resolve_port(action.port)
            where = f"{self.pod.ip}:{action.port}"
            try:
                with sandbox.connect(pid, port, timeout) as sock:
                    if spec.tcp_socket:
                        return True, ""
                    path = spec.http_get.path or "/"
                    sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {where}\r\nUser-Agent: kube-probe/1.34\r\n\r\n".encode())
                    status = sock.makefile("rb").readline().split()
            except OSError as error:
                if spec.tcp_socket:
                    return False, f"dial tcp {where}: connect: {(error.strerror or str(error)).lower()}"
                return False, f'Get "http://{where}{spec.http_get.path or "/"}": dial tcp {where}: ' \
                              f"connect: {(error.strerror or str(error)).lower()}"
            code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
            return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"
        if spec._exec and spec._exec.command:
            command = [*spec._exec.command]
            if sandbox.isolated():
                uid = sandbox.pod_uid(self.pod.uid)
                command = ["nsenter", f"--target={pid}", "--net", "--mount", "--",
                           *isolation.unprivileged(uid, sandbox.POD_GID), *command]
            try:
                done = subprocess.run(command, cwd=self.folder / "app", capture_output=True, timeout=timeout,
                                      env=self._environment({}, self.folder / "app"), preexec_fn=sandbox.limit)
            except subprocess.TimeoutExpired:
                return False, f"command timed out after {timeout:.0f}s"
            except OSError as error:
                return False, str(error)
            return done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace").strip()[-300:]
        return True, ""

    def stop(self, grace: float, now: float) -> None:
        """SIGTERM now, SIGKILL once `grace` seconds are over (kubelet's killContainer)."""
        if self.running() and self.kill_at is None:
            self.signal_all(signal.SIGTERM)
            self.kill_at = now + grace

    def signal_all(self, number: int) -> None:
        """Signal the container's whole process group, as a runtime signals a container's every process."""
        if self.process is None:
            return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, number)

    def status(self) -> dict:
        """This container's entry of status.containerStatuses, with every state key (null ones clear the old)."""
        state: dict = {"waiting": None, "running": None, "terminated": None}
        if self.running():
            state["running"] = {"startedAt": self.started_at}
        elif self.terminated is not None:
            state["terminated"] = self.terminated
        else:
            reason, message = self.waiting or ("ContainerCreating", "")
            state["waiting"] = {"reason": reason, **({"message": message} if message else {})}
        return {"name": self.name, "image": self.spec.image, "imageID": "", "ready": self.ready and self.running(),
                "started": self.running(), "restartCount": max(0, self.starts - 1),
                "state": state, "lastState": {"terminated": self.last_terminated},
                **({"containerID": self.container_id} if self.starts else {})}


class PodRuntime:
    """One pod on a simulated node: its containers, IP, events and status."""

    def __init__(self, pod: client.V1Pod, folder: Path, ip: str, events: EventRecorder, launcher: Launcher) -> None:
        self.pod = pod
        self.launcher = launcher
        self.folder = folder
        self.ip = ip
        self.recorder = events
        self.started_at = now_text()
        folder.mkdir(parents=True, exist_ok=True)
        if sandbox.isolated():
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
        self.recorder.record(self.pod, reason, message, kind, container)

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
            if one.process is not None:
                one.signal_all(signal.SIGKILL)
                one.process.wait()

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
        reason = "PodCompleted" if phase in ("Succeeded", "Failed") else ("ContainersNotReady" if unready else None)
        conditions = {"PodReadyToStartContainers": ("True", None, None), "Initialized": ("True", None, None),
                      "ContainersReady": (ready, reason, message), "Ready": (ready, reason, message)}
        previous = {c.type: c for c in self.pod.status.conditions or []} if self.pod.status else {}
        now = now_text()
        entries = []
        for kind, (value, why, text) in conditions.items():
            old = previous.get(kind)
            since = old.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ") \
                if old and old.status == value and old.last_transition_time else now
            entries.append({"type": kind, "status": value, "lastTransitionTime": since, "lastProbeTime": None,
                            "reason": why, "message": text})
        ip = host_ip if self.pod.spec.host_network else self.ip
        return {"phase": phase, "conditions": entries, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
                "podIP": ip, "podIPs": [{"ip": ip}], "startTime": self.started_at, "containerStatuses": statuses}


class EventRecorder:
    """kubelet's events for pods, repeated ones counted on one Event as the event recorder aggregates them."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.seen: dict[tuple, tuple[str, int]] = {}

    def record(self, pod: client.V1Pod, reason: str, message: str, kind: str, container: str) -> None:
        key = (pod.metadata.uid, reason, message)
        namespace, stamp = pod.metadata.namespace, now_text()
        try:
            if key in self.seen:
                name, count = self.seen[key]
                self.core.patch_namespaced_event(name, namespace, {"count": count + 1, "lastTimestamp": stamp})
                self.seen[key] = (name, count + 1)
                return
            name = f"{pod.metadata.name}.{hashlib.sha1(repr(key).encode()).hexdigest()[:16]}"
            node = pod.spec.node_name or ""
            self.core.create_namespaced_event(namespace, {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name,
                                   "namespace": namespace, "uid": pod.metadata.uid,
                                   "fieldPath": f"spec.containers{{{container}}}"},
                "reason": reason, "message": message, "type": kind, "count": 1,
                "firstTimestamp": stamp, "lastTimestamp": stamp,
                "source": {"component": "kubelet", "host": node},
                "reportingComponent": "kubelet", "reportingInstance": node})
            self.seen[key] = (name, 1)
        except client.ApiException as error:
            if error.status not in (403, 404, 409):  # a namespace being deleted refuses new events
                raise

    def forget(self, uid: str) -> None:
        self.seen = {key: value for key, value in self.seen.items() if key[0] != uid}


class Relay:
    """A loopback port on the runtime's side that leads into one container's own network (kwok dials it)."""

    def __init__(self, target: Container) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                incoming, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(incoming,), daemon=True).start()

    def _serve(self, incoming: socket.socket) -> None:
        process = self.target.process
        try:
            outgoing = sandbox.connect(process.pid if process else None, self.target.port, 5)
        except OSError:
            incoming.close()
            return
        outgoing.settimeout(None)
        threading.Thread(target=_pump, args=(outgoing, incoming), daemon=True).start()
        _pump(incoming, outgoing)

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes one way until either side closes."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def free_ip(used: set[str]) -> str:
    """A pod IP from the pod network that no live pod holds."""
    for address in POD_NETWORK.hosts():
        text = str(address)
        if text not in used and not text.endswith(".0") and not text.endswith(".1"):
            used.add(text)
            return text
    raise RuntimeError("the practice pod network is full")
