"""A student's Dockerfile built by the grader cannot hang the class run nor exhaust its machine."""

from __future__ import annotations

import shutil
import socket
import uuid
from pathlib import Path

import docker
import psutil
import pytest

from autograder.build import baseimage
from autograder.build.offlinebase import OFFLINE_BASE, offline_dockerfile
from autograder.grading.classrun.kindimages import (
    SUBMISSION_LIMITS,
    SubmissionImages,
    start_offline,
    unique_tag,
)
from autograder.lab import images
from autograder.modelserver import SOURCE
from autograder.practice import catalog, dockerfile
from autograder.providers.kind import Kind
from autograder.shared import dockerengine, waiting
from autograder.shared.dockerengine import MIB, BuildLimits
from autograder.shared.provider import Lab

TAG = "ml-api:v1"
SMALL = BuildLimits(seconds=20, memory_bytes=256 * MIB, image_bytes=2048 * MIB)


def record_of(lab: Lab, tmp_path: Path, dockerfile_text: str) -> tuple[object, str]:
    """A kernel's image record of a folder holding `dockerfile_text`, and its BUILT_AT."""
    folder = tmp_path / "ml-api"
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile_text)
    built_at = catalog.push(lab.core, lab.namespace, TAG, folder, {}, docker_builds=True)
    record = lab.core.read_namespaced_config_map(catalog.record_name(TAG), lab.namespace)
    return record, built_at


def grade_record(lab: Lab, tmp_path: Path, dockerfile_text: str, limits: BuildLimits) -> str:
    """What the waiting kernel hears of the grader's build of a record holding `dockerfile_text`."""
    baseimage.ensure_python_base(images.docker_client())
    record, built_at = record_of(lab, tmp_path, dockerfile_text)
    # No kind cluster: a build that fails never reaches `kind load`.
    SubmissionImages(Kind(), lab.core.api_client, limits).answer(lab.namespace, record)
    with pytest.raises(dockerfile.BuildFailed) as failure:
        catalog.wait_loaded(lab.core, lab.namespace, TAG, built_at, 60)
    assert docker.from_env().images.list(name=unique_tag(lab.namespace, TAG)) == []
    return str(failure.value)


def containers_running(marker: str) -> list[str]:
    """The containers, running or not, whose command holds `marker`.

    Read from one listing: inspecting each one races with Docker removing the build's steps.
    """
    return [
        container["Id"]
        for container in docker.from_env().api.containers(all=True)
        if marker in container["Command"]
    ]


@pytest.mark.docker
@pytest.mark.timeout(300)  # before the limit, this build held the grader for 28 hours
def test_a_step_that_never_ends_is_stopped_at_the_time_limit_and_the_kernel_told(
    lab: Lab, tmp_path: Path
) -> None:
    marker = f"never-ends-{uuid.uuid4().hex[:8]}"
    said = grade_record(
        lab, tmp_path, f"FROM python:3.11-slim\nRUN echo {marker} && sleep 100000\n", SMALL
    )
    assert "time limit of 20 s" in said and f"RUN echo {marker}" in said, said
    left = waiting.poll(lambda: containers_running(marker), lambda names: names == [], 30)
    assert left == [], f"the cancelled step's container is still there: {left}"


@pytest.mark.docker
def test_a_step_over_the_memory_cap_fails_the_build_and_the_grader_goes_on(
    lab: Lab, tmp_path: Path
) -> None:
    grab = "b = bytearray(768 * 2**20); print('took', len(b))"
    said = grade_record(lab, tmp_path, f'FROM python:3.11-slim\nRUN python -c "{grab}"\n', SMALL)
    assert "returned a non-zero code: 137" in said, said  # killed by the cap


@pytest.mark.docker
def test_an_image_over_the_size_cap_is_removed(tmp_path: Path) -> None:
    client = images.docker_client()
    baseimage.ensure_python_base(client)
    base = int(client.images.get(images.PYTHON_BASE).attrs["Size"])
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.11-slim\nRUN head -c 64M /dev/zero > /blob\n"
    )
    tag = f"t-oversized-{uuid.uuid4().hex[:6]}:v1"
    limits = BuildLimits(seconds=120, memory_bytes=256 * MIB, image_bytes=base + 32 * MIB)
    with pytest.raises(dockerengine.BuildFailed, match=r"over the limit of \d+ MiB, so it was"):
        images.build(tag, tmp_path, progress=False, limits=limits)
    assert client.images.list(name=tag) == []


