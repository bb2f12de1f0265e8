"""kind: Kubernetes nodes as Docker containers, so pods run for real on a laptop."""

from __future__ import annotations

import logging
import os
import re
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import DockerException, ImageNotFound

from autograder import pins
from autograder import MANIFESTS
from autograder.lab import binaries, kubeconfig
from autograder.lab.provider import CLUSTER_NAME, ClusterError, run

logger = logging.getLogger(__name__)

KIND_CONFIG = MANIFESTS / "kind-config.yaml"
NODE_IMAGE_ENV = "LAB_KIND_IMAGE"
OFFICIAL_NODE_IMAGE = f"kindest/node:v{pins.KUBERNETES_VERSION}"
# What `python -m autograder kind-image build` tags (autograder.build.nodeimage) when Docker
# cannot pull the official image.
LOCAL_NODE_IMAGE = f"k8s-ml-lab/kind-node:v{pins.KUBERNETES_VERSION}"
READY_WAIT = "180s"
LOG_LINES = 30
KLOG_ERROR = re.compile(r"^E\d{4} ")  # klog's error lines: E1128 03:00:00.000000 ...


def docker_unreachable_reason() -> str | None:
    """None when the Docker daemon answers, else what is wrong and how to start it."""
    try:
        docker.from_env(timeout=5).ping()
    except DockerException as error:
        return (f"the Docker daemon does not answer ({error.__class__.__name__}); start Docker "
                "Desktop, or on Linux `sudo systemctl start docker` (or `sudo dockerd &`)")
    return None


def node_image() -> str:
    """$LAB_KIND_IMAGE, else the official image when Docker has it, else the one built here offline."""
    if os.environ.get(NODE_IMAGE_ENV):
        return os.environ[NODE_IMAGE_ENV]
    try:
        docker.from_env(timeout=5).images.get(OFFICIAL_NODE_IMAGE)
    except DockerException:
        return LOCAL_NODE_IMAGE
    return OFFICIAL_NODE_IMAGE


def privileged_blocked_reason(image: str) -> str | None:
    """None when Docker can start a privileged container (a kind node must be one), else why not."""
    client = docker.from_env(timeout=30)
    try:
        probe = client.containers.create(image, entrypoint=["true"], privileged=True, network_mode="none")
        try:
            probe.start()
            probe.wait(timeout=30)
        finally:
            probe.remove(force=True)
    except DockerException as error:
        if "apply caps" in str(error):
            return ("Docker cannot start privileged containers here: this host's capability "
                    "bounding set lacks one Docker 20.10 asks for (these CI machines have no "
                    "CAP_SYS_RESOURCE). Start dockerd with `--add-runtime runc-bounded=<repo>/"
                    ".ci/runc-bounded --default-runtime runc-bounded` (see that file)")
        return f"Docker cannot start a privileged container from {image}: {error}"
    return None


@dataclass
class Kind:
    """`kind create cluster --name ml-learning`, as the lesson does it."""

    name: str = "kind"
    required_binaries: tuple[str, ...] = ("kind", "kubectl")  # kubectl: the lesson's port-forward
    cluster: str = CLUSTER_NAME

    @property
    def context(self) -> str:
        return f"kind-{self.cluster}"

    @property
    def kubeconfig_file(self) -> Path | None:
        return None

    @property
    def node(self) -> str:
        """The Docker container that is the cluster's one node."""
        return f"{self.cluster}-control-plane"

    def unusable_reason(self) -> str | None:
        missing = [name for name in self.required_binaries if binaries.find(name) is None]
        if missing:
            return (f"missing: {', '.join(missing)} (`python -m autograder binaries kind` builds "
                    "them; `python -m autograder doctor` lists other ways)")
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
        return privileged_blocked_reason(node_image())

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

    def up(self) -> None:
        reason = self.unusable_reason()
        if reason:
            raise ClusterError(f"kind cannot run here: {reason}")
        if self.exists():
            if kubeconfig.answers(self.context):
                logger.info(f"kind cluster {self.cluster!r} is already running.")
                self._kind("export", "kubeconfig", "--name", self.cluster)
                return
            logger.info(f"kind cluster {self.cluster!r} is half-created or stopped; recreating it.")
            self.down()
        logger.info(f"Creating kind cluster {self.cluster!r} from {node_image()} (about a minute)...")
        started = time.monotonic()
        try:
            # --retain keeps a failed node long enough to read its logs; it is deleted below.
            self._kind("create", "cluster", "--name", self.cluster, "--image", node_image(),
                       "--config", str(KIND_CONFIG), "--wait", READY_WAIT, "--retain",
                       what="kind create cluster")
            self._require_ready_node()
        except BaseException as error:
            diagnosis = self.node_diagnosis() if isinstance(error, ClusterError) else ""
            self._kind("delete", "cluster", "--name", self.cluster)
            if diagnosis:
                raise ClusterError(f"{error}\n\n{diagnosis}") from error
            raise
        logger.info(f"kind cluster ready in {time.monotonic() - started:.1f} s (kubectl context {self.context}).")

    def _require_ready_node(self) -> None:
        """kind only warns when its wait for Ready times out; treat that as the failure it is."""
        query = '{.items[0].status.conditions[?(@.type=="Ready")].status} {.items[0].status.conditions[?(@.type=="Ready")].message}'
        try:
            code, output = docker.from_env(timeout=30).containers.get(self.node).exec_run(
                ["kubectl", "--kubeconfig=/etc/kubernetes/admin.conf", "get", "nodes", "-o", f"jsonpath={query}"])
        except DockerException as error:
            raise ClusterError(f"the kind node {self.node} cannot be inspected: {error}") from error
        status, _, why = output.decode(errors="replace").partition(" ")
        if code != 0 or status != "True":
            raise ClusterError(f"the kind node {self.node} did not become Ready within {READY_WAIT}"
                               + (f"; the node says: {why.strip()}" if code == 0 and why.strip() else ""))

    def node_diagnosis(self) -> str:
        """Why a node is not Ready, in plain words: the tail of kubelet's and containerd's logs."""
        try:
            node = docker.from_env(timeout=30).containers.get(self.node)
        except DockerException as error:
            return f"The node container {self.node} cannot be read ({error.__class__.__name__})."
        if node.status != "running":
            output = node.logs(tail=LOG_LINES).decode(errors="replace")
            return f"The node container {self.node} is {node.status}; its last output:\n{textwrap.indent(output, '  ')}"
        summary, sections = [], []
        for unit, role in (("kubelet", "the agent that starts pods"), ("containerd", "the container runtime")):
            _, output = node.exec_run(["journalctl", "-u", unit, "-n", str(LOG_LINES), "--no-pager", "-o", "cat"])
            lines = output.decode(errors="replace").rstrip().splitlines()
            errors = [line for line in lines if KLOG_ERROR.match(line) or "level=error" in line]
            summary.append(f"{unit}'s last error: {errors[-1].strip()[:300]}" if errors
                           else f"{unit} logged no error in its last {LOG_LINES} lines")
            sections.append(f"Last {LOG_LINES} lines from {unit}, {role} "
                            f"(`docker exec {self.node} journalctl -u {unit}`):\n"
                            + textwrap.indent("\n".join(lines), "  "))
        return "\n".join(summary) + "\n\n" + "\n\n".join(sections)

    def down(self) -> None:
        if binaries.find("kind") is None or docker_unreachable_reason() or not self.exists():
            logger.info(f"No kind cluster {self.cluster!r} to delete.")
            return
        self._kind("delete", "cluster", "--name", self.cluster, what="kind delete cluster")
        logger.info(f"Deleted kind cluster {self.cluster!r}.")
