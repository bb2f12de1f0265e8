"""A class run on the real practice cluster where hostile submissions sit among good ones.

Bad IDs, links to secrets, cordoned nodes and finalizers must each stay with their own
submission: every good one keeps exactly its grade, in the gradebook and in the CSV. Also: no
jail refuses to grade, Ctrl-C stops cleanly and the same command resumes, and resuming a fully
graded class is fast.
"""

from __future__ import annotations

import csv
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kubernetes import client
from nbgrader.api import Gradebook

from autograder.grading import UNISOLATED_FLAG, nodes, sandbox
from autograder.grading.classrun import grader, submissions
from autograder.grading.classrun.course import Course, GradingError
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.kernel import jail
from autograder.grading.settings import GradingSettings
from autograder.shared import kubeconfig
from test_grading import ASSIGNMENT, FULL, NOTEBOOK, POINTS, STEPS, course, edit, replace_step

SHARED_FIXTURES = [course]  # test_grading's throwaway course, one per module

SECRET = "TOP-SECRET-ADMIN-CREDENTIAL"
GLOB_ID = "a-ctl-s*"
NON_UTF8 = b"caf\xe9"
CORDON_ALL = (
    "for node in lab.core.list_node().items:\n"
    '    lab.core.patch_node(node.metadata.name, {"spec": {"unschedulable": True}})\n'
)
HOLD = (
    'lab.core.create_namespaced_config_map(lab.namespace, {"metadata": {"name": "held", '
    '"finalizers": ["example.com/hold"]}})\n'
)
READ_LINK = (
    "try:\n    print(open('stolen.txt').read())\n"
    "except OSError as error:\n    print('not here', error)\n"
)
SETTINGS = GradingSettings(jobs=1, cell_timeout=25, patience=8)


def _write(course: Path, student: str, steps=None) -> Path:
    return submissions.write(course, ASSIGNMENT, student, steps)


def _unschedulable(admin: client.ApiClient) -> list[str]:
    return sorted(
        n.metadata.name for n in client.CoreV1Api(admin).list_node().items if n.spec.unschedulable
    )


