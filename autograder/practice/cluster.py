"""The practice cluster: a real control plane started by kwokctl, with nodes simulated by kwok.

kube-apiserver, etcd, kube-controller-manager and kube-scheduler are the real programs, so
Deployments, ReplicaSets, rollouts, Services and Endpoints are the real controllers' work;
kwok registers the nodes; the lab's pod runtime (autograder/practice) plays their kubelets, running
each pod's containers as processes of the image's app. No Docker is needed.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import yaml
from kubernetes import client, utils

from autograder import MANIFESTS
from autograder.practice import catalog, dockerimage
from autograder.practice.catalog import wait_routed
from autograder.practice.container import isolation_summary
from autograder.practice.supervise import ensure_router, router_pid, stop_router
from autograder.shared import binaries, k8s, kubeconfig, ports
from autograder.shared.pins import PINS, cache_root
from autograder.shared.provider import CLUSTER_NAME, ClusterError, Lab, run
from autograder.shared.waiting import poll

logger = logging.getLogger(__name__)

PRACTICE_MANIFESTS = MANIFESTS / "practice"
NODES_MANIFEST = PRACTICE_MANIFESTS / "nodes.yaml"
GPU_NODES_MANIFEST = PRACTICE_MANIFESTS / "gpu-nodes.yaml"
KWOKCTL_CONFIG = PRACTICE_MANIFESTS / "kwokctl.yaml"
CONTEXT_PREFIX = "kwok-"  # kwokctl's: a cluster's context is kwok-<cluster>
CONFIG_STAMP = "lab-config.sha256"  # in the cluster's workdir: what the cluster was made from


def config_digest() -> str:
    """What a practice cluster is made from: kwokctl's config, node manifests, pinned versions."""
    digest = hashlib.sha256(
        " ".join(sorted(f"{p.name}-{p.version}" for p in PINS.values())).encode()
    )
    for path in (KWOKCTL_CONFIG, NODES_MANIFEST, GPU_NODES_MANIFEST):
        digest.update(path.read_bytes())
    return digest.hexdigest()


# Every port kwokctl's binary runtime would otherwise pick itself: it counts down from 32767 to
# the first free one, so two clusters created at the same moment (two test workers, two students
# of a hub logging in together) would pick the same ones and the second would fail to start.
LISTEN_PORTS = (
    "etcdPort",
    "etcdPeerPort",
    "kubeApiserverPort",
    "kubeControllerManagerPort",
    "kubeSchedulerPort",
    "kwokControllerPort",
)


def cluster_config(workdir: Path, listen_ports: list[int]) -> list[dict]:
    """kwokctl's config for one cluster: its own ports (etcd's TLS ones too) and certificates."""
    chosen = dict(zip(LISTEN_PORTS, listen_ports, strict=True))
    fields = {
        "etcd_port": chosen["etcdPort"],
        "etcd_peer_port": chosen["etcdPeerPort"],
        "pki": workdir / "pki",
    }
    documents = [
        document for document in yaml.safe_load_all(KWOKCTL_CONFIG.read_text()) if document
    ]
    for document in documents:
        if document["kind"] == "KwokctlConfiguration":
            document["options"] |= chosen
            for patch in document["componentsPatches"]:
                for argument in patch.get("extraArgs", []):
                    argument["value"] = argument["value"].format(**fields)
    return documents


def kwok_workdir() -> Path:
    """Where kwokctl keeps its clusters (`$KWOK_WORKDIR`, as kwokctl itself reads it)."""
    return Path(os.environ.get("KWOK_WORKDIR") or Path.home() / ".kwok")


def practice_of(context: str) -> Practice | None:
    """The practice cluster a context reaches (kwokctl names it `kwok-<cluster>`); else None."""
    if not context.startswith(CONTEXT_PREFIX):
        return None
    return Practice(cluster=context.removeprefix(CONTEXT_PREFIX))


def kubeconfig_of(context: str) -> Path | None:
    """A practice cluster's own kubeconfig: right even when ~/.kube/config lacks the context."""
    practice = practice_of(context)
    return practice.kubeconfig_file if practice and practice.kubeconfig_file.is_file() else None


