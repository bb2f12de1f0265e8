"""The classroom's pure parts: a student's runtime copy, a submission's size, the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autograder.classroom import setup
from autograder.classroom.exchange import MIB, folder_bytes
from autograder.classroom.layout import Classroom
from autograder.cli import build_parser


def test_the_students_runtime_holds_the_lab_and_no_answer_or_grading_code(tmp_path: Path) -> None:
    room = Classroom(tmp_path, "teacher", ("ada",))
    setup._install_runtime(room)
    package = room.runtime / "autograder"
    assert (package / "lab" / "cluster.py").is_file() and (
        package / "manifests" / "practice"
    ).is_dir()
    for answers in (
        "course",
        "grading",
        "bench",
        "build",
        "manifests/deployment.yaml",
        "manifests/service.yaml",
        "modelserver/app.py",
        "modelserver/Dockerfile",
        "demo.py",
    ):
        assert not (package / answers).exists(), answers
    assert not list(package.rglob("*.pyc"))


def test_a_submission_is_sized_by_its_own_files_not_by_what_its_links_point_at(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "lesson01"
    (folder / "data").mkdir(parents=True)
    with open(folder / "data" / "big.bin", "wb") as big:
        big.truncate(2048 * MIB)  # sparse: two GiB by its size, nothing on disk
    outside = tmp_path / "outside.bin"
    with open(outside, "wb") as other:
        other.truncate(4096 * MIB)
    os.symlink(outside, folder / "link.bin")
    assert 2048 * MIB <= folder_bytes(folder) < 2049 * MIB


def test_classroom_up_asks_for_the_students() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["classroom", "up"])
    args = build_parser().parse_args(
        ["classroom", "nbgrader", "--root", "/r", "collect", "--update"]
    )
    assert args.root == Path("/r") and args.arguments == ["collect", "--update"]
