"""The base a grader's build of a student's Dockerfile starts from: `python:3.11-slim`, offline.

A student's RUN steps run on the grader's Docker host. With a network they would reach whatever
that host reaches (a cloud's metadata service and its keys, the instructor's own servers), so the
grader builds with no network at all (`dockerengine.BuildLimits`). The lesson's `RUN pip install
-r requirements.txt` still works: the grader's build starts from this image instead of
`python:3.11-slim`, which is that image plus a wheelhouse of the course's packages and pip told to
read only it (`PIP_NO_INDEX`, `PIP_FIND_LINKS`). A package the course does not ship fails that
RUN step with pip's own "No matching distribution".
"""

from __future__ import annotations

import hashlib
import logging
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from autograder.build.baseimage import BASE_IMAGE, ensure_python_base
from autograder.modelserver import SOURCE
from autograder.shared import dockerengine
from autograder.shared.errors import LabError
from autograder.shared.pins import cache_root

logger = logging.getLogger(__name__)

OFFLINE_BASE = "lab-graded/python-offline:3.11-slim"
WHEELHOUSE = "/wheelhouse"
REQUIREMENTS_LABEL = "lab.requirements-sha256"  # which wheelhouse the image holds
FROM_BASE = re.compile(rf"^(\s*FROM\s+(?:--\S+\s+)*){re.escape(BASE_IMAGE)}(?=\s|$)", re.I | re.M)


class WheelhouseError(LabError):
    """The course's packages could not be downloaded for the offline base."""


def requirements() -> str:
    """The packages the offline base carries: the lesson's model server's own."""
    return (SOURCE / "requirements.txt").read_text()


def _digest() -> str:
    return hashlib.sha256(requirements().encode()).hexdigest()


def wheelhouse() -> Path:
    """The course's packages as wheels for the image's Python (3.11, this machine's CPU), cached."""
    folder = cache_root() / "wheelhouse" / _digest()[:16]
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="partial-", dir=folder.parent))
    listed = partial / "requirements.txt"
    listed.write_text(requirements())
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(partial / "wheels"),
        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--platform", f"manylinux2014_{platform.machine()}", "-r", str(listed),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise WheelhouseError(
            f"pip could not download the course's packages for the grader's offline builds:\n"
            f"{done.stderr.strip()[-2000:]}\nCheck that this machine reaches the package index."
        )
    try:
        (partial / "wheels").rename(folder)
    except OSError:
        if not folder.is_dir():  # else another process downloaded the same wheels first
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def ensure_offline_base(client: docker.DockerClient) -> str:
    """Make OFFLINE_BASE present for the current requirements; returns its image id."""
    try:
        image = client.images.get(OFFLINE_BASE)
        if image.labels.get(REQUIREMENTS_LABEL) == _digest():
            return str(image.id)
    except ImageNotFound:
        pass
    ensure_python_base(client)
    with tempfile.TemporaryDirectory(prefix="offline-base-") as context:
        shutil.copytree(wheelhouse(), Path(context) / "wheels")
        (Path(context) / "Dockerfile").write_text(
            f"FROM {BASE_IMAGE}\n"
            f"COPY wheels {WHEELHOUSE}\n"
            f"ENV PIP_NO_INDEX=1 PIP_FIND_LINKS={WHEELHOUSE}\n"
            f'LABEL {REQUIREMENTS_LABEL}="{_digest()}"\n'
        )
        built = dockerengine.build(client, Path(context), OFFLINE_BASE, progress=False)
    logger.info("built %s with the course's wheels (%s)", OFFLINE_BASE, built.image_id[:19])
    return built.image_id


def offline_dockerfile(text: str) -> str:
    """A Dockerfile whose `FROM python:3.11-slim` lines start from the offline base instead."""
    return FROM_BASE.sub(lambda match: match[1] + OFFLINE_BASE, text)
