"""The pod runtime's clock-driven behaviour on a fake clock: back-offs, probe timing, grace periods.

No cluster and no real process: the runtime's own PodRuntime and Container run as the router runs
them, on a Node whose clock, launcher, prober and event recorder the test holds. A container's
process is a fake that ends when the test says (or a signal would end it) and notes each signal.
"""

from __future__ import annotations

import copy
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest
from kubernetes import client

from autograder.practice import probes
from autograder.practice.clock import Clock
from autograder.practice.node import Node
from autograder.practice.pod import PodRuntime

IMAGE = "ml-api:v1"
START = 1_000_000.0  # the fake monotonic clock's reading when a test begins
CRASHED = 1


class FakeClock(Clock):
    """A clock that moves only when the test moves it; its stamps follow it."""

    def __init__(self) -> None:
        self.now = START

    def monotonic(self) -> float:
        return self.now

    def stamp(self) -> str:
        return datetime.fromtimestamp(self.now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeProcess:
    """A container's main process: runs until the test or a signal ends it, noting every signal."""

    def __init__(self, pid: int, clock: FakeClock, ignores_sigterm: bool) -> None:
        self.pid, self.clock, self.ignores_sigterm = pid, clock, ignores_sigterm
        self.started_at = clock.now
        out_r, self._out_w = os.pipe()
        err_r, self._err_w = os.pipe()
        self.stdout, self.stderr = os.fdopen(out_r, "rb"), os.fdopen(err_r, "rb")
        self.returncode: int | None = None
        self.signals: list[tuple[float, int]] = []  # (when, which) received while it ran

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        return self.returncode

    def end(self, code: int) -> None:
        """The process exits: its output pipes close, so the runtime's log pumps finish."""
        if self.returncode is None:
            self.returncode = code
            os.close(self._out_w)
            os.close(self._err_w)

    def signal_group(self, number: int) -> None:
        if self.returncode is not None:
            return
        self.signals.append((self.clock.now - START, number))
        if number == signal.SIGKILL or (number == signal.SIGTERM and not self.ignores_sigterm):
            self.end(-number)


@dataclass
class FakeLauncher:
    """Starts fake processes; every one it started stays listed."""

    clock: FakeClock
    ignores_sigterm: bool = False
    started: list[FakeProcess] = field(default_factory=list)

    def spawn(
        self, argv: list[str], env: dict[str, str], cwd: Path, uid: int | None
    ) -> FakeProcess:
        process = FakeProcess(10_000_000 + len(self.started), self.clock, self.ignores_sigterm)
        self.started.append(process)
        return process


@dataclass
class FakeRecorder:
    """kubelet's events as (seconds since the start, reason, message)."""

    clock: FakeClock
    events: list[tuple[float, str, str]] = field(default_factory=list)

    def record(
        self, pod: client.V1Pod, reason: str, message: str, kind: str, container: str
    ) -> None:
        self.events.append((self.clock.now - START, reason, message))

    def times(self, reason: str) -> list[float]:
        return [when for when, why, _ in self.events if why == reason]


@dataclass
class FakeProber:
    """A probe's answer is whatever `healthy` says when it runs; each run's time is noted."""

    clock: FakeClock
    healthy: bool = True
    runs: list[float] = field(default_factory=list)

    def __call__(self, spec: client.V1Probe, target: probes.Target) -> tuple[bool, str]:
        self.runs.append(self.clock.now - START)
        return (True, "") if self.healthy else (False, "HTTP probe failed with statuscode: 500")


@dataclass
class Kubelet:
    """One pod on a node whose every part is the test's: `at(t)` is the router's pass at t s."""

    pod: client.V1Pod
    runtime: PodRuntime
    clock: FakeClock
    launcher: FakeLauncher
    events: FakeRecorder
    prober: FakeProber
    images: dict[str, dict]

    def at(self, seconds: float) -> None:
        self.clock.now = START + seconds
        self.runtime.sync(self.pod, self.images, self.clock.now)

    @property
    def process(self) -> FakeProcess:
        return self.launcher.started[-1]

    def status(self) -> dict:
        return self.runtime.containers[0].status()

    def waiting(self) -> str | None:
        state = self.status()["state"]["waiting"]
        return state["reason"] if state else None

    def delete(self, grace: int | None) -> None:
        """The pod as the router reads it after `kubectl delete`: a deletion timestamp and grace."""
        self.pod = copy.deepcopy(self.pod)
        self.pod.metadata.deletion_timestamp = datetime.fromtimestamp(self.clock.now, timezone.utc)
        self.pod.metadata.deletion_grace_period_seconds = grace


def make_pod(
    restart_policy: str = "Always", grace: int | None = None, **container: object
) -> client.V1Pod:
    spec = client.V1Container(name="app", image=container.pop("image", IMAGE), **container)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="web", namespace="class", uid="0c1a55e5"),
        spec=client.V1PodSpec(
            containers=[spec],
            restart_policy=restart_policy,
            termination_grace_period_seconds=grace,
            node_name="node-1",
        ),
    )


