"""Where a benchmark's CPU went: each process's core-seconds, summed by the component it belongs to.

A figure that differs between machines is traced by its parts: the practice cluster's control plane
(found by name and its work folder), its pod runtime (the router and every process its launcher
started), and the grading tree under this process, classified by its place in the tree (the fork
servers' forks keep their server's command line, so a worker and a kernel look alike by name).
A light thread samples the processes; one that ended counts with its last sample, and what a
parent reaped that no sample saw (a kernel's short `kubectl`, the end of a worker) counts with
the parent. What no process here accounts for (other work on the machine, samples missed) is
printed as such, so the total stays the machine's.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

import psutil

from autograder.grading.classrun import feedback
from autograder.grading.kernel import jail
from autograder.grading.worker import autograde
from autograder.practice.cluster import Practice
from autograder.practice.supervise import router_pid
from autograder.providers.choice import choose

API_SERVER, ETCD, CONTROLLERS, PODS = "API server", "etcd", "controllers", "pods"
KERNELS, WORKER, FEEDBACK, CLASS_RUN = "kernels", "worker", "feedback", "class run"
SAMPLING, ATTRIBUTED = "sampling", "all of these"
UNATTRIBUTED, MACHINE = "unattributed", "machine busy"
COMPONENTS = (API_SERVER, ETCD, CONTROLLERS, PODS, KERNELS, WORKER, FEEDBACK, CLASS_RUN, SAMPLING)
CONTROL_PLANE = {
    "kube-apiserver": API_SERVER,
    "etcd": ETCD,
    "kube-controller-manager": CONTROLLERS,
    "kube-scheduler": CONTROLLERS,
    "kwok": CONTROLLERS,
    "kwok-controller": CONTROLLERS,
}
# How deep the worker sits below the first process naming its module: the server forks a child
# per client, which forks the worker; a client with no server becomes the worker. Deeper: kernels.
SERVED_WORKER_DEPTH, COLD_WORKER_DEPTH = 2, 0
# Seconds between samples: one reads every process on the machine (17 ms of CPU for 330 of them on
# a loaded 2-core machine); a process that lives shorter is seen through the parent that reaps it.
INTERVAL = 1.0

Key = tuple[int, float]  # a pid and its start time: one process, even once its pid is reused


@dataclass(frozen=True)
class Sample:
    """A process's CPU as last seen: its own (user + system) and that of the children it reaped."""

    pid: int
    parent: int
    started: float
    component: str
    own: float
    reaped: float

    @property
    def key(self) -> Key:
        return self.pid, self.started

    @property
    def cumulative(self) -> float:
        """What its parent's children times gain when the parent reaps it."""
        return self.own + self.reaped


def cluster_component(name: str, cmdline: Sequence[str], workdir: str) -> str | None:
    """The component of a practice cluster's control-plane process; None for any other process."""
    component = CONTROL_PLANE.get(name)
    return component if component and workdir in " ".join(cmdline) else None


def grading_component(lineage: Sequence[Sequence[str]]) -> str:
    """The component of a process below the class run, by the command lines of its line of descent.

    `lineage` runs from the class run's child down to the process. The first command line that
    names a grading program decides, with the process's depth below it (a fork keeps the name).
    """
    for index, cmdline in enumerate(lineage):
        below = len(lineage) - 1 - index
        if feedback.__name__ in cmdline:
            return FEEDBACK
        if jail.__name__ in cmdline:
            return KERNELS
        if autograde.WORKER_MODULE in cmdline:  # the worker server, a worker, or its client
            worker_depth = SERVED_WORKER_DEPTH if "--serve" in cmdline else COLD_WORKER_DEPTH
            return WORKER if below <= worker_depth else KERNELS
    return CLASS_RUN


def descendants(parents: Mapping[int, int], roots: Iterable[int]) -> dict[int, tuple[int, ...]]:
    """Each root and process below one, with its line of descent from the root's child to it."""
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: dict[int, tuple[int, ...]] = {}
    pending: list[tuple[int, tuple[int, ...]]] = [(root, ()) for root in roots if root in parents]
    while pending:
        pid, lineage = pending.pop()
        if pid not in found:
            found[pid] = lineage
            pending += [(child, (*lineage, child)) for child in children.get(pid, [])]
    return found


