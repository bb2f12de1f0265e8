"""Pure logic of the offline base image and the image builder: apt sources, tags, FROM lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from autograder.build import baseimage
from autograder.lab.images import base_images
from autograder.modelserver import SOURCE


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_mirror_is_read_from_deb822_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(baseimage.MIRROR_ENV, raising=False)
    write(
        tmp_path / "sources.list.d/debian.sources",
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n"
        "Components: main\n\nTypes: deb deb-src\n# a comment\nURIs: http://mirror.example/debian\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n",
    )
    assert baseimage.debian_mirror("bookworm", tmp_path) == "http://mirror.example/debian"


def test_mirror_is_read_from_one_line_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(baseimage.MIRROR_ENV, raising=False)
    write(
        tmp_path / "sources.list",
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main\n",
    )
    assert baseimage.debian_mirror("bookworm", tmp_path) == "http://one.example/debian"


def test_disabled_sources_are_skipped_and_none_found_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(baseimage.MIRROR_ENV, raising=False)
    write(
        tmp_path / "sources.list.d/x.sources",
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nEnabled: no\n",
    )
    with pytest.raises(baseimage.BaseImageError, match=baseimage.MIRROR_ENV):
        baseimage.debian_mirror("bookworm", tmp_path)
    monkeypatch.setenv(baseimage.MIRROR_ENV, "http://env.example/debian")
    assert baseimage.debian_mirror("bookworm", tmp_path) == "http://env.example/debian"


@pytest.mark.parametrize(
    "tag, parts",
    [
        ("python:3.11-slim", ("python", "3.11-slim")),
        ("ml-api", ("ml-api", "latest")),
        ("localhost:5000/ml-api", ("localhost:5000/ml-api", "latest")),
        ("localhost:5000/ml-api:v2", ("localhost:5000/ml-api", "v2")),
    ],
)
def test_split_tag_reads_references_as_docker_does(tag: str, parts: tuple[str, str]) -> None:
    assert baseimage.split_tag(tag) == parts


def test_base_images_of_the_lesson_and_of_a_multi_stage_file(tmp_path: Path) -> None:
    assert base_images(SOURCE / "Dockerfile") == ["python:3.11-slim"]
    write(
        tmp_path / "Dockerfile",
        "FROM --platform=linux/amd64 golang:1.22 AS build\n"
        "RUN true\nfrom build as test\nFROM python:3.11-slim\nCOPY --from=build /x /x\n",
    )
    assert base_images(tmp_path / "Dockerfile") == ["golang:1.22", "python:3.11-slim"]


def test_host_certificates_the_rootfs_already_trusts_are_not_added_again(tmp_path: Path) -> None:
    one = "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----"
    write(tmp_path / "rootfs/etc/ssl/certs/ca-certificates.crt", one + "\n")
    write(tmp_path / "same.crt", one + "\n")
    assert baseimage.install_host_certificates(tmp_path / "rootfs", tmp_path / "same.crt") == 0
