"""Pure logic of the grader: namespace names, hidden-test parsing, output rewriting, the ledger."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from nbformat import NotebookNode
from nbgrader.utils import determine_grade

from autograder.checks import CheckResult
from autograder.grading.ledger import Ledger, Outcome, submission_digest
from autograder.grading.names import check_student_id, folder_name, namespace_for, printable
from autograder.grading.verify import CheckCall, UnreadableCheck, check_calls, rewrite_outputs

DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("student", ["alice", "Bob.Smith@uni.edu", "ÉLODIE 2", "---", "x" * 300, "a_b", "A_B"])
def test_namespaces_are_valid_dns_labels(student: str) -> None:
    name = namespace_for(student, "lesson01", "course")
    assert DNS_1123_LABEL.match(name) and len(name) <= 63


def test_namespaces_differ_for_ids_that_slug_alike_and_stay_stable() -> None:
    assert namespace_for("a_b", "lesson01", "c") != namespace_for("a-b", "lesson01", "c")
    assert namespace_for("a_b", "lesson01", "c") == namespace_for("a_b", "lesson01", "c")
    assert namespace_for("a_b", "lesson01", "c") != namespace_for("a_b", "lesson01", "other course")


@pytest.mark.parametrize(("student", "ok"), [
    ("alice", True), ("Bob.Smith_2-x", True), ("x" * 64, True), ("x" * 65, False), ("Bob.Smith@uni.edu", False),
    ("../x", False), ("", False), (" bob", False), (".hidden", False), ("a-ctl-s*", False), ("a[bc]", False),
    ("a?", False), ("a/b", False), ("élodie", False), (folder_name(b"caf\xe9"), False)])
def test_student_ids_must_be_folder_names(student: str, ok: bool) -> None:
    assert (check_student_id(student) is None) == ok


def test_hidden_tests_are_parsed_into_check_calls() -> None:
    source = (
        "%time x = 1\n"
        "from autograder.checks import *\n"
        "deployment_ready(lab, 'ml-api', replicas=3).assert_passed()\n"
        "assert checks.service_routes(lab, 'ml-api-service', 'ml-api')\n"
        "eventually(scaled_to, lab, 'ml-api', 5, timeout=60).assert_passed()\n"
    )
    assert check_calls(source) == [
        CheckCall("deployment_ready", ("ml-api",), {"replicas": 3}),
        CheckCall("service_routes", ("ml-api-service", "ml-api"), {}),
        CheckCall("scaled_to", ("ml-api", 5), {}),
    ]
    assert str(check_calls("rolled_back(lab, 'a', 'v1', replaced='v2')")[0]) == \
        "rolled_back(lab, 'a', 'v1', replaced='v2')"


@pytest.mark.parametrize("source", ["deployment_ready(lab, name)", "scaled_to(lab, *args)",
                                    "scaled_to(lab, **kw)", "deployment_ready(lab=lab)"])
def test_checks_with_non_literal_arguments_cannot_be_verified(source: str) -> None:
    with pytest.raises(UnreadableCheck):
        check_calls(source)


def test_cells_without_checks_have_no_calls() -> None:
    assert check_calls("assert 1 + 1 == 2\nprint(lab)") == []


def _test_cell(*outputs: NotebookNode) -> NotebookNode:
    return NotebookNode(cell_type="code", source="", outputs=list(outputs), metadata=NotebookNode(
        nbgrader=NotebookNode(grade=True, solution=False, points=2, grade_id="t", locked=True)))


def test_a_faked_pass_is_overwritten_by_the_graders_failure() -> None:
    cell = _test_cell(NotebookNode(output_type="stream", name="stdout", text="all good\n"))
    rewrite_outputs(cell, [CheckResult("deployment_ready", False, "deployment/ml-api does not exist")])
    assert determine_grade(cell) == (0, 2)
    assert "does not exist" in cell.outputs[-1].evalue


def test_the_cell_scores_only_when_kernel_and_grader_both_pass() -> None:
    stderr = NotebookNode(output_type="stream", name="stderr", text="warning\n")
    partial = NotebookNode(output_type="execute_result", data={"text/plain": "0.0"}, metadata={}, execution_count=1)
    cell = _test_cell(stderr, partial)
    rewrite_outputs(cell, [CheckResult("scaled_to", True, "runs 5/5")])
    assert determine_grade(cell) == (2, 2)
    assert [o.output_type for o in cell.outputs] == ["stream", "stream"]

    kernel_error = NotebookNode(output_type="error", ename="AssertionError", evalue="pods not Running", traceback=[])
    cell = _test_cell(kernel_error)
    rewrite_outputs(cell, [CheckResult("scaled_to", True, "runs 5/5")])
    assert determine_grade(cell) == (0, 2)


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