def attribute(
    baseline: Mapping[Key, Sample], last: Mapping[Key, Sample], alive: Iterable[Key]
) -> dict[str, float]:
    """Core-seconds per component from `baseline` to `last`; `alive`: the processes still running.

    A process counts its own CPU, and what it reaped beyond the ended children sampled on their own:
    those count themselves, the rest (too short to be sampled, or after their last sample) with it.
    """
    running = set(alive)
    ended: dict[int, list[Sample]] = {}
    for sample in last.values():
        if sample.key not in running:
            ended.setdefault(sample.parent, []).append(sample)
    split = dict.fromkeys(COMPONENTS, 0.0)
    for key, sample in last.items():
        before = baseline.get(key)
        own = sample.own - (before.own if before else 0.0)
        reaped = sample.reaped - (before.reaped if before else 0.0)
        seen = sum(
            child.cumulative
            for child in ended.get(sample.pid, [])
            if child.started >= sample.started
        )
        split[sample.component] = split.get(sample.component, 0.0) + own + max(0.0, reaped - seen)
    return split


def with_sampling(split: Mapping[str, float], sampling: float) -> dict[str, float]:
    """`split` with the sampler's own CPU taken out of the class run it ran in."""
    return {**split, CLASS_RUN: split.get(CLASS_RUN, 0.0) - sampling, SAMPLING: sampling}


def table(split: Mapping[str, float], busy: float, submissions: int) -> str:
    """Core-seconds per submission by component, their sum, the rest, and the machine's."""
    count = max(1, submissions)
    rows = [(name, split.get(name, 0.0)) for name in COMPONENTS]
    attributed = sum(split.values())
    rows += [(ATTRIBUTED, attributed), (UNATTRIBUTED, busy - attributed), (MACHINE, busy)]
    return "\n".join(f"    {name:<16} {seconds / count:6.1f} core-s" for name, seconds in rows)


def busy_core_seconds() -> float:
    """CPU time the whole machine has been busy, summed over its cores: every process's."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + times.steal


def cluster_processes(provider: str | None) -> tuple[dict[int, str], list[int]]:
    """The practice cluster's control-plane processes with their components; its pod runtime's root.

    Another provider's cluster runs elsewhere (kind's in containers): its CPU stays unattributed.
    """
    practice = choose(provider)
    if not isinstance(practice, Practice):
        return {}, []
    workdir = str(practice.workdir)
    control = {}
    for process in psutil.process_iter(["name", "cmdline"]):
        name, cmdline = process.info["name"] or "", process.info["cmdline"] or []
        if component := cluster_component(name, cmdline, workdir):
            control[process.pid] = component
    router = router_pid(practice.context)
    return control, [router] if router else []


class Sampler:
    """While its block runs: the grading tree, the pod runtime and the control plane, sampled."""

    def __init__(
        self,
        control: Mapping[int, str] | None = None,
        pods: Iterable[int] = (),
        interval: float = INTERVAL,
    ) -> None:
        self.control, self.pods, self.interval = dict(control or {}), list(pods), interval
        self.root = os.getpid()
        self.baseline: dict[Key, Sample] = {}
        self.last: dict[Key, Sample] = {}
        self.split: dict[str, float] = {}
        self.busy = 0.0
        self._sampling = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self.busy = busy_core_seconds()
        self.baseline = self._tick()
        self.last = dict(self.baseline)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join()
        final = self._tick()
        self.last.update(final)
        self.busy = busy_core_seconds() - self.busy
        self.split = with_sampling(attribute(self.baseline, self.last, final), self._sampling)

    def _run(self) -> None:
        started = time.thread_time()
        while not self._stopping.wait(self.interval):
            self.last.update(self._tick())
        self._sampling = time.thread_time() - started

    def _tick(self) -> dict[Key, Sample]:
        """One sample of every process measured, each with its component."""
        parents = {process.pid: process.info["ppid"] for process in psutil.process_iter(["ppid"])}
        pods = descendants(parents, self.pods)  # the router's, even when this process started it
        components = dict.fromkeys(pods, PODS)
        commands: dict[int, list[str]] = {}
        for pid, lineage in descendants(parents, [self.root]).items():
            if not pods.keys() & {pid, *lineage}:
                components[pid] = grading_component([_cmdline(step, commands) for step in lineage])
        components.update({pid: name for pid, name in self.control.items() if pid in parents})
        samples = (_sample(pid, parents[pid], component) for pid, component in components.items())
        return {sample.key: sample for sample in samples if sample is not None}


def _cmdline(pid: int, known: dict[int, list[str]]) -> list[str]:
    """A process's command line, read once per sample; empty once it is gone."""
    if pid not in known:
        try:
            known[pid] = psutil.Process(pid).cmdline()
        except psutil.Error:
            known[pid] = []
    return known[pid]


def _sample(pid: int, parent: int, component: str) -> Sample | None:
    """The process's CPU now; None once it is gone (its last sample then counts)."""
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times, started = process.cpu_times(), process.create_time()
    except psutil.Error:
        return None
    return Sample(
        pid,
        parent,
        started,
        component,
        times.user + times.system,
        times.children_user + times.children_system,
    )
