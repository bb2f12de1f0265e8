"""The Docker engine, for every room building or running images: one way to reach it, or why not."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import docker
import requests
from docker.errors import DockerException
from tqdm.auto import tqdm

from autograder.shared.errors import LabError

logger = logging.getLogger(__name__)

# What a build passes on to its steps, so a pip install behind a proxy works as it does outside.
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")
STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
TAIL_LINES = 20  # how much of a failed build's output its error shows
MIB = 2**20
_QUIET = ("---> ", "Removing intermediate", "Successfully")  # Docker's own lines, not a step's


class DockerUnavailable(LabError):
    """The Docker daemon cannot be reached; the message says how to start it."""


class ImageMissing(LabError):
    """An image tag that was never built (locally) or never loaded (into the cluster)."""


class BuildFailed(LabError):
    """A Dockerfile step failed; the message shows that step and the end of its output."""


@dataclass(frozen=True)
class BuildLimits:
    """What one build may take of the Docker host, for a Dockerfile its owner did not write.

    Its RUN steps get no network (what the host reaches, a cloud's metadata service among it, is
    no step's business). Each RUN step's container gets `memory_bytes` (no swap) and all the
    host's CPUs but one, and a small CPU weight; the whole build gets `seconds`, then its stream
    is cut, which makes the daemon kill and remove the running step. Docker's build API has no
    pids limit (a fork bomb is bounded by the memory cap, the CPUs and the time) nor a disk quota:
    an image over `image_bytes` is removed once built, so the disk holds it no longer than the
    build's time.
    """

    seconds: float
    memory_bytes: int
    image_bytes: int

    def container_limits(self, host_cpus: int) -> dict[str, object]:
        """`APIClient.build`'s container_limits on a Docker host with `host_cpus` CPUs."""
        limits: dict[str, object] = {
            "memory": self.memory_bytes,
            "memswap": self.memory_bytes,  # memory and swap together: no swap on top
            "cpushares": 256,  # a quarter of a default container's weight when CPUs are busy
        }
        if host_cpus > 1:
            limits["cpusetcpus"] = f"0-{host_cpus - 2}" if host_cpus > 2 else "0"
        return limits


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
    limits: BuildLimits | None = None,
    **options: object,
) -> BuildOutput:
    """`docker build -t TAG CONTEXT` through the SDK's low-level API, so its steps show as they run.

    CONTEXT is a folder, or a tar the caller made. The steps show on a tqdm bar (`progress`) or as
    log lines (`echo`, with what each step prints); a failing step raises `failure`, naming that
    step, and so does a build over its `limits`. `options` go to `APIClient.build` as they are:
    dockerfile, buildargs, nocache, target.
    """
    seconds = None
    if limits is not None:
        seconds = limits.seconds
        options["container_limits"] = limits.container_limits(int(client.info()["NCPU"]))
        options["network_mode"] = "none"
    if context.is_dir():
        output = _stream(
            client, tag, failure, progress, echo, seconds, path=str(context), **options
        )
    else:
        with context.open("rb") as tar:
            output = _stream(
                client,
                tag,
                failure,
                progress,
                echo,
                seconds,
                fileobj=tar,
                custom_context=True,
                **options,
            )
    if limits is not None:
        _check_size(client, tag, output.image_id, limits.image_bytes, failure)
    return output


def _stream(
    client: docker.DockerClient,
    tag: str,
    failure: type[LabError],
    progress: bool,
    echo: bool,
    seconds: float | None,
    **options: object,
) -> BuildOutput:
    """Follow one build's events to its image id, failing with the step that broke."""
    lines: list[str] = []
    step, image_id, started = "", None, time.monotonic()
    with (
        _build_stream(client, tag, seconds, **options) as (stream, cut),
        tqdm(desc=f"docker build {tag}", unit=" step", disable=not progress, leave=False) as bar,
    ):
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
                raise failure(
                    f"docker build of {tag} failed at {step or 'the start'}\n"
                    f"{event['error'].strip()}\n--- last output ---\n{_tail(lines)}"
                )
        bar.n = bar.total or bar.n
    if cut.is_set():
        raise failure(
            f"docker build of {tag} was stopped at its time limit of {seconds:.0f} s, in "
            f"{step or 'its start'}: make every RUN step end, and end sooner (a RUN that "
            f"serves or sleeps never does)\n--- last output ---\n{_tail(lines)}"
        )
    return BuildOutput(image_id=image_id or client.images.get(tag).id, log=lines)


def _tail(lines: list[str]) -> str:
    """The end of a build's output, for the error that stops it."""
    return "\n".join(line for line in lines[-TAIL_LINES:] if line.strip())


@contextmanager
def _build_stream(
    client: docker.DockerClient, tag: str, seconds: float | None, **options: object
) -> Iterator[tuple[Iterator[dict], threading.Event]]:
    """A build's events, and an event set when `seconds` passed and its connection was cut.

    Cutting the connection is how a legacy build is cancelled: the daemon kills and removes the
    step it runs. The stream then simply ends, whatever it was waiting for.
    """
    responses: list[requests.Response] = []

    def keep(response: requests.Response, *args: object, **kwargs: object) -> None:
        if response.request.method == "POST" and urlparse(response.url).path.endswith("/build"):
            responses.append(response)

    client.api.hooks["response"].append(keep)
    try:
        stream = client.api.build(tag=tag, rm=True, forcerm=True, decode=True, **options)
    finally:
        client.api.hooks["response"].remove(keep)
    cut = threading.Event()
    timer = None if seconds is None else threading.Timer(seconds, _cut, args=(responses, cut))
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        yield _until_cut(stream, cut), cut
    finally:
        if timer is not None:
            timer.cancel()


def _cut(responses: list[requests.Response], cut: threading.Event) -> None:
    """Shut the build's connection, which wakes its reader and cancels the build."""
    cut.set()
    for response in responses:
        try:
            response.raw.shutdown()
        except (ValueError, RuntimeError, OSError):  # the build ended meanwhile: nothing to cut
            logger.debug("the build's stream had already ended", exc_info=True)


def _until_cut(stream: Iterator[dict], cut: threading.Event) -> Iterator[dict]:
    """The stream's events; a broken connection ends it quietly when the time limit cut it."""
    try:
        yield from stream
    except Exception:
        if not cut.is_set():
            raise


def _check_size(
    client: docker.DockerClient,
    tag: str,
    image_id: str,
    image_bytes: int,
    failure: type[LabError],
) -> None:
    """Remove a built image over `image_bytes`, and raise `failure` saying how big it was."""
    size = int(client.images.get(image_id).attrs["Size"])
    if size <= image_bytes:
        return
    try:
        client.images.remove(image_id, force=True)
    except DockerException:  # the size is still the error to report; the tag is reused next time
        logger.warning("could not remove the oversized image %s", tag, exc_info=True)
    raise failure(
        f"docker build of {tag} made an image of {size / MIB:.0f} MiB, over the limit of "
        f"{image_bytes / MIB:.0f} MiB, so it was removed: leave out what the app does not need "
        "(pip's cache: --no-cache-dir, data files, build tools)"
    )


def _show_step(bar: tqdm, match: re.Match[str], echo: bool, seconds: float) -> None:
    """Move the bar to step N of M, and log it when the build is echoed."""
    bar.total, bar.n = int(match[2]), int(match[1]) - 1
    bar.set_postfix_str(match[3][:50])
    bar.refresh()
    if echo:
        logger.info("  [%6.1f s] step %s/%s: %s", seconds, match[1], match[2], match[3][:90])
