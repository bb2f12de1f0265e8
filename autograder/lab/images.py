"""The model server image, the lesson's steps 2, 5 and 7.

Build it, run it locally, load it into the cluster.

Builds use the Docker SDK's low-level API so the build log streams into a notebook as it happens. On
the practice cluster "loading" hands the image's app to `autograder.practice`, which needs no Docker
at all.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound
from docker.models.containers import Container

from autograder.modelserver import SOURCE as MODEL_SERVER
from autograder.providers.choice import provider
from autograder.shared import dockerengine, ports, probe
from autograder.shared.dockerengine import PROXY_VARIABLES, ImageMissing
from autograder.shared.errors import DockerfileMissing, LabError
from autograder.shared.provider import Lab

logger = logging.getLogger(__name__)

VERSION_ARG = "MODEL_VERSION"
CONTAINER_PORT = 8080
LOCAL_RUN_LABEL = "k8s-ml-lab.local-run"
PYTHON_BASE = "python:3.11-slim"  # the model server's base; made offline when Docker cannot pull it


def docker_client() -> docker.DockerClient:
    """A Docker client that answers, or DockerUnavailable saying how to go on without one."""
    return dockerengine.client(
        hint=". On the practice cluster you can still deploy: "
        "load_into_cluster(lab, tag, context=...) serves your app without Docker."
    )


@dataclass
class Build:
    """One finished `docker build`: what was tagged, how long it took and its whole log."""

    tag: str
    image_id: str
    seconds: float
    log: list[str] = field(repr=False, default_factory=list)


def base_images(dockerfile: Path) -> list[str]:
    """The images a Dockerfile's FROM lines name (build stages excluded)."""
    names, stages = [], set()
    for line in dockerfile.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].upper() == "FROM":
            image = next(w for w in words[1:] if not w.startswith("--"))
            if image.lower() not in stages:
                names.append(image)
            if len(words) >= 4 and words[-2].upper() == "AS":
                stages.add(words[-1].lower())
    return names


def build(
    tag: str = "ml-api:v1",
    context: Path | str = MODEL_SERVER,
    version: str | None = None,
    *,
    nocache: bool = False,
    progress: bool = True,
    limits: dockerengine.BuildLimits | None = None,
) -> Build:
    """`docker build -t TAG [--build-arg MODEL_VERSION=...] CONTEXT`, streaming its log.

    `limits` bound what a Dockerfile someone else wrote may take of this machine (grading's)."""
    context = Path(context)
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        raise DockerfileMissing(context)
    client = docker_client()
    if PYTHON_BASE in base_images(dockerfile):
        from autograder.build import baseimage  # only when the base image must be made offline

        baseimage.ensure_python_base(client)
    buildargs = {name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)}
    if version:
        buildargs[VERSION_ARG] = version
    started = time.monotonic()
    output = dockerengine.build(
        client,
        context,
        tag,
        progress=progress,
        limits=limits,
        buildargs=buildargs,
        nocache=nocache,
    )
    seconds = time.monotonic() - started
    logger.info("built %s (%s) in %.1f s", tag, output.image_id[:19], seconds)
    return Build(tag=tag, image_id=output.image_id, seconds=seconds, log=output.log)


@dataclass
class LocalServer(probe.ModelServer):
    """A model server container answering on this machine (the lesson's `docker run -p`)."""

    container_name: str
    seconds_to_healthy: float


def _port_holder(client: docker.DockerClient, port: int) -> str | None:
    """The container publishing `port`, if a container is what holds it."""
    for container in client.containers.list():
        for bindings in (container.attrs["HostConfig"].get("PortBindings") or {}).values():
            if any(str(b.get("HostPort")) == str(port) for b in bindings or []):
                return f"container {container.name} (stop it with `docker stop {container.name}`)"
    return None


@contextmanager
def run_local(
    tag: str = "ml-api:v1", port: int | None = 8080, *, timeout: float = 60
) -> Iterator[LocalServer]:
    """`docker run -p PORT:8080 TAG` until the block ends, then stop and remove the container."""
    client = docker_client()
    try:
        client.images.get(tag)
    except ImageNotFound:
        raise ImageMissing(
            f"no image {tag} in Docker: build it first, e.g. images.build({tag!r})"
        ) from None
    port = ports.free_port() if port is None else port
    ports.require_free(port, _port_holder(client, port))
    try:
        container = client.containers.run(
            tag,
            detach=True,
            labels={LOCAL_RUN_LABEL: tag},
            ports={f"{CONTAINER_PORT}/tcp": ("127.0.0.1", port)},
        )
    except APIError as error:
        if "already" in str(error) and str(port) in str(error):
            raise ports.PortBusy(
                f"local port {port} is already in use ({error.explanation}); "
                "pass port=None to pick a free one"
            ) from None
        raise
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            waited = ports.wait_http(f"{url}/health", timeout, alive=lambda: _running(container))
        except ports.NotAnswering as error:
            logs = container.logs(tail=20).decode(errors="replace")
            raise LabError(
                f"{tag} did not become healthy ({error}); its last output:\n{logs}"
            ) from None
        yield LocalServer(container_name=container.name, url=url, seconds_to_healthy=waited)
    finally:
        container.remove(force=True)


def _running(container: Container) -> bool:
    container.reload()
    return container.status in ("created", "running")


def can_load(lab: Lab) -> bool:
    """Whether the lab loads images itself: kind, or a practice cluster (which a grader's kernel,
    with its namespace-scoped identity, sees as "existing")."""
    return provider(lab.provider).loads_images(lab)


def load_into_cluster(
    lab: Lab, tag: str, *, context: Path | str | None = None, version: str | None = None
) -> None:
    """Make `tag` available to the cluster's nodes: `kind load docker-image`, or on the practice
    cluster build `context` (your folder and its Dockerfile) into the namespace's own images."""
    build_args = {VERSION_ARG: version} if version else {}
    provider(lab.provider).load_image(lab, tag, Path(context) if context else None, build_args)
