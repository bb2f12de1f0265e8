"""Benchmarks that print figures (never pass/fail): cluster start, rollout speed, memory."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import psutil

from autograder import MANIFESTS
from autograder.course import actions
from autograder.demo import DEPLOYMENT, lesson_flow
from autograder.lab import workloads as w
from autograder.lab.cluster import attach
from autograder.practice.cluster import Practice
from autograder.shared import binaries
from autograder.shared.provider import Lab

logger = logging.getLogger(__name__)

CONTROL_PLANE = (
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
)


def _seconds(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _summed(processes: list[psutil.Process], measure: Callable[[psutil.Process], float]) -> float:
    """`measure` summed over `processes`, skipping those gone meanwhile (an exited container)."""
    total = 0.0
    for process in processes:
        try:
            total += measure(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def _memory_mib(practice: Practice, field: str) -> float:
    def memory(process: psutil.Process) -> float:
        return getattr(
            process.memory_full_info() if field == "pss" else process.memory_info(), field
        )

    return _summed(practice.processes(), memory) / 2**20


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def practice_rss_mib(practice: Practice) -> float:
    """The cluster's RSS summed: pages shared (the containers' Python) count once per process."""
    return _memory_mib(practice, "rss")


def practice_pss_mib(practice: Practice) -> float:
    """The cluster's real resident memory: each shared page split among the processes mapping it."""
    others = [
        process.pid
        for process in psutil.process_iter(["name", "cmdline"])
        if process.info["name"] in CONTROL_PLANE
        and str(practice.workdir) not in " ".join(process.info["cmdline"] or [])
    ]
    if others:
        logger.warning(
            "another cluster's control plane runs here (pids %s): it shares the binaries' pages, "
            "so the PSS figure reads low (by about 130 MiB); stop that cluster for a true figure",
            ", ".join(map(str, others)),
        )
    return _memory_mib(practice, "pss")


def idle_cpu_percent(practice: Practice, seconds: float = 10.0) -> float:
    """The cluster's idle CPU in % of one core: what an idle student's Binder pays for it."""
    processes = practice.processes()
    before = _summed(processes, _cpu_seconds)
    # Nothing to wait for: the figure is what the cluster burns over a span
    # in which nothing happens.
    time.sleep(seconds)
    return 100 * (_summed(processes, _cpu_seconds) - before) / seconds


def with_readiness_probe(documents: list[dict]) -> list[dict]:
    """The lesson's Deployment with a readinessProbe on /health (kept when the manifest has one)."""
    container = documents[0]["spec"]["template"]["spec"]["containers"][0]
    container.setdefault(
        "readinessProbe", {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 1}
    )
    return documents


def ready_and_memory(practice: Practice, lab: Lab) -> dict[str, float]:
    """Seconds from apply to 3/3 Ready with a readiness probe; memory and idle CPU at 5 replicas."""
    documents = with_readiness_probe(
        w.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml")
    )
    seconds = _seconds(
        lambda: (w.apply(lab, documents), w.wait_for_rollout(lab, DEPLOYMENT, progress=False))
    )
    actions.scale(lab, DEPLOYMENT, 5)
    w.wait_for_rollout(lab, DEPLOYMENT, progress=False)
    return {
        "apply to 3/3 ready with a readinessProbe (s)": seconds,
        "resident memory, 5 replicas running, sum of RSS (MiB)": practice_rss_mib(practice),
        "resident memory, 5 replicas running, sum of PSS (MiB)": practice_pss_mib(practice),
        "CPU while idle, 5 replicas running (% of one core)": idle_cpu_percent(practice),
    }


def bench_cluster(runs: int = 3) -> dict[str, float]:
    """Cold build (when binaries are missing), create, restart, 3/3 ready, rollout, undo, memory.

    Runs on a cluster of its own, so a student's or a test's `ml-learning` cluster is left alone.
    """
    practice = Practice(cluster="lab-bench", make_current=False)
    missing = [name for name in binaries.PRACTICE_BINARIES if binaries.find(name) is None]
    figures: dict[str, float] = {}
    if missing:
        figures["cold build of missing binaries (s)"] = _seconds(
            lambda: binaries.ensure(binaries.PRACTICE_BINARIES)
        )
    samples: dict[str, list[float]] = {}
    for run in range(runs):
        practice.down()
        samples.setdefault("create cluster, binaries cached (s)", []).append(
            _seconds(lambda: practice.up())
        )
        lab = attach(practice, namespace=f"bench-{run}")
        steps = {step.name: step.seconds for step in lesson_flow(lab)}
        lab.core.delete_namespace(lab.namespace)
        samples.setdefault("deploy to 3/3 ready (s)", []).append(
            steps["apply deployment + service, 3/3 ready"]
        )
        samples.setdefault("rolling update to v2 (s)", []).append(
            steps["rolling update to ml-api:v2"]
        )
        samples.setdefault("rollout undo (s)", []).append(steps["rollout undo"])
    figures.update({name: statistics.median(values) for name, values in samples.items()})
    lab = attach(practice, namespace="bench-memory")
    figures.update(ready_and_memory(practice, lab))
    practice.stop()
    figures["restart a stopped cluster (s)"] = _seconds(lambda: practice.up())
    practice.down()
    return figures
