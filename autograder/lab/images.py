"""The model server image, the lesson's steps 2, 5 and 7: build it, run it locally, load it into the cluster.

Builds use the Docker SDK's low-level API so the build log streams into a notebook as it happens.
On the practice cluster "loading" hands the image's app to `autograder.practice`, which needs
no Docker at all.
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound
from docker.models.containers import Container
from docker.models.images import Image
from tqdm.auto import tqdm

from autograder.modelserver import SOURCE as MODEL_SERVER
from autograder.practice import catalog, supervise
from autograder.shared import binaries, dockerengine, ports, probe
from autograder.shared.dockerengine import PROXY_VARIABLES
from autograder.shared.errors import LabError
from autograder.shared.provider import CLUSTER_NAME, Lab, run

logger = logging.getLogger(__name__)

VERSION_ARG = "MODEL_VERSION"
CONTAINER_PORT = 8080
LOCAL_RUN_LABEL = "k8s-ml-lab.local-run"
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
PYTHON_BASE = "python:3.11-slim"  # the model server's base; made offline when Docker cannot pull it


class BuildFailed(LabError):
    """A Dockerfile step failed; the message shows that step and the end of its output."""


class ImageMissing(LabError):
    """An image tag that was never built (locally) or never loaded (into the cluster)."""


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
) -> Build:
    """`docker build -t TAG [--build-arg MODEL_VERSION=...] CONTEXT`, streaming its log."""
    context = Path(context)
    dockerfile = context / "Dockerfile"
    if not dockerfile.is_file():
        raise FileNotFoundError(f"no Dockerfile in {context}: write one next to app.py first")
    client = docker_client()
    if PYTHON_BASE in base_images(dockerfile):
        from autograder.build import baseimage  # only when the base image must be made offline

        baseimage.ensure_python_base(client)
    buildargs = {name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)}
    if version:
        buildargs[VERSION_ARG] = version
    started = time.monotonic()
    lines: list[str] = []
    step, image_id = "", None
    stream = client.api.build(
        path=str(context),
        tag=tag,
        buildargs=buildargs,
        rm=True,
        forcerm=True,
        nocache=nocache,
        decode=True,
    )
    with tqdm(desc=f"docker build {tag}", unit=" step", disable=not progress, leave=False) as bar:
        for chunk in stream:
            text = chunk.get("stream", "")
            lines.extend(text.splitlines())
            if match := STEP.match(text.strip()):
                step = text.strip()
                bar.total, bar.n = int(match[2]), int(match[1]) - 1
                bar.set_postfix_str(match[3][:50])
                bar.refresh()
            image_id = chunk.get("aux", {}).get("ID", image_id)
            if "error" in chunk:
                tail = "\n".join(line for line in lines[-15:] if line.strip())
                raise BuildFailed(
                    f"docker build of {tag} failed at {step or 'the start'}\n"
                    f"{chunk['error'].strip()}\n--- last output ---\n{tail}"
                )
        bar.n = bar.total or bar.n
    seconds = time.monotonic() - started
    image_id = image_id or client.images.get(tag).id
    logger.info("built %s (%s) in %.1f s", tag, image_id[:19], seconds)
    return Build(tag=tag, image_id=image_id, seconds=seconds, log=lines)


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
    return lab.provider in ("kind", "practice") or catalog.serves_kwok_routes(lab)


def load_into_cluster(
    lab: Lab, tag: str, *, context: Path | str | None = None, version: str | None = None
) -> None:
    """Make `tag` available to the cluster's nodes: `kind load docker-image`, or on the practice
    cluster build `context` (your folder and its Dockerfile) into the namespace's own images."""
    if lab.provider == "kind":
        client = docker_client()
        try:
            client.images.get(tag)
        except ImageNotFound:
            raise ImageMissing(f"no image {tag} in Docker to load: build it first") from None
        kind = binaries.ensure(["kind"])["kind"]
        run(
            [str(kind), "load", "docker-image", tag, "--name", CLUSTER_NAME],
            what=f"kind load docker-image {tag}",
        )
        logger.info("loaded %s into kind cluster %r", tag, CLUSTER_NAME)
    elif context is not None and can_load(lab):
        build_args = {VERSION_ARG: version} if version else {}
        catalog.push(lab.core, lab.namespace, tag, Path(context), build_args)
        if lab.provider == "practice":
            supervise.ensure_router(lab.context)
        logger.info(
            "built %s from %s for namespace %s of the practice cluster", tag, context, lab.namespace
        )
    elif lab.provider == "practice":
        entry, size = _docker_image_entry(tag)
        catalog.register_image(lab.core, tag, entry)
        catalog.record_on_nodes(lab.core, tag, size)
        supervise.ensure_router(lab.context)
        logger.info("recorded %s on the practice cluster's nodes", tag)
    else:
        raise ValueError(
            f"load images into {lab.context!r} with its own tools (a registry, "
            "`minikube image load`, ...); the lab loads into kind and practice only"
        )


