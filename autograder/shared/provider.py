"""What every cluster provider offers, so notebooks never care which one they got."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubernetes import client

from autograder.shared import kubeconfig
from autograder.shared.errors import LabError

CLUSTER_NAME = "ml-learning"


class ClusterError(LabError):
    """A cluster could not be created, reached or removed; the message says what to do next."""


class Provider(Protocol):
    """A way to get a Kubernetes cluster for the lesson."""

    name: str
    required_binaries: tuple[
        str, ...
    ]  # the cluster binaries it runs; `make test` must obtain these

    @property
    def context(self) -> str:
        """The kubeconfig context this provider's cluster is reached through."""

    @property
    def kubeconfig_file(self) -> Path | None:
        """The kubeconfig holding that context; None means kubectl's default ($KUBECONFIG)."""

    def unusable_reason(self) -> str | None:
        """None when this provider can work on this machine, else why not and how to fix it."""

    def up(self) -> None:
        """Create or restart the cluster until its API answers; a healthy cluster is kept."""

    def down(self) -> None:
        """Remove the cluster and every process it started; no cluster is a no-op."""

    def status(self) -> str:
        """One line on whether the cluster exists and answers."""

    # True where an image reaches the nodes only by loading it (no registry): a
    # missing one is never pulled.
    loads_images_only: bool

    def before_forward(self, lab: Lab, selector: str, timeout: float) -> None:
        """Whatever a port-forward to the pods behind `selector` needs first, by the deadline."""

    def loads_images(self, lab: Lab) -> bool:
        """Whether `load_image` works for this lab (else the cluster pulls from a registry)."""

    def load_image(
        self, lab: Lab, tag: str, context: Path | None, build_args: dict[str, str]
    ) -> None:
        """Make `tag` runnable on the nodes: from `context` (a Dockerfile's folder) or Docker."""


def run(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    what: str = "",
) -> subprocess.CompletedProcess[str]:
    """Run a CLI that has no Python API; a failure raises with its own output and the command.

    Without `env`, the user's kubeconfig: kind and kwokctl keep their contexts there, not in the
    lab's file.
    """
    try:
        done = subprocess.run(
            list(command),
            env=kubeconfig.user_environment() if env is None else env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ClusterError(f"{what or command[0]} did not finish within {timeout:.0f} s") from error
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-3000:]
        raise ClusterError(
            f"{what or ' '.join(command)} failed (exit {done.returncode}):\n{output}"
        )
    return done


@dataclass
class Lab:
    """Clients for one cluster and the namespace this notebook works in."""

    provider: str
    context: str
    namespace: str
    api: client.ApiClient
    kubeconfig_file: Path | None = (
        None  # what kubectl reads for this lab; None: $KUBECONFIG as it is
    )

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    def __repr__(self) -> str:
        return (
            f"Lab(provider={self.provider!r}, context={self.context!r}, "
            f"namespace={self.namespace!r})"
        )