@pytest.mark.docker
def test_the_lessons_image_builds_offline_within_a_submissions_limits(tmp_path: Path) -> None:
    context = Path(shutil.copytree(SOURCE, tmp_path / "ml-api"))
    start_offline(context / "Dockerfile")  # as the grader builds a record
    tag = f"t-limited-{uuid.uuid4().hex[:6]}:v1"
    build = images.build(tag, context, progress=False, limits=SUBMISSION_LIMITS, nocache=True)
    try:
        assert any("Successfully built" in line for line in build.log)
        assert any("flask" in line.lower() and "wheelhouse" in line for line in build.log)
    finally:
        docker.from_env().images.remove(tag)


REACH = """FROM python:3.11-slim
RUN python -c "import socket; socket.create_connection(('{host}', {port}), 5); print('REACH'+'ED')"
"""


@pytest.mark.docker
def test_a_step_reaches_nothing_the_grader_host_reaches(tmp_path: Path) -> None:
    client = images.docker_client()
    baseimage.ensure_python_base(client)
    bridge = client.networks.get("bridge").attrs["Options"]["com.docker.network.bridge.name"]
    [gateway] = [a.address for a in psutil.net_if_addrs()[bridge] if a.family == socket.AF_INET]
    with socket.create_server(("0.0.0.0", 0)) as listener:  # a service only the host offers
        (tmp_path / "Dockerfile").write_text(
            REACH.format(host=gateway, port=listener.getsockname()[1])
        )
        tag = f"t-reach-{uuid.uuid4().hex[:6]}:v1"
        own = images.build(tag, tmp_path, progress=False, nocache=True)  # the host's own build
        client.images.remove(tag)
        with pytest.raises(dockerengine.BuildFailed) as refused:
            images.build(tag, tmp_path, progress=False, limits=SMALL, nocache=True)
    assert "REACHED" in own.log, "the host's own builds reach it: the refusal below means something"
    said = str(refused.value)
    assert "RUN python -c" in said and "Network is unreachable" in said and "REACHED" not in said


@pytest.mark.parametrize(
    "before, after",
    [
        (
            "FROM python:3.11-slim\nRUN pip install flask",
            f"FROM {OFFLINE_BASE}\nRUN pip install flask",
        ),
        (
            "from  --platform=linux/amd64 python:3.11-slim AS app",
            f"from  --platform=linux/amd64 {OFFLINE_BASE} AS app",
        ),
        ("FROM python:3.11-slim-bookworm", "FROM python:3.11-slim-bookworm"),
        ("FROM python:3.11", "FROM python:3.11"),
        ("COPY --from=python:3.11-slim /x /y", "COPY --from=python:3.11-slim /x /y"),
    ],
)
def test_only_the_lessons_base_is_pointed_at_the_offline_one(before: str, after: str) -> None:
    assert offline_dockerfile(before) == after


@pytest.mark.docker
def test_a_builds_steps_leave_the_grader_a_cpu(tmp_path: Path) -> None:
    client = images.docker_client()
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nRUN echo cpus=$(nproc)\n")
    tag = f"t-cpus-{uuid.uuid4().hex[:6]}:v1"
    build = images.build(tag, tmp_path, progress=False, limits=SMALL, nocache=True)
    client.images.remove(tag)
    assert f"cpus={max(1, int(client.info()['NCPU']) - 1)}" in build.log


@pytest.mark.parametrize(
    "cpus, cpuset", [(1, None), (2, "0"), (3, "0-1"), (8, "0-6")], ids=["1", "2", "3", "8"]
)
def test_a_build_leaves_the_grader_a_cpu_of_its_own(cpus: int, cpuset: str | None) -> None:
    limits = SUBMISSION_LIMITS.container_limits(cpus)
    assert limits.get("cpusetcpus") == cpuset
    assert limits["memswap"] == limits["memory"] == SUBMISSION_LIMITS.memory_bytes
