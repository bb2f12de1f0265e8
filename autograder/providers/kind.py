"""kind: Kubernetes nodes as Docker containers, so pods run for real on a laptop."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import re
import tarfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import yaml
from docker.errors import DockerException, ImageNotFound
from docker.models.containers import Container
from kubernetes import client

from autograder import MANIFESTS
from autograder.shared import binaries, dockerengine, k8s, kubeconfig, pins
from autograder.shared.dockerengine import ImageMissing
from autograder.shared.provider import CLUSTER_NAME, ClusterError, Lab, run

logger = logging.getLogger(__name__)

KIND_CONFIG = MANIFESTS / "kind-config.yaml"
NODE_IMAGE_ENV = "LAB_KIND_IMAGE"
OFFICIAL_NODE_IMAGE = f"kindest/node:v{pins.KUBERNETES_VERSION}"
# What `python -m autograder kind-image build` tags (autograder.build.nodeimage) when Docker
# cannot pull the official image.
LOCAL_NODE_IMAGE = f"k8s-ml-lab/kind-node:v{pins.KUBERNETES_VERSION}"
READY_WAIT = "180s"
# The offline node image's CNI config (autograder/build/nodeparts.py): one static ptp range.
STATIC_CNI = Path("/etc/cni/net.d/10-lab-ptp.conflist")
GPU, GPUS_PER_WORKER = (
    "nvidia.com/gpu",
    "1",
)  # what notebook 7 schedules on, as a cloud GPU node offers it
LOG_LINES = 30
KLOG_ERROR = re.compile(r"^E\d{4} ")  # klog's error lines: E1128 03:00:00.000000 ...


def node_image() -> str:
    """$LAB_KIND_IMAGE, else the official image if Docker has it, else the one built here."""
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
        probe = client.containers.create(
            image, entrypoint=["true"], privileged=True, network_mode="none"
        )
        try:
            probe.start()
            probe.wait(timeout=30)
        finally:
            probe.remove(force=True)
    except DockerException as error:
        if "apply caps" in str(error):
            return (
                "Docker cannot start privileged containers here: this host's capability "
                "bounding set lacks one Docker 20.10 asks for (these CI machines have no "
                "CAP_SYS_RESOURCE). Start dockerd with `--add-runtime runc-bounded=<repo>/"
                ".ci/runc-bounded --default-runtime runc-bounded` (see that file)"
            )
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

    loads_images_only = False  # a kind node pulls what it lacks from a registry it can reach

    def before_forward(self, lab: Lab, selector: str, timeout: float) -> None:
        """kubectl port-forward reaches kind's pods directly: nothing to prepare."""

    def loads_images(self, lab: Lab) -> bool:
        return True

    def load_image(
        self, lab: Lab, tag: str, context: Path | None, build_args: dict[str, str]
    ) -> None:
        """`kind load docker-image`: the image must be in Docker already (images.build makes it)."""
        self.load_docker_image(tag)

    def load_docker_image(self, tag: str) -> None:
        """`kind load docker-image TAG` into every node of this cluster."""
        try:
            dockerengine.client().images.get(tag)
        except ImageNotFound:
            raise ImageMissing(f"no image {tag} in Docker to load: build it first") from None
        self._kind("load", "docker-image", tag, "--name", self.cluster, what=f"kind load {tag}")
        logger.info("loaded %s into kind cluster %r", tag, self.cluster)

    def node_containers(self) -> list[Container]:
        """The Docker containers that are this cluster's nodes."""
        return docker.from_env(timeout=60).containers.list(
            filters={"label": f"io.x-k8s.kind.cluster={self.cluster}"}
        )

    @property
    def node(self) -> str:
        """The Docker container of the control-plane node (kubectl and the API server run there)."""
        return f"{self.cluster}-control-plane"

    @property
    def node_count(self) -> int:
        """How many nodes the lesson's kind config asks for."""
        return len(yaml.safe_load(KIND_CONFIG.read_text())["nodes"])

    def unusable_reason(self) -> str | None:
        missing = [name for name in self.required_binaries if binaries.find(name) is None]
        if missing:
            return (
                f"missing: {', '.join(missing)} (`python -m autograder binaries kind` builds "
                "them; `python -m autograder doctor` lists other ways)"
            )
        reason = dockerengine.unreachable_reason()
        if reason:
            return reason
        try:
            docker.from_env(timeout=5).images.get(node_image())
        except ImageNotFound:
            return (
                f"the kind node image {node_image()} is not in Docker and cannot be pulled "
                "offline; build one with `python -m autograder kind-image build`"
            )
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
                self._kind("export", "kubeconfig", "--name", self.cluster)
                if len(self._core().list_node().items) == self.node_count:
                    logger.info("kind cluster %r is already running.", self.cluster)
                    return
                logger.info(
                    "kind cluster %r has other nodes than %s asks for; recreating it.",
                    self.cluster,
                    KIND_CONFIG.name,
                )
            else:
                logger.info(
                    "kind cluster %r is half-created or stopped; recreating it.", self.cluster
                )
            self.down()
        logger.info(
            "Creating kind cluster %r from %s (about a minute)...", self.cluster, node_image()
        )
        started = time.monotonic()
        try:
            # --retain keeps a failed node long enough to read its logs; it is deleted below.
            self._kind(
                "create",
                "cluster",
                "--name",
                self.cluster,
                "--image",
                node_image(),
                "--config",
                str(KIND_CONFIG),
                "--wait",
                READY_WAIT,
                "--retain",
                what="kind create cluster",
            )
            self._require_ready_node()
            self._wire_pod_network()
            self._advertise_gpus()
        except BaseException as error:
            diagnosis = self.node_diagnosis() if isinstance(error, ClusterError) else ""
            self._kind("delete", "cluster", "--name", self.cluster)
            if diagnosis:
                raise ClusterError(f"{error}\n\n{diagnosis}") from error
            raise
        logger.info(
            "kind cluster ready in %.1f s (kubectl context %s).",
            time.monotonic() - started,
            self.context,
        )

    def _require_ready_node(self) -> None:
        """kind only warns when its wait for Ready times out; treat that as the failure it is."""
        ready = '.items[0].status.conditions[?(@.type=="Ready")]'
        query = f"{{{ready}.status}} {{{ready}.message}}"
        try:
            code, output = (
                docker.from_env(timeout=30)
                .containers.get(self.node)
                .exec_run(
                    [
                        "kubectl",
                        "--kubeconfig=/etc/kubernetes/admin.conf",
                        "get",
                        "nodes",
                        "-o",
                        f"jsonpath={query}",
                    ]
                )
            )
        except DockerException as error:
            raise ClusterError(f"the kind node {self.node} cannot be inspected: {error}") from error
        status, _, why = output.decode(errors="replace").partition(" ")
        if code != 0 or status != "True":
            raise ClusterError(
                f"the kind node {self.node} did not become Ready within {READY_WAIT}"
                + (f"; the node says: {why.strip()}" if code == 0 and why.strip() else "")
            )

    def _core(self) -> client.CoreV1Api:
        return client.CoreV1Api(kubeconfig.api_client(self.context))

    def _wire_pod_network(self) -> None:
        """kindnetd's work, on the offline node image.

        Each node's pods get its own podCIDR, routed from the others.

        The image's static range is the control plane's; the pods already started outside their
        node's range (CoreDNS) are deleted so their Deployment recreates them inside it.
        """
        core, containers = self._core(), docker.from_env(timeout=60).containers
        nodes = k8s.wait_for(
            core.list_node,
            timeout=60,
            what="a pod range (podCIDR) on every kind node",
            until=lambda found: (
                found
                if len(found) == self.node_count and all(n.spec.pod_cidr for n in found)
                else None
            ),
            seen=lambda found: f"{sum(bool(n.spec.pod_cidr) for n in found)} of {len(found)}",
        )
        address = {
            n.metadata.name: next(a.address for a in n.status.addresses if a.type == "InternalIP")
            for n in nodes
        }
        for node in nodes:
            container = containers.get(node.metadata.name)
            code, text = container.exec_run(["cat", str(STATIC_CNI)])
            if code != 0:  # an image with a CNI daemon of its own (the official one runs kindnetd)
                return
            config = json.loads(text)
            config["plugins"][0]["ipam"]["ranges"] = [[{"subnet": node.spec.pod_cidr}]]
            _put_file(container, STATIC_CNI, json.dumps(config, indent=2).encode())
            for other in nodes:
                if other is not node:
                    _exec(
                        container,
                        [
                            "ip",
                            "route",
                            "replace",
                            other.spec.pod_cidr,
                            "via",
                            address[other.metadata.name],
                        ],
                    )
        pod_range = {n.metadata.name: ipaddress.ip_network(n.spec.pod_cidr) for n in nodes}
        for pod in core.list_namespaced_pod("kube-system").items:
            if (
                pod.spec.node_name in pod_range
                and pod.status.pod_ip
                and not pod.spec.host_network
                and ipaddress.ip_address(pod.status.pod_ip) not in pod_range[pod.spec.node_name]
            ):
                core.delete_namespaced_pod(pod.metadata.name, "kube-system")
        logger.info(
            "pod network: %s", ", ".join(f"{n.metadata.name} {n.spec.pod_cidr}" for n in nodes)
        )

    def _advertise_gpus(self) -> None:
        """One nvidia.com/gpu on each worker, patched into its status as a device plugin does."""
        core = self._core()
        for node in core.list_node(label_selector="!node-role.kubernetes.io/control-plane").items:
            core.patch_node_status(
                node.metadata.name,
                {
                    "status": {
                        "capacity": {GPU: GPUS_PER_WORKER},
                        "allocatable": {GPU: GPUS_PER_WORKER},
                    }
                },
            )

    def node_diagnosis(self) -> str:
        """Why a node is not Ready, in plain words: the tail of kubelet's and containerd's logs."""
        try:
            node = docker.from_env(timeout=30).containers.get(self.node)
        except DockerException as error:
            return f"The node container {self.node} cannot be read ({error.__class__.__name__})."
        if node.status != "running":
            output = node.logs(tail=LOG_LINES).decode(errors="replace")
            return (
                f"The node container {self.node} is {node.status}; its last output:\n"
                f"{textwrap.indent(output, '  ')}"
            )
        summary, sections = [], []
        for unit, role in (
            ("kubelet", "the agent that starts pods"),
            ("containerd", "the container runtime"),
        ):
            _, output = node.exec_run(
                ["journalctl", "-u", unit, "-n", str(LOG_LINES), "--no-pager", "-o", "cat"]
            )
            lines = output.decode(errors="replace").rstrip().splitlines()
            errors = [line for line in lines if KLOG_ERROR.match(line) or "level=error" in line]
            summary.append(
                f"{unit}'s last error: {errors[-1].strip()[:300]}"
                if errors
                else f"{unit} logged no error in its last {LOG_LINES} lines"
            )
            sections.append(
                f"Last {LOG_LINES} lines from {unit}, {role} "
                f"(`docker exec {self.node} journalctl -u {unit}`):\n"
                + textwrap.indent("\n".join(lines), "  ")
            )
        return "\n".join(summary) + "\n\n" + "\n\n".join(sections)

    def down(self) -> None:
        if binaries.find("kind") is None or dockerengine.unreachable_reason() or not self.exists():
            logger.info("No kind cluster %r to delete.", self.cluster)
            return
        self._kind("delete", "cluster", "--name", self.cluster, what="kind delete cluster")
        logger.info("Deleted kind cluster %r.", self.cluster)


def _exec(container, command: list[str]) -> None:
    """Run `command` in a node container; a failure raises with its output."""
    code, output = container.exec_run(command)
    if code != 0:
        raise ClusterError(
            f"{' '.join(command)} failed on {container.name}: "
            f"{output.decode(errors='replace').strip()}"
        )


def _put_file(container, path: Path, data: bytes) -> None:
    """Write one file into a node container (the Docker API copies tar archives)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        entry = tarfile.TarInfo(path.name)
        entry.size, entry.mode = len(data), 0o644
        tar.addfile(entry, io.BytesIO(data))
    if not container.put_archive(str(path.parent), archive.getvalue()):
        raise ClusterError(f"could not write {path} on {container.name}")
