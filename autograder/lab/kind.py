"""kind: Kubernetes nodes as Docker containers, so pods run for real on a laptop."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

from autograder import MANIFESTS
from autograder.lab import binaries, kubeconfig
from autograder.lab.provider import CLUSTER_NAME, ClusterError, Log, run

KIND_CONFIG = MANIFESTS / "kind-config.yaml"
NODE_IMAGE_ENV = "LAB_KIND_IMAGE"
OFFICIAL_NODE_IMAGE = f"kindest/node:v{binaries.KUBERNETES_VERSION}"


def docker_unreachable_reason() -> str | None:
    """None when the Docker daemon answers, else what is wrong and how to start it."""
    try:
        docker.from_env(timeout=5).ping()
    except DockerException as error:
        return (f"the Docker daemon does not answer ({error.__class__.__name__}); start Docker "
                "Desktop, or on Linux `sudo systemctl start docker` (or `sudo dockerd &`)")
    return None


def node_image() -> str:
    """The kind node image to use: $LAB_KIND_IMAGE, else the official one for the pinned version."""
    return os.environ.get(NODE_IMAGE_ENV) or OFFICIAL_NODE_IMAGE


@dataclass
class Kind:
    """`kind create cluster --name ml-learning`, as the lesson does it."""

    name: str = "kind"
    cluster: str = CLUSTER_NAME

    @property
    def context(self) -> str:
        return f"kind-{self.cluster}"

    @property
    def kubeconfig_file(self) -> Path | None:
        return None

    def unusable_reason(self) -> str | None:
        if binaries.find("kind") is None:
            return "the kind binary is missing (python -m autograder doctor says how to get it)"
        reason = docker_unreachable_reason()
        if reason:
            return reason
        try:
            docker.from_env(timeout=5).images.get(node_image())
        except ImageNotFound:
            return (f"the kind node image {node_image()} is not in Docker and cannot be pulled "
                    "offline; build one with `python -m autograder kind-image build`")
        except DockerException as error:
            return f"Docker could not list images: {error}"
        return None

    def _kind(self, *args: str, timeout: float = 600, what: str = "") -> str:
        kind = binaries.ensure(["kind"])["kind"]
        return run([str(kind), *args], timeout=timeout, what=what).stdout

    def exists(self) -> bool:
        return self.cluster in self._kind("get", "clusters").split()

    def status(self) -> str:
        reason = self.unusable_reason()
        if reason:
            return f"kind: unusable: {reason}"
        if not self.exists():
            return f"kind cluster {self.cluster!r}: not created"
        state = "answers" if kubeconfig.answers(self.context) else "does not answer"
        return f"kind cluster {self.cluster!r}: created, API {state} (context {self.context})"

    def up(self, log: Log = print) -> None:
        reason = self.unusable_reason()
        if reason:
            raise ClusterError(f"kind cannot run here: {reason}")
        if self.exists():
            if kubeconfig.answers(self.context):
                log(f"kind cluster {self.cluster!r} is already running.")
                self._kind("export", "kubeconfig", "--name", self.cluster)
                return
            log(f"kind cluster {self.cluster!r} is half-created or stopped; recreating it.")
            self.down(log)
        log(f"Creating kind cluster {self.cluster!r} from {node_image()} (about a minute)...")
        started = time.monotonic()
        try:
            self._kind("create", "cluster", "--name", self.cluster, "--image", node_image(),
                       "--config", str(KIND_CONFIG), "--wait", "180s",
                       what="kind create cluster")
        except BaseException:
            self._kind("delete", "cluster", "--name", self.cluster)
            raise
        log(f"kind cluster ready in {time.monotonic() - started:.1f} s (kubectl context {self.context}).")

    def down(self, log: Log = print) -> None:
        if binaries.find("kind") is None or docker_unreachable_reason() or not self.exists():
            log(f"No kind cluster {self.cluster!r} to delete.")
            return
        self._kind("delete", "cluster", "--name", self.cluster, what="kind delete cluster")
        log(f"Deleted kind cluster {self.cluster!r}.")