@pytest.fixture
def kubelet_for(tmp_path: Path) -> Iterator[Callable[..., Kubelet]]:
    """Builds the Kubelet of one pod; every fake process still running at the end is ended."""
    built: list[Kubelet] = []
    app = tmp_path / "image"
    app.mkdir()
    (app / "app.py").write_text("print('serving')\n")

    def build(pod: client.V1Pod, ignores_sigterm: bool = False) -> Kubelet:
        clock = FakeClock()
        launcher = FakeLauncher(clock, ignores_sigterm)
        events, prober = FakeRecorder(clock), FakeProber(clock)
        node = Node(launcher, events, clock, isolates=False, prober=prober)
        runtime = PodRuntime(pod, tmp_path / "pods" / str(len(built)), "10.244.0.2", node)
        built.append(
            Kubelet(
                pod,
                runtime,
                clock,
                launcher,
                events,
                prober,
                {IMAGE: {"app": app, "cmd": ["python", "app.py"]}},
            )
        )
        return built[-1]

    yield build
    for kubelet in built:
        for process in kubelet.launcher.started:
            process.end(0)


def crash_each_second(kubelet: Kubelet, until: float) -> tuple[list[float], list[float]]:
    """A container that exits 1 s after each start: the times of its starts and of its exits."""
    exits: list[float] = []
    for second in range(int(until) + 1):
        if (
            kubelet.launcher.started
            and kubelet.process.poll() is None
            and kubelet.process.started_at < START + second
        ):
            kubelet.process.end(CRASHED)
            exits.append(second)
        kubelet.at(second)
    return [process.started_at - START for process in kubelet.launcher.started], exits


def test_a_crashing_container_restarts_at_once_then_after_10_s_doubling_up_to_5_min(
    kubelet_for,
) -> None:
    kubelet = kubelet_for(make_pod())
    starts, exits = crash_each_second(kubelet, until=1000)
    assert [start - end for start, end in zip(starts[1:], exits)] == [
        0,
        10,
        20,
        40,
        80,
        160,
        300,
        300,
    ]
    assert kubelet.waiting() == "CrashLoopBackOff"
    assert kubelet.status()["restartCount"] == len(starts) - 1
    assert kubelet.status()["lastState"]["terminated"]["exitCode"] == CRASHED


def test_crash_loop_back_off_shows_while_the_container_waits_and_names_its_delay(
    kubelet_for,
) -> None:
    kubelet = kubelet_for(make_pod())
    starts, exits = crash_each_second(kubelet, until=32)  # the 3rd exit at 13 s: 20 s of back-off
    assert starts == [0, 1, 12] and exits == [1, 2, 13]
    assert kubelet.waiting() == "CrashLoopBackOff"
    assert kubelet.status()["state"]["waiting"]["message"].startswith(
        "back-off 20s restarting failed container=app"
    )
    assert kubelet.events.times("BackOff") == [2, 13]
    kubelet.at(33)
    assert kubelet.status()["state"]["running"] is not None and len(kubelet.launcher.started) == 4


@pytest.mark.parametrize(("ran", "then_waits"), [(599, 40), (600, 0)])
def test_the_back_off_is_forgotten_once_the_container_ran_ten_minutes(
    kubelet_for, ran: int, then_waits: int
) -> None:
    kubelet = kubelet_for(make_pod())
    starts = crash_each_second(kubelet, until=33)[0]  # started at 33 s, after 20 s of back-off
    assert starts[-1] == 33
    kubelet.process.end(CRASHED)
    kubelet.at(33 + ran)
    for second in range(34 + ran, 34 + ran + then_waits):
        kubelet.at(second)
    assert [process.started_at - START for process in kubelet.launcher.started][
        -1
    ] == 33 + ran + then_waits


def test_an_image_never_loaded_is_pulled_again_after_10_s_doubling_up_to_5_min(kubelet_for) -> None:
    kubelet = kubelet_for(make_pod(image="t-never-built:v1", image_pull_policy="IfNotPresent"))
    reasons = {}
    for second in range(1000):
        kubelet.at(second)
        reasons[second] = kubelet.waiting()
    assert kubelet.events.times("Pulling") == [0, 10, 30, 70, 150, 310, 610, 910]
    assert (reasons[0], reasons[1], reasons[9], reasons[10], reasons[11]) == (
        "ErrImagePull",
        "ImagePullBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
    )
    assert (
        kubelet.launcher.started == [] and kubelet.runtime.status("10.0.0.1")["phase"] == "Pending"
    )


def test_an_image_never_loaded_with_pull_policy_never_is_never_pulled(kubelet_for) -> None:
    kubelet = kubelet_for(make_pod(image="t-never-built:v1", image_pull_policy="Never"))
    for second in range(0, 400, 5):
        kubelet.at(second)
    assert kubelet.waiting() == "ErrImageNeverPull"
    assert kubelet.events.times("Pulling") == [] and kubelet.events.times("Failed") == [0]


def readiness(delay: int, period: int, failures: int) -> client.V1Probe:
    return client.V1Probe(
        http_get=client.V1HTTPGetAction(path="/health", port=8080),
        initial_delay_seconds=delay,
        period_seconds=period,
        failure_threshold=failures,
    )


