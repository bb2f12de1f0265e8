"""Pure logic of the grader.

Names, staging, notebook repair, output checks, node restores, the ledger and its gradebook backups.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell

from autograder import REPO_ROOT
from autograder.grading.answers import released, unanswered_from
from autograder.grading.classrun import submissions
from autograder.grading.classrun.course import read_config
from autograder.grading.classrun.grader import clear_output, foreign_entries
from autograder.grading.classrun.kindimages import node_reference, unique_tag
from autograder.grading.classrun.ledger import (
    GradebookDamaged,
    Ledger,
    Outcome,
    backup_gradebook,
    gradebook_problem,
    restore_gradebook,
    submission_digest,
)
from autograder.grading.classrun.repair import MAX_CELLS, grade_id, rebuilt, repair
from autograder.grading.classrun.submissions import stage
from autograder.grading.names import check_student_id, folder_name, namespace_for, printable
from autograder.grading.nodes import restore_patch
from autograder.grading.request import WorkerRequest, plain_config
from autograder.grading.settings import GradingSettings
from autograder.shared.errors import LabError

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    "student", ["alice", "Bob.Smith@uni.edu", "ÉLODIE 2", "---", "x" * 300, "a_b", "A_B"]
)
def test_namespaces_are_valid_dns_labels(student: str) -> None:
    name = namespace_for(student, "lesson01", "course")
    assert DNS_1123_LABEL.match(name) and len(name) <= 63


def test_namespaces_differ_for_ids_that_slug_alike_and_stay_stable() -> None:
    assert namespace_for("a_b", "lesson01", "c") != namespace_for("a-b", "lesson01", "c")
    assert namespace_for("a_b", "lesson01", "c") == namespace_for("a_b", "lesson01", "c")
    assert namespace_for("a_b", "lesson01", "c") != namespace_for("a_b", "lesson01", "other course")


@pytest.mark.parametrize(
    ("student", "ok"),
    [
        ("alice", True),
        ("Bob.Smith_2-x", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("Bob.Smith@uni.edu", False),
        ("../x", False),
        ("", False),
        (" bob", False),
        (".hidden", False),
        ("a-ctl-s*", False),
        ("a[bc]", False),
        ("a?", False),
        ("a/b", False),
        ("élodie", False),
        (folder_name(b"caf\xe9"), False),
    ],
)
def test_student_ids_must_be_folder_names(student: str, ok: bool) -> None:
    assert (check_student_id(student) is None) == ok


def test_ledger_resumes_only_the_same_submission(tmp_path: Path) -> None:
    folder = tmp_path / "submitted" / "alice" / "lesson01"
    folder.mkdir(parents=True)
    (folder / "a.ipynb").write_text("{}")
    ledger = Ledger(tmp_path, "lesson01")
    first = submission_digest(folder)
    ledger.record(Outcome("alice", "graded", score=3, max_score=10, submission=first))
    assert ledger.done("alice", first).score == 3
    (folder / "a.ipynb").write_text('{"changed": 1}')
    assert ledger.done("alice", submission_digest(folder)) is None
    assert ledger.done("bob", first) is None


def test_non_utf8_names_print_as_escapes() -> None:
    assert printable(folder_name(b"caf\xe9")) == "caf\\xe9"


def test_staging_copies_regular_files_and_names_the_rest(tmp_path: Path) -> None:
    source, secret = tmp_path / "submitted", tmp_path / "admin.kubeconfig"
    (source / "data").mkdir(parents=True)
    secret.write_text("token")
    (source / "a.ipynb").write_text("{}")
    (source / "data" / "x.csv").write_text("1")
    (source / "link").symlink_to(secret)
    (source / "data" / "dir-link").symlink_to(tmp_path)
    os.link(secret, source / "hard")
    os.mkfifo(source / "pipe")
    skipped = stage(source, tmp_path / "staged")
    assert skipped == [
        "data/dir-link (a symlink)",
        "hard (a hard link)",
        "link (a symlink)",
        "pipe (not a regular file)",
    ]
    assert sorted(
        str(p.relative_to(tmp_path / "staged")) for p in (tmp_path / "staged").rglob("*")
    ) == ["a.ipynb", "data", "data/x.csv"]


def _sparse(path: Path, size: int) -> None:
    with open(path, "wb") as file:
        file.truncate(size)


def test_staging_stops_at_its_limits_so_no_submission_fills_the_disk_or_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submissions, "MAX_FILE_BYTES", 2**20)
    monkeypatch.setattr(submissions, "MAX_TOTAL_BYTES", 4 * 2**20)
    monkeypatch.setattr(submissions, "MAX_ENTRIES", 50)
    source = tmp_path / "submitted"
    source.mkdir()
    (source / "a.ipynb").write_text("{}")
    _sparse(source / "sparse.bin", 2**40)  # a terabyte that takes no space until it is copied
    for index in range(6):
        _sparse(source / f"big-{index}.bin", 2**20)
    deep = [
        source.joinpath(*["d"] * level) for level in range(1, 1200)
    ]  # deeper than Python's recursion limit
    for folder in deep:
        folder.mkdir()
    skipped = stage(source, tmp_path / "staged")
    for folder in reversed(deep):  # removed one by one: pytest's own clean-up would recurse
        folder.rmdir()
    assert skipped == [
        "big-3.bin (past the 4 MB a submission may hold)",
        "big-4.bin (past the 4 MB a submission may hold)",
        "big-5.bin (past the 4 MB a submission may hold)",
        "d/" * submissions.MAX_DEPTH + "d (a folder nested deeper than 16)",
        "sparse.bin (1,048,576 MB, more than the 1 MB a file may have)",
    ]
    assert (
        sum(path.stat().st_size for path in (tmp_path / "staged").rglob("*") if path.is_file())
        == 3 * 2**20 + 2
    )

    many = tmp_path / "many"
    many.mkdir()
    for index in range(60):
        (many / f"{index:02}").touch()
    assert stage(many, tmp_path / "many-staged") == [
        "50 and the rest (past the 50 files and folders a submission may hold)"
    ]
    assert sorted(path.name for path in (tmp_path / "many-staged").iterdir()) == [
        f"{i:02}" for i in range(50)
    ]


def test_output_folders_with_links_are_caught_and_cleared(tmp_path: Path) -> None:
    output = tmp_path / "autograded" / "alice" / "lesson01"
    output.mkdir(parents=True)
    (output / "steps.ipynb").symlink_to(tmp_path / "gradebook.db")
    assert foreign_entries(output) == ["steps.ipynb"]
    clear_output(output)
    assert not output.exists() and (tmp_path / "autograded" / "alice").is_dir()
    (tmp_path / "autograded" / "alice").rmdir()
    (tmp_path / "autograded" / "alice").symlink_to(tmp_path)
    clear_output(output)
    assert not (tmp_path / "autograded" / "alice").exists()


def test_node_restore_puts_back_only_what_changed() -> None:
    before = {
        "unschedulable": False,
        "taints": [],
        "labels": {"a": "1"},
        "annotations": {},
        "ownerReferences": [],
    }
    now = {**before, "unschedulable": True, "labels": {"a": "1", "b": "2"}}
    cordon = [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]
    assert restore_patch(before, now, cordon) == [
        {"op": "add", "path": "/spec/unschedulable", "value": False},
        {"op": "add", "path": "/metadata/labels", "value": {"a": "1"}},
    ]
    tainted = {**before, "taints": [{"key": "x", "value": None, "effect": "NoSchedule"}]}
    assert restore_patch(before, tainted, cordon) == [
        {"op": "add", "path": "/spec/taints", "value": cordon}
    ]


def test_a_damaged_gradebook_names_its_backup(tmp_path: Path) -> None:
    path = tmp_path / "gradebook.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("create table grade (score)")
        db.commit()
    backup = backup_gradebook(tmp_path, path)
    path.write_text('{"cells": []}' * 100)
    with pytest.raises(GradebookDamaged, match=f"cp {backup} {path}"):
        backup_gradebook(tmp_path, path)
    restore_gradebook(backup, path)
    assert gradebook_problem(path) is None


MASTERS = REPO_ROOT / "source" / "lesson01"


def _released_copy(tmp_path: Path) -> Path:
    """The student notebooks exactly as nbgrader releases them, as a submission folder."""
    folder = tmp_path / "submission"
    folder.mkdir()
    for notebook in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        (folder / notebook.name).write_bytes(notebook.read_bytes())
    return folder


def _edit(path: Path, change) -> None:
    notebook = nbformat.read(path, as_version=4)
    change(notebook)
    nbformat.write(notebook, path)


def test_only_notebooks_left_as_released_up_to_the_end_are_skipped(tmp_path: Path) -> None:
    folder = _released_copy(tmp_path)
    assert unanswered_from("01-why-orchestration", folder, MASTERS)
    code = lambda nb: next(cell for cell in nb.cells if cell.cell_type == "code")  # noqa: E731
    _edit(
        folder / "05-scale-update-rollback.ipynb",
        lambda nb: code(nb).update(source=code(nb).source + "\nx = 1"),
    )
    assert not unanswered_from("04-first-deployment", folder, MASTERS), (
        "an answer later keeps earlier ones running"
    )
    assert not unanswered_from("05-scale-update-rollback", folder, MASTERS)
    assert unanswered_from("06-troubleshooting-and-review", folder, MASTERS)
    _edit(
        folder / "07-beyond-the-lesson.ipynb",
        lambda nb: nb.cells.append(new_code_cell("print('my own cell')")),
    )
    assert not unanswered_from("06-troubleshooting-and-review", folder, MASTERS), (
        "a cell of the student's own is work"
    )


def test_a_missing_notebook_is_unanswered_and_an_unreadable_one_is_graded(tmp_path: Path) -> None:
    folder = _released_copy(tmp_path)
    (folder / "07-beyond-the-lesson.ipynb").unlink()
    assert unanswered_from("06-troubleshooting-and-review", folder, MASTERS)
    (folder / "07-beyond-the-lesson.ipynb").write_text("{not json")
    assert not unanswered_from("06-troubleshooting-and-review", folder, MASTERS)


def _is_test(cell: dict) -> bool:
    nbgrader = cell.get("metadata", {}).get("nbgrader", {})
    return bool(nbgrader.get("grade")) and not nbgrader.get("solution")


@pytest.mark.parametrize("master", sorted(MASTERS.glob("*.ipynb")), ids=lambda path: path.stem)
def test_a_release_is_rebuilt_unchanged_and_deleted_tests_come_back_where_they_were(
    master: Path,
) -> None:
    cells = json.loads((REPO_ROOT / "notebooks" / master.name).read_text())["cells"]
    structure = [(cell["cell_type"], grade_id(cell)) for cell in cells]
    notebook, changes = rebuilt(cells, nbformat.read(master, as_version=4))
    assert (
        changes == [] and [(cell.cell_type, grade_id(cell)) for cell in notebook.cells] == structure
    )
    without_tests = [cell for cell in cells if not _is_test(cell)]
    assert len(without_tests) < len(cells)
    notebook, changes = rebuilt(without_tests, nbformat.read(master, as_version=4))
    assert [(cell.cell_type, grade_id(cell)) for cell in notebook.cells] == structure
    assert changes == [
        f"test cell(s) {', '.join(grade_id(cell) for cell in cells if _is_test(cell))} put back"
    ]


def test_forged_claims_and_things_that_are_not_cells_are_replaced_or_dropped() -> None:
    master = nbformat.read(MASTERS / "03-your-cluster.ipynb", as_version=4)
    cells = json.loads((REPO_ROOT / "notebooks" / "03-your-cluster.ipynb").read_text())["cells"]
    test = next(cell for cell in cells if _is_test(cell))
    test["metadata"]["nbgrader"]["points"] = 1000
    forged = [
        *cells,
        json.loads(json.dumps(test)),
        {
            "cell_type": "code",
            "source": "pass",
            "metadata": {"nbgrader": {"grade_id": "bonus", "grade": True, "points": 50}},
        },
        7,
        "cell",
        {"cell_type": "widget", "source": ""},
        {"cell_type": "code", "source": ["x", 1]},
        {"cell_type": "code", "source": "\ud800"},
    ]
    notebook, changes = rebuilt(forged, master)
    assert changes == [
        "5 item(s) of its cell list that are not cells dropped",
        "the nbgrader metadata of 3 cell(s) was not the assignment's and was replaced",
    ]
    graded = {
        grade_id(cell): cell.metadata.nbgrader["points"]
        for cell in notebook.cells
        if _is_test(cell)
    }
    assert graded == {
        grade_id(cell): cell.metadata.nbgrader["points"] for cell in master.cells if _is_test(cell)
    }
    assert len(notebook.cells) == len(cells) + 2
    nbformat.validate(notebook)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"[]",
        b'{"nbformat": 3, "worksheets": []}',
        b"[" * 100_000,
        json.dumps({"nbformat": 4, "cells": [{}] * (MAX_CELLS + 1)}).encode(),
    ],
)
def test_a_file_that_is_no_notebook_is_graded_as_left_unanswered(
    tmp_path: Path, content: bytes
) -> None:
    folder = _released_copy(tmp_path)
    path = folder / "07-beyond-the-lesson.ipynb"
    path.write_bytes(content)
    master = MASTERS / path.name
    note = repair(path, nbformat.read(master, as_version=4), released(master))
    assert note.startswith(f"{path.name} is not a notebook (") and note.endswith(
        "so it was graded as unanswered."
    )
    assert unanswered_from("06-troubleshooting-and-review", folder, MASTERS)


def test_a_worker_request_goes_across_as_json_and_back_unchanged_and_refuses_a_missing_field(
    tmp_path: Path,
) -> None:
    request = WorkerRequest.of(
        GradingSettings(cell_timeout=40),
        course=tmp_path,
        assignment="lesson01",
        student="alice",
        namespace="grade-alice",
        reader_kubeconfig=tmp_path / "reader",
        lender_kubeconfig=None,
        submitted_directory=tmp_path / "staging",
        jail_hide=(Path("/root/.kube"),),
        course_config=plain_config(read_config(tmp_path)),
    )
    assert WorkerRequest.from_json(request.to_json()) == request
    assert request.course_config["CourseDirectory"]["root"] == str(tmp_path)
    assert (request.cell_timeout, request.patience) == (40, GradingSettings().patience)
    partial = json.loads(request.to_json())
    del partial["patience"]
    with pytest.raises(ValueError, match="exactly the fields"):
        WorkerRequest.from_json(json.dumps(partial))


def test_a_course_setting_no_other_process_can_receive_is_named_before_grading(
    tmp_path: Path,
) -> None:
    (tmp_path / "nbgrader_config.py").write_text(
        "c = get_config()\nc.GradingSettings.jobs = 2\nc.Execute.extra_arguments = {'--x'}\n"
    )
    config = read_config(tmp_path)
    assert config.GradingSettings.jobs == 2
    with pytest.raises(
        LabError, match=r"nbgrader_config\.py sets a value another process cannot be sent"
    ):
        plain_config(config)


@pytest.mark.parametrize(
    "tag, reference",
    [("ml-api:v1", "docker.io/library/ml-api:v1"), ("ml-api", "docker.io/library/ml-api:latest")],
)
def test_a_short_image_name_is_what_kubelet_looks_up_on_kind(tag: str, reference: str) -> None:
    assert node_reference(tag) == reference


@pytest.mark.parametrize(
    "tag",
    [
        "registry.k8s.io/pause:3.10.1",  # the sandbox of every pod on the node
        "kindest/kindnetd:v1",  # a path: docker.io/kindest/..., the cluster's own
        "localhost:5000/ml-api:v1",
        "ML-API:v1",
        "ml-api:v1@sha256:" + "0" * 64,
        "",
    ],
)
def test_a_record_may_not_name_an_image_the_nodes_run_for_the_cluster(tag: str) -> None:
    with pytest.raises(LabError, match="short NAME:TAG"):
        node_reference(tag)


def test_each_submission_builds_under_its_own_docker_tag() -> None:
    tags = {unique_tag(ns, tag) for ns in ("grade-a", "grade-b") for tag in ("a:b_c", "a_b:c")}
    assert len(tags) == 4
    assert all(tag.startswith("lab-graded/grade-") for tag in tags)
