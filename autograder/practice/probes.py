"""Readiness and liveness probes (httpGet, tcpSocket, exec): their counters, and one run of each."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from autograder.practice import container as sandbox
from autograder.shared import isolation


@dataclass
class Probe:
    """One probe of a container and its counters, as kubelet's prober keeps them."""

    spec: client.V1Probe
    next_at: float
    successes: int = 0
    failures: int = 0
    passing: bool = False

    @property
    def period(self) -> float:
        return float(self.spec.period_seconds or 10)


@dataclass(frozen=True)
class Target:
    """What a probe reaches of a running container: its process, address, folder and environment."""

    pid: int
    address: str  # the pod's IP, as kubelet's failure texts name it
    port: Callable[[int | str], int]  # where a probe's port (number or name) is, seen from here
    workdir: Path
    env: dict[str, str]
    uid: int | None  # the container's own uid when it is isolated: an exec probe runs as it, inside


def run(spec: client.V1Probe, target: Target) -> tuple[bool, str]:
    """One probe run against the container's own process: (passed, kubelet's failure text)."""
    timeout = float(spec.timeout_seconds or 1)
    if spec.http_get or spec.tcp_socket:
        return _dial(spec, target, timeout)
    if spec._exec and spec._exec.command:
        return _execute(spec._exec.command, target, timeout)
    return True, ""


def _dial(spec: client.V1Probe, target: Target, timeout: float) -> tuple[bool, str]:
    """A tcpSocket probe connects; an httpGet probe asks for its path and wants a 2xx or 3xx."""
    action = spec.http_get or spec.tcp_socket
    where = f"{target.address}:{action.port}"
    try:
        pid = target.pid if target.uid is not None else None  # into its own network when isolated
        with sandbox.connect(pid, target.port(action.port), timeout) as sock:
            if spec.tcp_socket:
                return True, ""
            path = spec.http_get.path or "/"
            sock.sendall(
                (
                    f"GET {path} HTTP/1.0\r\nHost: {where}\r\nUser-Agent: kube-probe/1.34\r\n\r\n"
                ).encode()
            )
            status = sock.makefile("rb").readline().split()
    except OSError as error:
        if spec.tcp_socket:
            return False, f"dial tcp {where}: connect: {(error.strerror or str(error)).lower()}"
        return (
            False,
            f'Get "http://{where}{spec.http_get.path or "/"}": dial tcp {where}: '
            f"connect: {(error.strerror or str(error)).lower()}",
        )
    code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
    return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"


def _execute(command: list[str], target: Target, timeout: float) -> tuple[bool, str]:
    """An exec probe passes when its command exits 0; its output is the failure's text."""
    command = [*command]
    if target.uid is not None:
        command = [
            "nsenter",
            f"--target={target.pid}",
            "--net",
            "--mount",
            "--",
            *isolation.unprivileged(target.uid, sandbox.POD_GID),
            *command,
        ]
    try:
        done = subprocess.run(
            command,
            cwd=target.workdir,
            capture_output=True,
            timeout=timeout,
            env=target.env,
            preexec_fn=sandbox.limit,
        )
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout:.0f}s"
    except OSError as error:
        return False, str(error)
    return done.returncode == 0, (done.stdout + done.stderr).decode(errors="replace").strip()[-300:]