def test_readiness_is_probed_after_its_initial_delay_each_period_and_fails_at_its_threshold(
    kubelet_for,
) -> None:
    kubelet = kubelet_for(make_pod(readiness_probe=readiness(delay=5, period=3, failures=2)))
    ready = {}
    for second in range(21):
        kubelet.prober.healthy = second < 10
        kubelet.at(second)
        ready[second] = kubelet.status()["ready"]
    assert kubelet.prober.runs == [5, 8, 11, 14, 17, 20]
    assert [second for second, value in ready.items() if value] == list(range(5, 14))
    assert kubelet.events.times("Unhealthy") == [11, 14, 17, 20]
    conditions = {
        entry["type"]: entry for entry in kubelet.runtime.status("10.0.0.1")["conditions"]
    }
    assert (conditions["Ready"]["status"], conditions["Ready"]["reason"]) == (
        "False",
        "ContainersNotReady",
    )
    assert kubelet.launcher.started[0].signals == [], "readiness never restarts a container"


def test_a_probe_without_period_runs_every_10_s_from_the_first_pass_after_the_start(
    kubelet_for,
) -> None:
    kubelet = kubelet_for(
        make_pod(readiness_probe=client.V1Probe(tcp_socket=client.V1TCPSocketAction(port=8080)))
    )
    for second in range(31):
        kubelet.at(second)
    assert kubelet.prober.runs == [1, 11, 21]


def test_a_failing_liveness_probe_stops_the_container_at_its_threshold_and_it_restarts(
    kubelet_for,
) -> None:
    kubelet = kubelet_for(
        make_pod(grace=30, liveness_probe=readiness(delay=2, period=1, failures=3))
    )
    kubelet.prober.healthy = False
    for second in range(10):
        kubelet.at(second)
    first, second_run = kubelet.launcher.started
    assert first.signals == [(4, signal.SIGTERM)], (
        "SIGTERM at the 3rd failure (2, 3, 4 s), no SIGKILL"
    )
    assert second_run.started_at - START == 5, "an exit after a first start restarts at once"
    assert kubelet.prober.runs == [2, 3, 4, 7, 8, 9], (
        "the new container's probe waits its initial delay"
    )
    assert kubelet.events.times("Killing") == [4, 9]
    assert kubelet.status()["lastState"]["terminated"]["exitCode"] == 128 + signal.SIGTERM


@pytest.mark.parametrize(
    ("spec_grace", "deletion_grace", "kill_after"),
    [
        (None, None, 30),  # kubelet's default
        (7, None, 7),  # the pod's terminationGracePeriodSeconds
        (30, 4, 4),  # `kubectl delete --grace-period=4` overrides it
    ],
)
def test_a_container_ignoring_sigterm_is_killed_once_the_grace_period_is_over(
    kubelet_for, spec_grace: int | None, deletion_grace: int | None, kill_after: int
) -> None:
    kubelet = kubelet_for(make_pod(grace=spec_grace), ignores_sigterm=True)
    kubelet.at(0)
    kubelet.delete(deletion_grace)
    for tenth in range(100, 10 * (10 + kill_after) + 6, 5):
        kubelet.at(tenth / 10)
        assert kubelet.runtime.finished() == (tenth / 10 > 10 + kill_after), f"at {tenth / 10} s"
    assert kubelet.process.signals == [(10, signal.SIGTERM), (10 + kill_after, signal.SIGKILL)]
    assert kubelet.events.times("Killing") == [10]
    terminated = kubelet.status()["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (128 + signal.SIGKILL, "Error")
    assert len(kubelet.launcher.started) == 1, "a pod being deleted never restarts its containers"


def test_a_container_that_stops_at_sigterm_is_never_sent_sigkill(kubelet_for) -> None:
    kubelet = kubelet_for(make_pod(grace=120))
    kubelet.at(0)
    kubelet.delete(None)
    kubelet.at(1)
    kubelet.at(2)
    assert kubelet.process.signals == [(1, signal.SIGTERM)]
    assert kubelet.runtime.finished()
    assert kubelet.status()["state"]["terminated"]["exitCode"] == 128 + signal.SIGTERM


def test_a_pod_deleted_while_its_container_waits_in_back_off_is_not_started_again(
    kubelet_for,
) -> None:
    kubelet = kubelet_for(make_pod())
    crash_each_second(kubelet, until=5)  # waiting 10 s after its 2nd exit at 2 s
    kubelet.delete(30)
    for second in range(6, 60):
        kubelet.at(second)
    assert len(kubelet.launcher.started) == 2 and kubelet.runtime.finished()


def test_a_vanished_pods_container_lets_go_of_its_log_file_and_output_pipes(kubelet_for) -> None:
    kubelet = kubelet_for(make_pod())
    kubelet.at(0)
    output, process = kubelet.runtime.containers[0].output, kubelet.process
    kubelet.runtime.kill()
    assert process.signals == [(0, signal.SIGKILL)]
    assert output is not None and output.closed and process.stdout.closed and process.stderr.closed