def _grading_namespaces(admin: client.ApiClient, prefix: str) -> list[str]:
    found = (
        client.CoreV1Api(admin)
        .list_namespace(label_selector=f"{sandbox.MANAGED_BY}={sandbox.GRADER}")
        .items
    )
    return [n.metadata.name for n in found if n.metadata.name.startswith(prefix)]


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file standing for the admin kubeconfig: no submission may get its content read."""
    path = tmp_path_factory.mktemp("secret") / "admin.kubeconfig"
    path.write_text(SECRET)
    return path


@pytest.fixture(scope="module")
def class_run(course: Path, secret: Path, practice_cluster) -> dict:
    """One graded class: good submissions between hostile ones, graded in this order."""
    _write(course, "a-ctl-solved")
    _write(course, "partial", {"deploy", "service"})
    _write(course, "untouched-glob", ())
    os.rename(course / "submitted" / "untouched-glob", course / "submitted" / GLOB_ID)
    _write(course, "non-utf8")
    os.rename(
        course / "submitted" / "non-utf8", os.fsencode(course / "submitted") + b"/" + NON_UTF8
    )
    linker = _write(course, "symlinker")
    (linker / "stolen.txt").symlink_to(secret)
    edit(course, "symlinker", replace_step("deploy", READ_LINK + STEPS[0][1]))
    _write(course, "cordoner")
    edit(course, "cordoner", replace_step("cleanup", STEPS[-1][1] + "\n" + CORDON_ALL))
    _write(course, "after-cordon")
    _write(course, "finalizer")
    edit(course, "finalizer", replace_step("cleanup", STEPS[-1][1] + "\n" + HOLD))
    admin = kubeconfig.api_client(practice_cluster.context)
    cordoned = _unschedulable(admin)
    order = [
        "a-ctl-solved",
        GLOB_ID,
        os.fsdecode(NON_UTF8),
        "partial",
        "symlinker",
        "cordoner",
        "after-cordon",
        "finalizer",
    ]
    outcomes = grade_class(course, ASSIGNMENT, order, settings=SETTINGS, provider="practice")
    print(table(outcomes))
    return {
        "outcomes": {o.student: o for o in outcomes},
        "admin": admin,
        "cordoned_before": cordoned,
    }


GOOD = {
    "a-ctl-solved": FULL,
    "partial": POINTS["deploy"] + POINTS["service"],
    "symlinker": FULL,
    "cordoner": FULL,
    "after-cordon": FULL,
    "finalizer": FULL,
}


@pytest.mark.cluster
@pytest.mark.slow
def test_good_submissions_keep_exactly_their_grades(class_run: dict, course: Path) -> None:
    got = class_run["outcomes"]
    assert {s: (got[s].status, got[s].score) for s in GOOD} == {
        s: ("graded", p) for s, p in GOOD.items()
    }
    with Gradebook(Course(course).dirs.db_url) as gradebook:
        recorded = {
            s.student_id: s.score for s in gradebook.find_assignment(ASSIGNMENT).submissions
        }
    assert recorded == GOOD
    with open(course / "grades.csv") as table_file:
        exported = {
            row["student_id"]: float(row["score"])
            for row in csv.DictReader(table_file)
            if row["assignment"] == ASSIGNMENT
        }
    assert exported == GOOD


@pytest.mark.cluster
@pytest.mark.slow
def test_bad_folder_names_are_their_own_errors(class_run: dict, course: Path) -> None:
    got = class_run["outcomes"]
    assert got[GLOB_ID].status == "error" and "glob characters" in got[GLOB_ID].detail
    shown = "caf\\xe9"
    assert got[shown].status == "error" and "refused as a folder name" in got[shown].detail
    assert shown in table(list(got.values()))
    assert not (course / "autograded" / GLOB_ID).exists()


@pytest.mark.cluster
@pytest.mark.slow
def test_a_symlinked_file_is_skipped_and_never_read(class_run: dict, course: Path) -> None:
    detail = class_run["outcomes"]["symlinker"].detail
    assert "stolen.txt (a symlink)" in detail
    graded = course / "autograded" / "symlinker" / ASSIGNMENT
    assert not (graded / "stolen.txt").exists()
    assert SECRET not in (graded / NOTEBOOK).read_text()
    assert grader.foreign_entries(graded) == []


@pytest.mark.cluster
@pytest.mark.slow
def test_nodes_and_namespaces_do_not_outlive_a_submission(class_run: dict, course: Path) -> None:
    admin = class_run["admin"]
    assert _unschedulable(admin) == class_run["cordoned_before"]
    assert sandbox.leftovers(admin, Course(course).key) == []
    assert not (course / ".grading" / f"{ASSIGNMENT}.nodes.json").exists()


@pytest.mark.cluster
@pytest.mark.slow
def test_the_gradebook_is_backed_up_before_each_run(class_run: dict, course: Path) -> None:
    kept = sorted((course / ".grading" / "backups").glob("gradebook-*.db"))
    assert kept and oct(kept[-1].stat().st_mode & 0o777) == "0o600"


@pytest.mark.cluster
@pytest.mark.slow
def test_a_fully_graded_class_resumes_without_grading_again(class_run: dict, course: Path) -> None:
    started = time.monotonic()
    again = grade_class(course, ASSIGNMENT, settings=SETTINGS, provider="practice")
    elapsed = time.monotonic() - started
    print(f"resumed a fully graded class of {len(again)} in {elapsed:.1f} s")
    got = {o.student: o for o in again}
    assert {s: got[s].score for s in GOOD} == GOOD
    assert all("resumed" in got[s].detail for s in GOOD)


def test_no_jail_no_grading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from autograder import cli

    monkeypatch.setattr(jail, "unavailable_reason", lambda: "unshare is not permitted here")
    with pytest.raises(GradingError, match=f"unshare is not permitted here.*{UNISOLATED_FLAG}"):
        grade_class(tmp_path, ASSIGNMENT, ["alice"])
    assert cli.main(["grade", ASSIGNMENT, "--course", str(tmp_path), "--masters"]) == 1
    assert UNISOLATED_FLAG in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.cluster
@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(course: Path, practice_cluster) -> None:
    for student in ("ctrl-c-one", "ctrl-c-two"):
        _write(course, student)
    command = [
        sys.executable,
        "-m",
        "autograder",
        "grade",
        ASSIGNMENT,
        "--course",
        str(course),
        "--jobs",
        "2",
        "--cell-timeout",
        "25",
        "--provider",
        "practice",
        "--student",
        "ctrl-c-one",
        "--student",
        "ctrl-c-two",
    ]
    admin = kubeconfig.api_client(practice_cluster.context)
    # As from a terminal: a CI runner may start the suite with SIGINT ignored, which every child
    # would inherit, and Ctrl-C signals the whole foreground process group, not just the command.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while len(_grading_namespaces(admin, "grade-ctrl-c")) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.5)
    time.sleep(3)  # both workers are running student code
    os.killpg(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=240)
    print(out, err)
    assert process.returncode == 130
    assert "Run the same command again to resume" in err
    assert (
        "Bad file descriptor" not in err and "Traceback" not in err and "nothing started" not in err
    )
    assert sandbox.leftovers(admin, Course(course).key) == []
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    print(resumed.stdout, resumed.stderr)
    assert resumed.returncode == 0
    assert resumed.stdout.count(f"{FULL:g}/{FULL:g}") == 2


def test_an_exclusive_notebook_starts_only_once_another_submissions_cordon_is_undone(
    practice_cluster, tmp_path: Path
) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    core = client.CoreV1Api(admin)
    before = nodes.snapshot(admin)
    lock = nodes.lock_file(tmp_path)
    lock.parent.mkdir()
    restored_at: list[float] = []

    def clean_up_of_the_cordoner() -> None:
        """Its clean-up a moment later, under the same lock, as the grader's `_restore_nodes`."""
        time.sleep(1)
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            nodes.restore(admin, before)
            restored_at.append(time.monotonic())

    core.patch_node(
        sorted(before)[0], {"spec": {"unschedulable": True}}
    )  # another submission's cordon
    cleaner = threading.Thread(target=clean_up_of_the_cordoner)
    cleaner.start()
    try:
        with nodes.exclusive(lock, lambda: core.list_node().items, before, timeout=30):
            entered, left_changed = (
                time.monotonic(),
                nodes.differing(core.list_node().items, before),
            )
    finally:
        cleaner.join()
        nodes.restore(admin, before)
    assert not left_changed and restored_at and entered >= restored_at[0]


