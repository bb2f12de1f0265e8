"""The Docker engine, for every room that builds or runs images: one way to reach it, or say why not."""

from __future__ import annotations

import docker
from docker.errors import DockerException

from autograder.shared.errors import LabError

# What a build passes on to its steps, so a pip install behind a proxy works as it does outside.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


class DockerUnavailable(LabError):
    """The Docker daemon cannot be reached; the message says how to start it."""


class ImageMissing(LabError):
    """An image tag that was never built (locally) or never loaded (into the cluster)."""


def unreachable_reason() -> str | None:
    """None when the Docker daemon answers, else what is wrong and how to start it."""
    try:
        docker.from_env(timeout=5).ping()
    except DockerException as error:
        return (
            f"the Docker daemon does not answer ({error.__class__.__name__}); start Docker "
            "Desktop, or on Linux `sudo systemctl start docker` (or `sudo dockerd &`)"
        )
    return None


def client(timeout: float = 60, *, hint: str = "") -> docker.DockerClient:
    """A Docker client that answers, or DockerUnavailable saying how to start the daemon (and `hint`)."""
    reason = unreachable_reason()
    if reason:
        raise DockerUnavailable(f"{reason}{hint}")
    return docker.from_env(timeout=timeout)
