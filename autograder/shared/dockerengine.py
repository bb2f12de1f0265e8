"""The Docker engine, for every room building or running images: one way to reach it, or why not."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
from docker.errors import DockerException
from tqdm.auto import tqdm

from autograder.shared.errors import LabError

logger = logging.getLogger(__name__)

# What a build passes on to its steps, so a pip install behind a proxy works as it does outside.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
TAIL_LINES = 20  # how much of a failed build's output its error shows
_QUIET = ("---> ", "Removing intermediate", "Successfully")  # Docker's own lines, not a step's


class DockerUnavailable(LabError):
    """The Docker daemon cannot be reached; the message says how to start it."""


class ImageMissing(LabError):
    """An image tag that was never built (locally) or never loaded (into the cluster)."""


class BuildFailed(LabError):
    """A Dockerfile step failed; the message shows that step and the end of its output."""


@dataclass
class BuildOutput:
    """What one `docker build` made and printed."""

    image_id: str
    log: list[str] = field(repr=False, default_factory=list)


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
    """A Docker client that answers, or DockerUnavailable saying how to start it (and `hint`)."""
    reason = unreachable_reason()
    if reason:
        raise DockerUnavailable(f"{reason}{hint}")
    return docker.from_env(timeout=timeout)


def build(
    client: docker.DockerClient,
    context: Path,
    tag: str,
    *,
    failure: type[LabError] = BuildFailed,
    progress: bool = True,
    echo: bool = False,
    **options: object,
) -> BuildOutput:
    """`docker build -t TAG CONTEXT` through the SDK's low-level API, so its steps show as they run.

    CONTEXT is a folder, or a tar the caller made. The steps show on a tqdm bar (`progress`) or as
    log lines (`echo`, with what each step prints); a failing step raises `failure`, naming that
    step. `options` go to `APIClient.build` as they are: dockerfile, buildargs, nocache, target.
    """
    if context.is_dir():
        return _stream(client, tag, failure, progress, echo, path=str(context), **options)
    with context.open("rb") as tar:
        return _stream(
            client, tag, failure, progress, echo, fileobj=tar, custom_context=True, **options
        )


def _stream(
    client: docker.DockerClient,
    tag: str,
    failure: type[LabError],
    progress: bool,
    echo: bool,
    **options: object,
) -> BuildOutput:
    """Follow one build's events to its image id, failing with the step that broke."""
    stream = client.api.build(tag=tag, rm=True, forcerm=True, decode=True, **options)
    lines: list[str] = []
    step, image_id, started = "", None, time.monotonic()
    with tqdm(desc=f"docker build {tag}", unit=" step", disable=not progress, leave=False) as bar:
        for event in stream:
            text = event.get("stream", "").strip()
            lines.extend(event.get("stream", "").splitlines())
            if match := STEP.match(text):
                step = text
                _show_step(bar, match, echo, time.monotonic() - started)
            elif echo and text and not text.startswith(_QUIET):
                logger.info("    %s", text[-160:])  # what a step prints: a Go build's progress
            image_id = event.get("aux", {}).get("ID", image_id)
            if "error" in event:
                tail = "\n".join(line for line in lines[-TAIL_LINES:] if line.strip())
                raise failure(
                    f"docker build of {tag} failed at {step or 'the start'}\n"
                    f"{event['error'].strip()}\n--- last output ---\n{tail}"
                )
        bar.n = bar.total or bar.n
    return BuildOutput(image_id=image_id or client.images.get(tag).id, log=lines)


def _show_step(bar: tqdm, match: re.Match[str], echo: bool, seconds: float) -> None:
    """Move the bar to step N of M, and log it when the build is echoed."""
    bar.total, bar.n = int(match[2]), int(match[1]) - 1
    bar.set_postfix_str(match[3][:50])
    bar.refresh()
    if echo:
        logger.info("  [%6.1f s] step %s/%s: %s", seconds, match[1], match[2], match[3][:90])
