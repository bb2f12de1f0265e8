"""`bench grade`'s CPU split: which component a process belongs to, how its core-seconds add up."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from autograder.bench import cpu
from autograder.bench.cpu import Sample
from autograder.grading.classrun import feedback
from autograder.grading.kernel import jail
from autograder.grading.worker import autograde
from autograder.shared import processes, waiting

PYTHON = sys.executable
# The command lines as the class run, the worker and the kernelspec start them.
WORKERS, KERNELS = "/tmp/workers-x/server/workers.sock", "/tmp/kernelspec-x/server/kernels.sock"
SERVER = [PYTHON, "-I", "-m", autograde.WORKER_MODULE, "--serve", WORKERS]
CLIENT = [
    PYTHON,
    "-I",
    "-m",
    "autograder.shared.forkserver",
    "--socket",
    WORKERS,
    "--module",
    autograde.WORKER_MODULE,
    "--",
    "--request",
    "{}",
]
COLD_WORKER = [PYTHON, "-I", "-m", autograde.WORKER_MODULE, "--request", "{}"]
JAIL_CLIENT = [
    PYTHON,
    "-I",
    "-m",
    jail.__name__,
    "--server",
    KERNELS,
    "--",
    PYTHON,
    "-P",
    "-m",
    jail.KERNEL_MODULE,
    "-f",
    "/tmp/kernel.json",
]
RENDERER = [
    PYTHON,
    "-I",
    "-m",
    feedback.__name__,
    "--config",
    "{}",
    "--assignment",
    "lesson01",
    "--",
    "student",
]
KUBECTL = ["kubectl", "get", "pods"]


@pytest.mark.parametrize(
    ("lineage", "component"),
    [
        ([SERVER], cpu.WORKER),  # the worker server
        ([SERVER] * 2, cpu.WORKER),  # its child for one client
        ([SERVER] * 3, cpu.WORKER),  # the worker
        ([SERVER] * 4, cpu.KERNELS),  # the worker's kernel server
        (
            [*[SERVER] * 3, JAIL_CLIENT],
            cpu.KERNELS,
        ),  # the kernelspec's command: a kernel server client
        ([SERVER] * 5, cpu.KERNELS),  # the kernel server's child for that client
        ([SERVER] * 6, cpu.KERNELS),  # a kernel: the jail's pid 1
        ([*[SERVER] * 6, KUBECTL], cpu.KERNELS),  # what the kernel runs
        ([CLIENT], cpu.WORKER),  # the class run's client, waiting for its worker
        ([COLD_WORKER], cpu.WORKER),  # that client become the worker, when no server listens
        ([COLD_WORKER, COLD_WORKER], cpu.KERNELS),  # that worker's kernel server
        ([RENDERER], cpu.FEEDBACK),
        ([["unshare", "--mount", "true"]], cpu.CLASS_RUN),  # the class run's own checks
        ([], cpu.CLASS_RUN),  # the class run itself
    ],
)
def test_grading_processes_are_told_apart_by_their_place_in_the_tree(
    lineage: list[list[str]], component: str
) -> None:
    assert cpu.grading_component(lineage) == component


def test_only_this_clusters_control_plane_counts() -> None:
    ours, theirs = "/work/a/kwok/clusters/ml-learning", "/work/b/kwok/clusters/ml-learning"
    apiserver = ["kube-apiserver", "--etcd-servers=http://127.0.0.1:2379", f"--cert-dir={ours}"]
    assert cpu.cluster_component("kube-apiserver", apiserver, ours) == cpu.API_SERVER
    assert cpu.cluster_component("kube-apiserver", apiserver, theirs) is None
    scheduler = ["kube-scheduler", f"--config={ours}/scheduler.yaml"]
    assert cpu.cluster_component("kube-scheduler", scheduler, ours) == cpu.CONTROLLERS
    assert cpu.cluster_component("python3", ["python3", f"{ours}/x.py"], ours) is None


def test_descendants_carry_their_line_of_descent() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 11, 13: 11, 20: 1}
    assert cpu.descendants(parents, [10]) == {10: (), 11: (11,), 12: (11, 12), 13: (11, 13)}
    assert cpu.descendants(parents, [99]) == {}


def sample(
    pid: int,
    parent: int,
    own: float,
    reaped: float = 0.0,
    component: str = cpu.KERNELS,
    started: float = 100.0,
) -> Sample:
    return Sample(pid, parent, started, component, own, reaped)


def split_of(baseline: list[Sample], last: list[Sample], alive: list[Sample]) -> dict[str, float]:
    return cpu.attribute(
        {s.key: s for s in baseline}, {s.key: s for s in last}, [s.key for s in alive]
    )


def test_a_child_too_short_to_be_sampled_counts_with_the_parent_that_reaped_it() -> None:
    kernel = sample(5, 4, own=3.0, reaped=0.4)  # its kubectl came and went between two samples
    assert split_of([], [kernel], [kernel])[cpu.KERNELS] == pytest.approx(3.4)


def test_a_sampled_child_that_its_parent_reaped_counts_once() -> None:
    kubectl = sample(6, 5, own=0.3)  # its last sample; it ran 0.1 s more before it ended
    kernel = sample(5, 4, own=3.0, reaped=0.4)
    assert split_of([], [kernel, kubectl], [kernel])[cpu.KERNELS] == pytest.approx(3.4)


def test_children_no_one_waits_for_count_with_their_last_sample() -> None:
    server = sample(2, 1, own=1.0, component=cpu.WORKER)  # a fork server: children reap themselves
    worker = sample(3, 2, own=5.0, component=cpu.WORKER)
    assert split_of([], [server, worker], [server])[cpu.WORKER] == pytest.approx(6.0)


def test_a_process_running_before_the_measurement_counts_only_what_it_used_in_it() -> None:
    before = sample(7, 1, own=100.0, reaped=20.0, component=cpu.API_SERVER)
    after = sample(7, 1, own=104.0, reaped=20.0, component=cpu.API_SERVER)
    assert split_of([before], [after], [after])[cpu.API_SERVER] == pytest.approx(4.0)


def test_a_child_whose_pid_an_older_process_held_is_not_taken_from_it() -> None:
    parent = sample(8, 1, own=1.0, reaped=0.5, started=200.0)
    stale = sample(9, 8, own=0.5, started=150.0)  # pid 9 ran before pid 8 was even started
    assert split_of([], [parent, stale], [parent])[cpu.KERNELS] == pytest.approx(2.0)


def test_the_table_puts_what_no_component_used_in_unattributed() -> None:
    split = {**dict.fromkeys(cpu.COMPONENTS, 0.0), cpu.KERNELS: 6.0, cpu.API_SERVER: 2.0}
    lines = cpu.table(split, busy=20.0, submissions=2).splitlines()
    rows = {line[:20].strip(): float(line.split()[-2]) for line in lines}
    assert rows[cpu.KERNELS] == 3.0 and rows[cpu.API_SERVER] == 1.0
    assert rows[cpu.ATTRIBUTED] == 4.0 and rows[cpu.UNATTRIBUTED] == 6.0
    assert rows[cpu.MACHINE] == 10.0


def test_the_samplers_own_cpu_is_taken_from_the_class_run() -> None:
    split = cpu.with_sampling({cpu.CLASS_RUN: 5.0, cpu.KERNELS: 1.0}, sampling=0.5)
    assert split[cpu.CLASS_RUN] == 4.5 and split[cpu.SAMPLING] == 0.5 and split[cpu.KERNELS] == 1.0


TICK = 0.02  # the kernel counts CPU in clock ticks: a sample may read one short of what was used
BURN = (
    "import sys, time\n"
    "while time.process_time() < float(sys.argv[1]): pass\n"
    "time.sleep(float(sys.argv[2]))\n"
)


def burn(seconds: float, then_sleep: float, *args: str) -> None:
    """A child that uses `seconds` of CPU, idles, ends, and is reaped by this process."""
    subprocess.run([PYTHON, "-c", BURN, str(seconds), str(then_sleep), *args], check=True)


def test_a_child_that_ends_unsampled_counts_for_the_class_run_that_reaped_it() -> None:
    with cpu.Sampler(interval=3600) as sampler:  # no sample between the first and the last
        burn(0.5, 0)
    assert sampler.split[cpu.CLASS_RUN] >= 0.5 - TICK


def test_a_sampled_child_counts_for_its_component_and_once() -> None:
    with cpu.Sampler(interval=0.1) as sampler:
        burn(0.5, 1.0, feedback.__name__)  # named as the renderer; its samples see all its CPU
    assert sampler.split[cpu.FEEDBACK] >= 0.5 - TICK
    assert sampler.split[cpu.CLASS_RUN] < 0.3  # not its CPU a second time, reaped


IDLE_AFTER_BURNING = (
    "import sys, time\n"
    "sys.stdin.readline()\n"
    "while time.process_time() < 0.6: pass\n"  # the kernel's ticks may show 0.59
    "time.sleep(600)\n"
)
IN_A_CHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', sys.argv[1]])"


def burnt(process: psutil.Process) -> bool:
    """Whether `process` or one below it has used half a CPU-second, as a sample sees it."""
    return any(
        sum(one.cpu_times()[:2]) >= 0.5 for one in [process, *process.children(recursive=True)]
    )


def burn_and_stay(process: subprocess.Popen) -> None:
    """Let `process` (IDLE_AFTER_BURNING, or its parent) burn, and wait until it has; it stays."""
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    process.stdin.flush()
    assert waiting.poll(lambda: burnt(psutil.Process(process.pid)), bool, timeout=45, interval=0.05)


def test_a_process_deep_in_the_tree_counts_for_what_its_ancestor_is() -> None:
    with cpu.Sampler(interval=3600) as sampler:  # the last sample alone sees the grandchild's CPU
        command = [PYTHON, "-c", IN_A_CHILD, IDLE_AFTER_BURNING, feedback.__name__]
        renderer = subprocess.Popen(command, stdin=subprocess.PIPE)
        try:
            burn_and_stay(renderer)
        except BaseException:
            processes.kill_tree(renderer.pid)
            raise
    processes.kill_tree(renderer.pid)
    renderer.wait()
    assert sampler.split[cpu.FEEDBACK] >= 0.5


def test_the_pod_runtime_counts_as_pods_even_when_this_process_started_it() -> None:
    router = subprocess.Popen([PYTHON, "-c", IDLE_AFTER_BURNING], stdin=subprocess.PIPE)
    try:
        with cpu.Sampler(pods=[router.pid], interval=3600) as sampler:
            burn_and_stay(router)
    finally:
        processes.kill_tree(router.pid)
        router.wait()
    assert sampler.split[cpu.PODS] >= 0.4  # half a second, less its start before the first sample
    assert sampler.split[cpu.CLASS_RUN] < 0.3
