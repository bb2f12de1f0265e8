"""What every pod's runtime on a node shares, as a kubelet: launcher, events, clock, prober."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kubernetes import client

from autograder.practice import container as sandbox
from autograder.practice import probes
from autograder.practice.clock import Clock
from autograder.practice.events import EventRecorder
from autograder.practice.launcher import Launcher

Prober = Callable[[client.V1Probe, probes.Target], tuple[bool, str]]


@dataclass
class Node:
    """The parts a pod's containers run on; a test replaces the clock, launcher and prober."""

    launcher: Launcher
    events: EventRecorder
    clock: Clock = field(default_factory=Clock)
    isolates: bool = field(default_factory=sandbox.isolated)  # a uid and a network of their own
    prober: Prober = probes.run