@dataclass
class Practice:
    """kwokctl's binary runtime: the processes run on this machine, no containers."""

    name: str = "practice"
    required_binaries: tuple[str, ...] = binaries.PRACTICE_BINARIES
    cluster: str = CLUSTER_NAME
    gpu_nodes: bool = True
    make_current: bool = True  # write the context into ~/.kube/config and switch kubectl to it

    @property
    def context(self) -> str:
        return f"{CONTEXT_PREFIX}{self.cluster}"

    @property
    def workdir(self) -> Path:
        return kwok_workdir() / "clusters" / self.cluster

    @property
    def kubeconfig_file(self) -> Path:
        return self.workdir / "kubeconfig.yaml"

    loads_images_only = True  # no registry: an image reaches the nodes only by load_into_cluster

    def before_forward(self, lab: Lab, selector: str, timeout: float) -> None:
        ensure_router(lab.context)
        wait_routed(lab, selector, timeout)

    def loads_images(self, lab: Lab) -> bool:
        return True

    def load_image(
        self, lab: Lab, tag: str, context: Path | None, build_args: dict[str, str]
    ) -> None:
        """Build `context` into the namespace's own images; without one, serve Docker's `tag`."""
        if context is not None:
            catalog.push(lab.core, lab.namespace, tag, context, build_args)
            logger.info(
                "built %s from %s for namespace %s of the practice cluster",
                tag,
                context,
                lab.namespace,
            )
        else:
            entry, size = dockerimage.entry(tag)
            catalog.register_image(lab.core, tag, entry)
            catalog.record_on_nodes(lab.core, tag, size)
            logger.info("recorded %s on the practice cluster's nodes", tag)
        ensure_router(lab.context)

    def answers(self) -> bool:
        """Whether the cluster exists and its API server answers."""
        return self.exists() and kubeconfig.answers(self.context, config_file=self.kubeconfig_file)

    def unusable_reason(self) -> str | None:
        missing = [name for name in self.required_binaries if binaries.find(name) is None]
        if missing and not shutil.which("go"):
            return binaries.how_to_get(missing)
        return None

    def exists(self) -> bool:
        return (self.workdir / "kwok.yaml").is_file()

    def status(self) -> str:
        if not self.exists():
            return f"practice cluster {self.cluster!r}: not created"
        state = "answers" if self.answers() else "does not answer"
        return f"practice cluster {self.cluster!r}: created, API {state} (context {self.context})"

    def processes(self) -> list[psutil.Process]:
        """Every process the cluster runs.

        Its components (found by their workdir), the pod runtime and every container process it
        started.
        """
        marker = str(self.workdir)
        processes = [
            process
            for process in psutil.process_iter(["cmdline"])
            if marker in " ".join(process.info["cmdline"] or [])
        ]
        runtime = router_pid(self.context)
        if runtime:
            processes += [
                psutil.Process(runtime),
                *psutil.Process(runtime).children(recursive=True),
            ]
        return list({process.pid: process for process in processes}.values())

    def _kwokctl(self, *args: str, timeout: float = 300, what: str = "") -> str:
        paths = binaries.ensure(["kwokctl", "kubectl"])
        # kwokctl takes kubectl from PATH first: put the pinned one there.
        # It adds its context to the user's kubeconfig, not to the lab's own.
        env = {
            **kubeconfig.user_environment(),
            "PATH": f"{paths['kubectl'].parent}{os.pathsep}{os.environ['PATH']}",
        }
        return run([str(paths["kwokctl"]), *args], env=env, timeout=timeout, what=what).stdout

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One `up`/`down` at a time per cluster, across processes (tests, notebooks, CLI)."""
        self.workdir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.workdir.parent / f".{self.cluster}.lock", "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # A hub starts a student's cluster at log-in: the first notebook
                # waits for it, and says so.
                logger.info(
                    "Practice cluster %r is being started or stopped by another process (its "
                    "log: %s); waiting for it...",
                    self.cluster,
                    cache_root() / "practice-at-start.log",
                )
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def up(self) -> None:
        with self._exclusive():
            self._up()
            # The pod runtime is the nodes' kubelet: without it no pod would start.
            ensure_router(self.context)
            logger.info(isolation_summary())

    def _up(self) -> None:
        if self.exists() and self._stamp() != config_digest():
            # kwok reads its Stages only at creation: a cluster made by an older lab would keep
            # simulating pods the old way.
            logger.info(
                "Practice cluster %r was made from another configuration; recreating it.",
                self.cluster,
            )
            stop_router(self.context)
            self._delete_quietly()
        if self.exists():
            if self.answers():
                logger.info("Practice cluster %r is already running.", self.cluster)
                self._ensure_context()
                return
            logger.info(
                "Practice cluster %r exists but does not answer; restarting it.", self.cluster
            )
            try:
                self._kwokctl(
                    "start", "cluster", "--name", self.cluster, what="kwokctl start cluster"
                )
                self._wait_until_ready()
                self._ensure_context()
                return
            except ClusterError as error:
                logger.info(
                    "Restart failed (%s); recreating the cluster.", str(error).splitlines()[0]
                )
                self._delete_quietly()
        self._create()

    def _create(self) -> None:
        paths = binaries.ensure(self.required_binaries)
        if self.workdir.exists():
            logger.info("Removing the remains of a half-created cluster in %s.", self.workdir)
            self._delete_quietly()
            shutil.rmtree(self.workdir, ignore_errors=True)
        logger.info(
            "Starting practice cluster %r (kube-apiserver, etcd, controller-manager, scheduler "
            "and kwok as local processes)...",
            self.cluster,
        )
        started = time.monotonic()
        try:
            with self._config_file() as config:
                self._kwokctl(
                    "create",
                    "cluster",
                    "--name",
                    self.cluster,
                    "--runtime",
                    "binary",
                    "--config",
                    config,
                    "--kube-apiserver-binary",
                    str(paths["kube-apiserver"]),
                    "--kube-controller-manager-binary",
                    str(paths["kube-controller-manager"]),
                    "--kube-scheduler-binary",
                    str(paths["kube-scheduler"]),
                    "--kwok-controller-binary",
                    str(paths["kwok"]),
                    "--etcd-binary",
                    str(paths["etcd"]),
                    "--wait",
                    "2m",
                    "--timeout",
                    "4m",
                    *([] if self.make_current else ["--kubeconfig", ""]),
                    timeout=300,
                    what="kwokctl create cluster",
                )
            self._wait_until_ready()
        except BaseException:
            # Ctrl-C or a failure halfway leaves no half-made cluster behind.
            self._delete_quietly()
            raise
        (self.workdir / CONFIG_STAMP).write_text(config_digest())
        logger.info(
            "Practice cluster ready in %.1f s (kubectl context %s).",
            time.monotonic() - started,
            self.context,
        )

    @contextmanager
    def _config_file(self) -> Iterator[str]:
        """This cluster's kwokctl config, in a file for as long as `kwokctl create` reads it."""
        with tempfile.NamedTemporaryFile("w", prefix="kwokctl-", suffix=".yaml") as config:
            yaml.safe_dump_all(
                cluster_config(self.workdir, ports.free_ports(len(LISTEN_PORTS))), config
            )
            config.flush()
            yield config.name

    def _wait_until_ready(self, timeout: float = 120) -> None:
        """Nodes registered and Ready, and the default ServiceAccount made (pods need it)."""
        started = time.monotonic()
        if not poll(self.answers, bool, timeout):
            raise ClusterError(
                f"the practice API server did not answer within {timeout:.0f} s; "
                f"see the logs in {self.workdir / 'logs'}"
            )
        remaining = max(1.0, timeout - (time.monotonic() - started))
        api = kubeconfig.api_client(self.context, config_file=self.kubeconfig_file)
        try:
            self._apply_nodes(api)
            core = client.CoreV1Api(api)
            k8s.wait_for(
                core.list_node,
                until=lambda nodes: nodes and all(map(k8s.condition_true, nodes)),
                timeout=remaining,
                what="the simulated nodes becoming Ready (see "
                f"{self.workdir / 'logs' / 'kwok-controller.log'})",
            )
            k8s.wait_for(
                core.list_namespaced_service_account,
                "default",
                field_selector="metadata.name=default",
                until=bool,
                timeout=remaining,
                what="the default ServiceAccount",
            )
        except k8s.WaitTimeout as error:
            raise ClusterError(str(error)) from None
        finally:
            api.close()

    def _apply_nodes(self, api: client.ApiClient) -> None:
        manifests = [NODES_MANIFEST] + ([GPU_NODES_MANIFEST] if self.gpu_nodes else [])
        core = client.CoreV1Api(api)
        existing = {node.metadata.name for node in core.list_node().items}
        for manifest in manifests:
            for node in yaml.safe_load_all(manifest.read_text()):
                if node and node["metadata"]["name"] not in existing:
                    utils.create_from_dict(api, node)

    def _ensure_context(self) -> None:
        """`cluster up` leaves kubectl on this cluster, as `kind create cluster` does."""
        if self.make_current and kubeconfig.current_context() != self.context:
            kubectl = binaries.ensure(["kubectl"])["kubectl"]
            run(
                [str(kubectl), "config", "use-context", self.context],
                what="kubectl config use-context",
            )

    def _stamp(self) -> str:
        path = self.workdir / CONFIG_STAMP
        return path.read_text() if path.is_file() else ""

    def _delete_quietly(self) -> None:
        try:
            self._kwokctl("delete", "cluster", "--name", self.cluster, timeout=120)
        except ClusterError:
            pass

    def stop(self) -> None:
        """Stop the cluster's processes but keep its data, as a reboot would."""
        with self._exclusive():
            if not self.exists():
                return
            self._kwokctl("stop", "cluster", "--name", self.cluster, what="kwokctl stop cluster")
            logger.info("Stopped practice cluster %r; `cluster up` restarts it.", self.cluster)

    def down(self) -> None:
        with self._exclusive():
            if not self.exists():
                logger.info("No practice cluster %r to delete.", self.cluster)
                return
            self._kwokctl(
                "delete",
                "cluster",
                "--name",
                self.cluster,
                timeout=120,
                what="kwokctl delete cluster",
            )
            stop_router(self.context)
            logger.info("Deleted practice cluster %r.", self.cluster)
