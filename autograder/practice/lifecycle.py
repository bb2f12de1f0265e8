"""One container's life as kubelet leads it: pull, start, probes, exit, back-off, stop."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from kubernetes import client

from autograder.practice import container as sandbox
from autograder.practice import probes
from autograder.practice.launcher import Launched
from autograder.practice.logs import copy_cri_log
from autograder.practice.node import Node
from autograder.practice.probes import Probe
from autograder.shared import isolation, ports

logger = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX = 10.0, 300.0
BACKOFF_RESET_AFTER = 600.0  # kubelet forgets a container's back-off once it ran this long
PYTHON_NAMES = ("python", "python3", "python3.11")
SERVER_PORT = 8080  # the lesson's model server's port: the containerPort when the pod declares none


def _exit_code(returncode: int) -> int:
    """A process killed by a signal exits 128+signal in a container's status, as a shell says."""
    return 128 - returncode if returncode < 0 else returncode


def _backoff(exits: int) -> float:
    """kubelet restarts a container at once after its first exit, then after 10 s, 20 s... 5 min."""
    return 0.0 if exits <= 1 else min(BACKOFF_START * 2 ** (exits - 2), BACKOFF_MAX)


def _on_shared_network(command: list[str], port: int) -> list[str]:
    """A `python SCRIPT.py` of a Flask app, served by flask on the pod's own port.

    Not isolated, every pod shares this machine's network, where a second `app.run(port=8080)` would
    find the port taken.
    """
    if len(command) == 2 and command[0] in PYTHON_NAMES and command[1].endswith(".py"):
        return [
            "python",
            "-m",
            "flask",
            "--app",
            command[1],
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    return command


def _pull_policy(spec: client.V1Container) -> str:
    if spec.image_pull_policy:
        return spec.image_pull_policy
    return (
        "Always"
        if ":" not in spec.image.rsplit("/", 1)[-1] or spec.image.endswith(":latest")
        else "IfNotPresent"
    )


class Pod(Protocol):
    """What a container needs of its pod (pod.PodRuntime): who it is, folder, policies, events."""

    folder: Path
    ip: str
    node: Node

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def uid(self) -> str: ...

    @property
    def restart_policy(self) -> str: ...

    @property
    def deleting(self) -> bool: ...

    @property
    def grace(self) -> float: ...

    def event(self, reason: str, message: str, kind: str, container: str) -> None: ...


@dataclass
class Container:
    """One container of a pod: its process, restarts, probes and log files."""

    pod: Pod
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
        """No such image on the node.

        kubelet's ErrImageNeverPull, or ErrImagePull then ImagePullBackOff.

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
        message = (
            f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and '
            f'unpack image "{reference}": '
            + (
                unbuildable
                or f"{reference}: not found (the practice cluster "
                "holds only the images loaded with images.load_into_cluster into this namespace)"
            )
        )
        self.pod.event("Pulling", f'Pulling image "{image}"', "Normal", self.name)
        self.pod.event("Failed", message, "Warning", self.name)
        self.pod.event("Failed", "Error: ErrImagePull", "Warning", self.name)
        self.waiting = ("ErrImagePull", message)

    def _command(self, entry: dict) -> list[str]:
        """The image's ENTRYPOINT and CMD as Kubernetes combines them with the pod's.

        Command replaces the entrypoint (and drops the CMD), args replace the CMD.
        """
        spec = self.spec
        if spec.command:
            command = [*spec.command, *(spec.args or [])]
        else:
            command = [*entry.get("entrypoint", []), *(spec.args or entry.get("cmd", []))]
        if not command:
            raise OSError(
                f"no command specified: image {spec.image} has no CMD or "
                "ENTRYPOINT and the pod none"
            )
        if not self.pod.node.isolates:
            command = _on_shared_network(command, self.port)
        # The image's python is this interpreter, where the app's libraries are installed.
        return [sys.executable if command[0] in PYTHON_NAMES else command[0], *command[1:]]

    def _environment(self, entry: dict, workdir: Path) -> dict[str, str]:
        """A clean environment: the image's, the pod's literal values, never the runtime's own."""
        env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{isolation.SYSTEM_PATH}",
            "HOME": str(workdir),
            "HOSTNAME": self.pod.name,
            "PYTHONUNBUFFERED": "1",
            "PORT": str(self.port),
            **entry.get("env", {}),
        }
        env.update(
            {item.name: item.value or "" for item in self.spec.env or [] if item.value_from is None}
        )
        return env

    def _start(self, entry: dict, now: float) -> None:
        workdir = self.folder / "app"
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(
            entry["app"], workdir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
        uid = sandbox.pod_uid(self.pod.uid)
        if self.pod.node.isolates:
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, uid, sandbox.POD_GID, follow_symlinks=False)
        self.port = self.declared_port if self.pod.node.isolates else ports.free_port()
        out = self.output = self.log.open("wb")
        try:
            # In a session of its own (the process group is the container):
            # whatever it forks stops with it.
            self.process = self.pod.node.launcher.spawn(
                self._command(entry),
                self._environment(entry, workdir),
                workdir,
                uid if self.pod.node.isolates else None,
            )
        except OSError as error:
            out.close()
            message = f"failed to create containerd task: exec: {error}"
            self.pod.event("Failed", f"Error: {message}", "Warning", self.name)
            self.process, self.waiting = None, ("CreateContainerError", message)
            self.exits += 1
            self.backoff_until = now + _backoff(self.exits + 1)
            return
        lock = threading.Lock()
        self.pumps = [
            threading.Thread(target=copy_cri_log, args=(pipe, stream, out, lock), daemon=True)
            for pipe, stream in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr"))
        ]
        for pump in self.pumps:
            pump.start()
        self.starts += 1
        logger.info(
            "%s/%s: started container %s (pid %d)",
            self.pod.namespace,
            self.pod.name,
            self.name,
            self.process.pid,
        )
        self.started_at, self.ran_since, self.waiting, self.ready, self.kill_at = (
            self.pod.node.clock.stamp(),
            now,
            None,
            False,
            None,
        )
        delay = lambda probe: now + (probe.initial_delay_seconds or 0)  # noqa: E731
        self.readiness = (
            Probe(self.spec.readiness_probe, delay(self.spec.readiness_probe))
            if self.spec.readiness_probe
            else None
        )
        self.liveness = (
            Probe(self.spec.liveness_probe, delay(self.spec.liveness_probe))
            if self.spec.liveness_probe
            else None
        )
        self.ready = self.readiness is None
        image = self.spec.image
        self.pod.event(
            "Pulled", f'Container image "{image}" already present on machine', "Normal", self.name
        )
        self.pod.event("Created", f"Created container: {self.name}", "Normal", self.name)
        self.pod.event("Started", f"Started container {self.name}", "Normal", self.name)

    def _exited(self, now: float) -> None:
        """Record how the process ended, keep its log as the previous one, restart it per policy."""
        assert self.process and self.process.returncode is not None and self.output, (
            "only a started container exits"
        )
        code = _exit_code(self.process.returncode)
        self.signal_all(
            signal.SIGKILL
        )  # the container is over when its main process is: so are its children
        logger.info(
            "%s/%s: container %s exited with %d", self.pod.namespace, self.pod.name, self.name, code
        )
        for pump in self.pumps:
            pump.join(timeout=1)
        self.output.close()
        # Until the next start `kubectl logs` shows this run, and `--previous` shows it from now on.
        shutil.copyfile(self.log, self.previous_log)
        self.process = None
        self.ready = False
        state = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": self.pod.node.clock.stamp(),
            "containerID": self.container_id,
        }
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
            message = (
                f"back-off {wait:.0f}s restarting failed container={self.name} "
                f"pod={self.pod.name}_{self.pod.namespace}({self.pod.uid})"
            )
            self.waiting = ("CrashLoopBackOff", message)
            self.pod.event(
                "BackOff",
                "Back-off restarting failed container "
                f"{self.name} in pod {self.pod.name}_{self.pod.namespace}({self.pod.uid})",
                "Warning",
                self.name,
            )

    def _probe(self, now: float) -> None:
        """Run the probes that are due; readiness sets `ready`, liveness failures restart it."""
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
                self.pod.event(
                    "Killing",
                    f"Container {self.name} failed liveness probe, will be restarted",
                    "Normal",
                    self.name,
                )
                self.stop(self.pod.grace, now)
                return

    def _resolve_port(self, port: int | str) -> int:
        if isinstance(port, str) and not port.isdigit():
            port = next(
                (p.container_port for p in self.spec.ports or [] if p.name == port), SERVER_PORT
            )
        return int(port) if self.pod.node.isolates else self.port

    def _run_probe(self, spec: client.V1Probe) -> tuple[bool, str]:
        """One probe run against the container's own process: (passed, kubelet's failure text)."""
        assert self.process is not None, "only a running container is probed"
        workdir = self.folder / "app"
        uid = sandbox.pod_uid(self.pod.uid) if self.pod.node.isolates else None
        return self.pod.node.prober(
            spec,
            probes.Target(
                self.process.pid,
                self.pod.ip,
                self._resolve_port,
                workdir,
                self._environment({}, workdir),
                uid,
            ),
        )

    def stop(self, grace: float, now: float) -> None:
        """SIGTERM now, SIGKILL once `grace` seconds are over (kubelet's killContainer)."""
        if self.running() and self.kill_at is None:
            self.signal_all(signal.SIGTERM)
            self.kill_at = now + grace

    def kill(self) -> None:
        """Its processes go at once, and its log file and output pipes with them.

        Left to the collector, a vanished pod's container (a cycle with its pod) held them for
        hours: the runtime's descriptors grew with every pod a long run deleted.
        """
        if self.process is None:
            return
        self.signal_all(signal.SIGKILL)
        self.process.wait()
        for pump in self.pumps:
            pump.join(timeout=1)
        if not any(
            pump.is_alive() for pump in self.pumps
        ):  # else a process out of its group writes
            for stream in (self.process.stdout, self.process.stderr, self.output):
                if stream is not None:
                    stream.close()

    def signal_all(self, number: int) -> None:
        """Signal the container's process group, as a runtime signals a container's processes."""
        if self.process is not None:
            self.process.signal_group(number)

    def status(self) -> dict:
        """This container's status.containerStatuses entry, each state key (nulls clear the old)."""
        state: dict = {"waiting": None, "running": None, "terminated": None}
        if self.running():
            state["running"] = {"startedAt": self.started_at}
        elif self.terminated is not None:
            state["terminated"] = self.terminated
        else:
            reason, message = self.waiting or ("ContainerCreating", "")
            state["waiting"] = {"reason": reason, **({"message": message} if message else {})}
        return {
            "name": self.name,
            "image": self.spec.image,
            "imageID": "",
            "ready": self.ready and self.running(),
            "started": self.running(),
            "restartCount": max(0, self.starts - 1),
            "state": state,
            "lastState": {"terminated": self.last_terminated},
            **({"containerID": self.container_id} if self.starts else {}),
        }