@pytest.mark.cluster
def test_a_parallel_clean_up_goes_on_and_its_node_restore_waits_for_another_exclusive_notebook(
    course: Path, practice_cluster, tmp_path: Path
) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    core = client.CoreV1Api(admin)
    parallel = grader.Grader(Course(course), ASSIGNMENT, GradingSettings(jobs=2), tmp_path)
    parallel.admin, parallel.nodes = admin, nodes.snapshot(admin)
    cordoned = sorted(parallel.nodes)[0]
    core.patch_node(
        cordoned, {"spec": {"unschedulable": True}}
    )  # left by the submission being cleaned up
    nodes.lock_file(course).parent.mkdir(exist_ok=True)
    try:
        with open(nodes.lock_file(course), "w") as other_submissions_notebook_07:
            fcntl.flock(other_submissions_notebook_07, fcntl.LOCK_EX)
            clean_up = threading.Thread(target=parallel._restore_nodes)
            clean_up.start()
            clean_up.join(timeout=20)
            went_on, still_cordoned = (
                not clean_up.is_alive(),
                core.read_node(cordoned).spec.unschedulable,
            )
        parallel.restores_done()
        restored = not nodes.differing(core.list_node().items, parallel.nodes)
    finally:
        nodes.restore(admin, parallel.nodes)
    assert went_on and still_cordoned and restored
