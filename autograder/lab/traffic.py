"""`kubectl port-forward` to the lesson's Service, on any cluster: how a student calls /predict."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests
from kubernetes import client

from autograder.practice.cluster import kubeconfig_of
from autograder.providers.choice import provider
from autograder.shared import binaries, k8s, ports, probe
from autograder.shared.errors import LabError
from autograder.shared.processes import stop
from autograder.shared.provider import Lab
from autograder.shared.waiting import poll


@dataclass
class Forward(probe.ModelServer):
    """A running port-forward: the local URL that reaches the Service."""

    local_port: int


def wait_until_forwardable(
    lab: Lab, service: str = "ml-api-service", timeout: float = 30
) -> client.V1ServiceSpec:
    """Wait until `kubectl port-forward service/NAME` can reach the Service's pods.

    Returns its spec.

    Simulated pods answer only once the router has given each one its PortForward; real pods answer
    at once (each provider knows which: `before_forward`).
    """
    spec = lab.core.read_namespaced_service(service, lab.namespace).spec
    provider(lab.provider).before_forward(lab, k8s.selector(spec.selector), timeout)
    return spec


@contextmanager
def port_forward(
    lab: Lab, service: str = "ml-api-service", local_port: int | None = None, timeout: float = 30
) -> Iterator[Forward]:
    """`kubectl port-forward service/NAME LOCAL:PORT` for the block's duration, on any cluster.

    kubectl, not the Python client: the client only forwards to a named pod through a socket
    object, while kubectl resolves the Service to a ready pod and listens on a local port,
    which is what the lesson teaches and what curl or a browser can use.
    """
    spec = wait_until_forwardable(lab, service, timeout)
    local_port = ports.free_port() if local_port is None else local_port
    ports.require_free(local_port)
    url = f"http://127.0.0.1:{local_port}"
    deadline = time.monotonic() + timeout

    def forwarding() -> subprocess.Popen[str] | None:
        process = _kubectl_port_forward(lab, service, local_port, spec.ports[0].port)
        if _answers_health(url, process, deadline):
            return process
        stop(process)
        return None

    process = poll(forwarding, lambda started: started is not None, timeout)
    if process is None:
        raise k8s.WaitTimeout(
            f"service/{service} did not answer /health through port-forward within {timeout:.0f} "
            "s; are its pods Running, and does the app listen on the Service's targetPort?"
        )
    try:
        yield Forward(url=url, local_port=local_port)
    finally:
        stop(process)


def health_when_listening(url: str, timeout: float = 5) -> dict | str:
    """/health's answer once a port-forward the student started in the background listens at `url`;
    a hint instead of a traceback when nothing ever does."""

    def ask() -> dict | None:
        try:
            return probe.health(url)
        except requests.RequestException:
            return None

    answer = poll(ask, lambda found: found is not None, timeout, 0.2)
    if answer is None:
        return (
            f"nothing answered at {url}/health within {timeout:g} s: is `kubectl port-forward` "
            "running in the background (`&` at the end) on that local port, and does the Service "
            "have ready pods (`kubectl get endpoints`)?"
        )
    return answer


def _kubectl_port_forward(
    lab: Lab, service: str, local_port: int, port: int
) -> subprocess.Popen[str]:
    """Start `kubectl port-forward service/NAME` and return once it listens (or raise its error)."""
    kubectl = binaries.ensure(["kubectl"])["kubectl"]
    config = lab.kubeconfig_file or kubeconfig_of(lab.context)
    process = subprocess.Popen(
        [
            str(kubectl),
            *(["--kubeconfig", str(config)] if config else []),
            "--context",
            lab.context,
            "-n",
            lab.namespace,
            "port-forward",
            f"service/{service}",
            f"{local_port}:{port}",
            "--address",
            "127.0.0.1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()
    if not first.startswith("Forwarding from"):
        stop(process)
        raise LabError(
            f"kubectl port-forward service/{service} failed: "
            f"{(first + process.stderr.read()).strip()}"
        )
    # kubectl prints a line per connection: keep reading so its pipes never fill up.
    for pipe in (process.stdout, process.stderr):
        threading.Thread(target=pipe.read, daemon=True).start()
    return process


def _answers_health(url: str, process: subprocess.Popen[str], deadline: float) -> bool:
    """Whether the app answers through the forward; False once kubectl has given up.

    A pod can be Ready before its app listens (the lesson's Deployment has no readiness
    probe); kubectl then loses the connection and exits, and the caller starts it again.
    """

    def answer() -> bool | None:
        """True once /health answers, False once kubectl has exited, None while neither."""
        try:
            probe.health(url)
            return True
        except requests.RequestException:
            return None if process.poll() is None else False

    return bool(
        poll(answer, lambda state: state is not None, max(0.0, deadline - time.monotonic()), 0.3)
    )
