"""The model server image with the real Docker engine: build v1 and v2, run, call, fail plainly."""

from __future__ import annotations

import io
import logging
import socket
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests

from autograder.build import baseimage
from autograder.lab import images
from autograder.modelserver import SOURCE
from autograder.practice import dockerimage
from autograder.shared import dockerengine, ports
from autograder.shared.errors import LabError

TAG = f"t-ml-api-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, images.Build]]:
    """ml-api v1 and v2 built from the reference server; removed again afterwards."""
    builds = {
        "v1": images.build(f"{TAG}:v1", SOURCE, progress=False),
        "v2": images.build(f"{TAG}:v2", SOURCE, "v2.0", progress=False),
    }
    yield builds
    client = docker.from_env()
    for build in builds.values():
        client.images.remove(build.tag)


@pytest.mark.docker
@pytest.mark.parametrize("version, expected", [("v1", "v1.0"), ("v2", "v2.0")])
def test_the_running_image_answers_the_lessons_curl(
    built: dict[str, images.Build], version: str, expected: str
) -> None:
    with images.run_local(built[version].tag, port=None) as server:
        assert server.predict([1, 2, 3, 4, 5]) == {"prediction": 15.0, "model_version": expected}
        assert server.health() == {"status": "healthy"}


@pytest.mark.docker
def test_v1_and_v2_differ_only_by_the_version(built: dict[str, images.Build]) -> None:
    client = docker.from_env()
    v1, v2 = (client.images.get(build.image_id).attrs["Config"] for build in built.values())
    assert "MODEL_VERSION=v1.0" in v1["Env"] and "MODEL_VERSION=v2.0" in v2["Env"]
    assert {k: v for k, v in v1.items() if k not in ("Env", "Image")} == {
        k: v for k, v in v2.items() if k not in ("Env", "Image")
    }


@pytest.mark.docker
def test_bad_requests_to_the_container_answer_400(built: dict[str, images.Build]) -> None:
    with images.run_local(built["v1"].tag, port=None) as server:
        for body in ({}, {"features": "abc"}, {"features": [1, "x"]}):
            answer = requests.post(f"{server.url}/predict", json=body, timeout=10)
            assert answer.status_code == 400 and "error" in answer.json()
        broken = requests.post(
            f"{server.url}/predict",
            data="{oops",
            timeout=10,
            headers={"Content-Type": "application/json"},
        )
        assert broken.status_code == 400


@pytest.mark.docker
def test_the_container_is_removed_when_the_block_ends(built: dict[str, images.Build]) -> None:
    with images.run_local(built["v1"].tag, port=None) as server:
        name = server.container_name
    assert name not in {c.name for c in docker.from_env().containers.list(all=True)}


@pytest.mark.docker
def test_a_failing_dockerfile_step_is_shown(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\nRUN echo installing && exit 3\n")
    with pytest.raises(dockerengine.BuildFailed) as failure:
        images.build(f"{TAG}:broken", tmp_path, progress=False)
    message = str(failure.value)
    assert "Step 2/2 : RUN echo installing && exit 3" in message
    assert "non-zero code: 3" in message
    assert "installing" in message.split("--- last output ---")[1]


@pytest.mark.docker
def test_a_tar_context_fails_with_the_callers_error_and_logs_each_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class OwnError(LabError):
        """The caller's own failure, as the hosted and node image builds raise theirs."""

    dockerfile = b"FROM python:3.11-slim\nRUN echo compiling-go && exit 4\n"
    context = tmp_path / "context.tar"
    with tarfile.open(context, "w") as tar:
        member = tarfile.TarInfo("Dockerfile")
        member.size = len(dockerfile)
        tar.addfile(member, io.BytesIO(dockerfile))
    caplog.set_level(logging.INFO, logger="autograder.shared.dockerengine")
    client = images.docker_client()
    baseimage.ensure_python_base(client)
    with pytest.raises(OwnError, match=r"failed at Step 2/2 : RUN echo compiling-go") as failure:
        dockerengine.build(
            client, context, f"{TAG}:tar", failure=OwnError, echo=True, progress=False
        )
    assert "non-zero code: 4" in str(failure.value)
    assert "step 1/2: FROM python:3.11-slim" in caplog.text
    assert "compiling-go" in [message.strip() for message in caplog.messages]  # what RUN printed


@pytest.mark.docker
def test_a_busy_port_is_explained(built: dict[str, images.Build]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ports.PortBusy, match=f"port {port} is already in use"):
            with images.run_local(built["v1"].tag, port=port):
                pass


@pytest.mark.docker
def test_a_port_held_by_another_container_names_it(built: dict[str, images.Build]) -> None:
    with images.run_local(built["v1"].tag, port=None) as first:
        port = int(first.url.rsplit(":", 1)[1])
        with pytest.raises(ports.PortBusy, match=f"container {first.container_name}"):
            with images.run_local(built["v2"].tag, port=port):
                pass


@pytest.mark.docker
def test_running_an_image_never_built_says_to_build_it() -> None:
    with pytest.raises(images.ImageMissing, match="build it first"):
        with images.run_local(f"{TAG}:never-built", port=None):
            pass


def test_docker_down_says_so_and_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(dockerengine.DockerUnavailable, match=r"does not answer.*start"):
        images.build(f"{TAG}:v1", SOURCE, progress=False)


def test_without_pythons_data_filter_an_images_files_come_out_without_links_or_paths_that_climb_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name, text in [("app.py", "print('hi')\n"), ("models/model.txt", "weights\n")]:
            member = tarfile.TarInfo(name)
            member.size, member.mode = len(text), 0o4755
            tar.addfile(member, io.BytesIO(text.encode()))
        tar.addfile(tarfile.TarInfo("../escaped.txt"), io.BytesIO())
        link = tarfile.TarInfo("shadow")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(link)
    archive.seek(0)
    # As on Python 3.10 and on 3.11 before 3.11.4 (Debian 12's python3 is 3.11.2).
    monkeypatch.delattr(tarfile, "data_filter", raising=False)
    target = tmp_path / "app"
    with tarfile.open(fileobj=archive) as tar:
        dockerimage.extract_data(tar, target)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == [
        "app.py",
        "models",
        "models/model.txt",
    ]
    assert (target / "app.py").stat().st_mode & 0o7777 == 0o755
    assert not (tmp_path / "escaped.txt").exists()
