"""An image built with Docker, served by the practice cluster.

Its WORKDIR's files and its run config.

The practice cluster runs no container engine; an image a student built with `docker build` is
copied out once (its WORKDIR, ENV, ENTRYPOINT and CMD) and recorded in the catalog like a build.
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound
from docker.models.images import Image

from autograder.practice import catalog
from autograder.shared import dockerengine
from autograder.shared.dockerengine import ImageMissing

# An image's variables that describe its Python base, not the app; the runtime sets its own PATH.
BASE_VARIABLES = re.compile(r"^(PATH|LANG|GPG_KEY|PYTHON_\w+)$")


def entry(tag: str) -> tuple[dict, int]:
    """The catalog entry (WORKDIR's files, environment, command) and size of Docker's `tag`."""
    image = docker_image(tag)
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
        lambda target: copy_out(docker.from_env(), tag, workdir, target),
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


def docker_image(tag: str) -> Image | None:
    """The image `tag` in Docker, or None when it is not there or Docker does not answer."""
    if dockerengine.unreachable_reason() is not None:
        return None
    try:
        return docker.from_env().images.get(tag)
    except ImageNotFound:
        return None


def copy_out(client: docker.DockerClient, tag: str, path: str, target: Path) -> None:
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
        extract_data(tar, target)


def extract_data(tar: tarfile.TarFile, target: Path) -> None:
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