# An image's variables that describe its Python base, not the app; the runtime sets its own PATH.
BASE_VARIABLES = re.compile(r"^(PATH|LANG|GPG_KEY|PYTHON_\w+)$")


def _docker_image_entry(tag: str) -> tuple[dict, int]:
    """The catalog entry (WORKDIR's files, environment, command) and size of Docker's image `tag`."""
    image = _docker_image(tag)
    if image is None:
        raise ImageMissing(
            f"image {tag} is not in Docker (or Docker is down); pass context= (the "
            "folder with app.py and its Dockerfile) to build it on the practice cluster"
        )
    config = image.attrs["Config"]
    workdir = config.get("WorkingDir") or "/"
    if workdir == "/":
        raise ImageMissing(
            f"image {tag} has no WORKDIR holding app.py; the practice cluster serves "
            "images built like the lesson's (WORKDIR /app), or pass context="
        )
    snapshot = catalog.snapshot(
        catalog.snapshot_dir(tag, image.id.split(":")[-1]),
        lambda target: _copy_out(docker.from_env(), tag, workdir, target),
    )
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    entry = {
        "app": str(snapshot),
        "workdir": workdir,
        "entrypoint": config.get("Entrypoint") or [],
        "cmd": config.get("Cmd") or [],
        "env": {k: v for k, v in env.items() if not BASE_VARIABLES.match(k)},
    }
    return entry, image.attrs.get("Size", 0)


def _docker_image(tag: str) -> Image | None:
    """The image `tag` in Docker, or None when it is not there or Docker does not answer."""
    if dockerengine.unreachable_reason() is not None:
        return None
    try:
        return docker.from_env().images.get(tag)
    except ImageNotFound:
        return None


def _copy_out(client: docker.DockerClient, tag: str, path: str, target: Path) -> None:
    """Extract `path` from an image into `target`, like `docker cp` from a created container."""
    container = client.containers.create(tag)
    try:
        stream, _ = container.get_archive(path)
        data = io.BytesIO(b"".join(stream))
    finally:
        container.remove(force=True)
    target.mkdir(parents=True)
    top = Path(path).name  # get_archive("/app") puts everything under "app/"
    with tarfile.open(fileobj=data) as tar:
        for member in tar.getmembers():
            member.name = str(Path(member.name).relative_to(top))
        _extract_data(tar, target)


def _extract_data(tar: tarfile.TarFile, target: Path) -> None:
    """`extractall(filter="data")`, also where Python has no such filter (before 3.11.4, 3.10).

    The image is the student's: there, only its regular files and folders come out, and none whose
    path is absolute or climbs out of `target`.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, filter="data")
        return
    safe = [
        member
        for member in tar.getmembers()
        if (member.isfile() or member.isdir())
        and not Path(member.name).is_absolute()
        and ".." not in Path(member.name).parts
    ]
    for member in safe:
        member.mode &= 0o755  # no set-uid, set-gid or sticky bits, as the data filter does
    tar.extractall(target, members=safe)  # the members were checked above
