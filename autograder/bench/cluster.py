"""Benchmarks that print figures (never pass/fail): cluster start, rollout speed, memory."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import psutil

from autograder.demo import lesson_flow
from autograder.lab import binaries
from autograder.lab.cluster import attach
from autograder.lab.practice import Practice


def _seconds(action: Callable[[], object]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def practice_rss_mib(practice: Practice) -> float:
    """Resident memory of every process the practice cluster runs (found by its workdir)."""
    marker = str(practice.workdir)
    total = 0
    for process in psutil.process_iter(["cmdline", "memory_info"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if marker in cmdline and process.info["memory_info"]:
            total += process.info["memory_info"].rss
    return total / 2**20


def bench_cluster(runs: int = 3) -> dict[str, float]:
    """Cold build (when binaries are missing), create, restart, 3/3 ready, rollout, undo, memory.

    Runs on a cluster of its own, so a student's or a test's `ml-learning` cluster is left alone.
    """
    practice = Practice(cluster="lab-bench", make_current=False)
    missing = [name for name in binaries.PRACTICE_BINARIES if binaries.find(name) is None]
    figures: dict[str, float] = {}
    if missing:
        figures["cold build of missing binaries (s)"] = _seconds(
            lambda: binaries.ensure(binaries.PRACTICE_BINARIES))
    samples: dict[str, list[float]] = {}
    for run in range(runs):
        practice.down()
        samples.setdefault("create cluster, binaries cached (s)", []).append(
            _seconds(lambda: practice.up()))
        lab = attach(practice, namespace=f"bench-{run}")
        steps = {step.name: step.seconds for step in lesson_flow(lab)}
        lab.core.delete_namespace(lab.namespace)
        samples.setdefault("deploy to 3/3 ready (s)", []).append(steps["apply deployment + service, 3/3 ready"])
        samples.setdefault("rolling update to v2 (s)", []).append(steps["rolling update to ml-api:v2"])
        samples.setdefault("rollout undo (s)", []).append(steps["rollout undo"])
    figures.update({name: statistics.median(values) for name, values in samples.items()})
    figures["resident memory of the cluster (MiB)"] = practice_rss_mib(practice)
    practice.stop()
    figures["restart a stopped cluster (s)"] = _seconds(lambda: practice.up())
    practice.down()
    return figures

