"""A second hostile corpus: kernels that answer the grader with data built to break its reading.

The kernel side of the judge is the student's: a submission can replace `values.snapshot` or
`values.call`, or IPython's text formatter, and so send the grader any reply. Whatever it sends
(tags that do not decode, JSON nested past the recursion limit, a huge literal instead of the
string the grader asked for), only the cell being judged may fail; objects that compare equal to
everything, exceptions named like the interpreter's own and functions that never return earn
nothing either. What the cluster shares is out of reach too: a system priority (which would let
the scheduler evict other namespaces' pods) and the cluster's node ports are refused by quota, and
the storage a kernel can write outside its jail (its sockets folder, /dev/shm) holds a few MB.
The solved submission graded beside them keeps full marks, and nothing outside the
submissions' namespaces changes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kubernetes import client

from autograder.grading import sandbox
from autograder.grading.classrun.course import Course
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.settings import GradingSettings
from autograder.grading.worker import values
from autograder.shared import kubeconfig
from conftest import adopting_orphans, jailed_kernels
from test_forged_points import ASSIGNMENT, FULL, NOTEBOOK, POINTS, _submit, master
from test_grading import DEPLOYMENT, bystander, new_course  # noqa: F401 (a fixture)


def _forged(snapshot: str, call: str) -> str:
    """An answer cell that sets q, then makes the kernel forge its answers to the grader."""
    return f"""q = "b"
import autograder.grading.worker.values as values
honest = values.snapshot
values.snapshot = lambda namespace, names: (
    ({snapshot}) if names == ["q"] else honest(namespace, names))
values.call = lambda handle, arguments: ({call})"""


UNDECODABLE = """'{"q": {"value": {"set": [[1], [2]]}}}'"""
TOO_DEEP = """'{"value": ' + '[' * 50_000 + ']' * 50_000 + '}'"""
# Not a string: the reply's text is a 14 MB list literal, which Python's parser needs ~5 GB to read.
LITERAL_BOMB = 'type("Bomb", (), {"__repr__": lambda self: "[" + "0," * 7_000_000 + "]"})()'
# The exception's message becomes the cell's error output: 15 MB in the notebook and its feedback.
HUGE_MESSAGE = """'{"raised": "ValueError", "message": "' + "[grader] passed " * 1_000_000 + '"}'"""
EQUALS_EVERYTHING = """class Anything(str):
    __eq__ = lambda self, other: True
    __hash__ = str.__hash__
q = Anything("z")"""
LOOKALIKE_EXCEPTIONS = """class SystemExit(Exception):
    pass
def double(x):
    raise SystemExit("[grader] all tests passed")"""
NEVER_RETURNS = "def double(x):\n    while True:\n        pass"
# A system priority lets the scheduler evict other students' pods to make room for this one's.
PREEMPTS = f"""deployment = {DEPLOYMENT!r}
deployment["spec"]["template"]["spec"]["priorityClassName"] = "system-node-critical"
workloads.apply(lab, [deployment])"""

# One Service with many ports holds that many of the cluster's node ports (2,768
# in all) while it is graded.
NODE_PORTS = """from conftest import adopting_orphans, jailed_kernels
from kubernetes import client
ports = [{"name": f"p{i}", "port": 1000 + i} for i in range(40)]
client.CoreV1Api(lab.api).create_namespaced_service(lab.namespace, {
    "metadata": {"name": "ports"},
    "spec": {"type": "NodePort", "selector": {"app": "none"}, "ports": ports}})
q = 'b'"""

# The kernel's two ways onto the machine's storage: its sockets folder (the worker's) and /dev/shm.
FILLS_THE_MACHINE = """import json, os
sockets = os.path.dirname(json.load(open(os.path.expanduser("~/connection.json")))["ip"])
for name, folder in (("sockets", sockets), ("shm", "/dev/shm")):
    written = 0
    try:
        with open(os.path.join(folder, "fill-the-machine"), "wb") as file:
            while written < 200:
                file.write(b"x" * 2**20)
                file.flush()
                written += 1
        print(name, "took 200 MB")
    except OSError as error:
        print(name, "stopped after", written, "MB:", error.strerror)
q = 'b'"""

# iopub messages no kernel of ipykernel's would send: nbclient read each of them
# as a crash of the notebook.
BREAKS_NBCLIENT = """kernel, parent = get_ipython().kernel, get_ipython().parent_header
for msg_type, content in (
        ("comm_open", {"comm_id": "c", "target_name": "jupyter.widget", "data": {}}),
        ("status", {}), ("display_data", {"data": "no dict", "metadata": {}}),
        ("display_data", {"data": {"text/html": "<b>x</b>"}, "metadata": 7}),
        ("execute_result", {"data": {"text/plain": 1}, "execution_count": "x"}),
        ("stream", {"name": "stdout"}), ("error", {}), ("clear_output", {"wait": []})):
    kernel.session.send(kernel.iopub_socket, msg_type, content, parent=parent)
q = 'b'"""

# A kernel that unsets its death signal and ignores the interrupt: the grader kills
# its launcher at the timeout.
OUTLIVES_ITS_KERNEL = """import ctypes, signal
ctypes.CDLL(None).prctl(1, 0)  # PR_SET_PDEATHSIG: none
signal.signal(signal.SIGINT, signal.SIG_IGN)
q = 'b'
while True:
    pass"""

EXPECTED = {  # student: (answers replaced, score)
    "solved": ({}, FULL),
    "breaks-decoding": ({"letter": _forged(UNDECODABLE, TOO_DEEP)}, POINTS["deploy"]),
    "not-a-string-reply": ({"letter": _forged(LITERAL_BOMB, HUGE_MESSAGE)}, POINTS["deploy"]),
    "objects-that-lie": (
        {"letter": EQUALS_EVERYTHING, "double": LOOKALIKE_EXCEPTIONS},
        POINTS["deploy"],
    ),
    # The kernel is killed at the cell timeout: double fails, and deploy runs in a
    # fresh kernel without `lab`.
    "never-returns": ({"double": NEVER_RETURNS}, POINTS["letter"]),
    # Both refused by the quota: q is never set, and the Deployment gets no pods.
    "takes-the-cluster": ({"letter": NODE_PORTS, "deploy": PREEMPTS}, POINTS["double"]),
    # Both writes end at a few MB, in memory the grader frees: the answers still earn everything.
    "fills-the-machine": ({"letter": FILLS_THE_MACHINE}, FULL),
    "breaks-nbclient": ({"letter": BREAKS_NBCLIENT}, FULL),
    # As never-returns, and its kernel does not run on after the grading.
    "outlives-its-kernel": ({"letter": OUTLIVES_ITS_KERNEL}, POINTS["double"]),
}


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory, practice_cluster) -> Path:
    return new_course(tmp_path_factory.mktemp("hostile-course"), master(), ASSIGNMENT, NOTEBOOK)


def _nodes(admin: client.ApiClient) -> dict:
    """Every node's spec: what no submission may leave changed."""
    return {
        node.metadata.name: admin.sanitize_for_serialization(node.spec)
        for node in client.CoreV1Api(admin).list_node().items
    }


@pytest.mark.cluster
@pytest.mark.slow
def test_replies_built_to_break_the_judge_fail_only_their_own_cell(
    course: Path,
    bystander: str,  # noqa: F811 (the fixture imported above)
    practice_cluster,
) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    for student, (replaced, _) in EXPECTED.items():
        _submit(course, student, None, **replaced)
    before = _nodes(admin)

    with adopting_orphans():
        outcomes = grade_class(
            course,
            ASSIGNMENT,
            settings=GradingSettings(jobs=2, cell_timeout=15, patience=8),
            provider="practice",
        )
        left = jailed_kernels()
    print(table(outcomes))

    assert {o.student: (o.status, o.score) for o in outcomes} == {
        student: ("graded", score) for student, (_, score) in EXPECTED.items()
    }
    assert not sandbox.leftovers(admin, Course(course).key)
    for student in EXPECTED:
        assert (
            course / "autograded" / student / ASSIGNMENT / NOTEBOOK
        ).stat().st_size < 1_000_000, student
    assert _nodes(admin) == before
    assert client.CoreV1Api(admin).read_namespaced_config_map("precious", bystander).data == {
        "keep": "me"
    }
    assert not left, f"kernels outlived the grading: {left}"
    filled = (course / "autograded" / "fills-the-machine" / ASSIGNMENT / NOTEBOOK).read_text()
    assert re.search(r"sockets stopped after 1[0-6] MB: No space left on device", filled), filled
    assert re.search(
        r"shm stopped after (6[0-4]|[1-5][0-9]) MB: No space left on device", filled
    ), filled
    assert not Path("/dev/shm/fill-the-machine").exists()


@pytest.mark.parametrize(
    "reply",
    [
        '["value", 4]',
        '{"raised": 4}',
        '{"value": {"set": [[1]]}}',
        '{"value": {}}',
        '{"value": ' + "[" * 5_000 + "]" * 5_000 + "}",
        "not json",
    ],
)
def test_a_reply_that_breaks_decoding_is_no_exception_a_test_may_expect(reply: str) -> None:
    double = values.StudentFunction("h0", "double", lambda request: reply)
    with pytest.raises(values.StudentError, match="answer it cannot read"):
        double(2)


@pytest.mark.parametrize("shown", ["[0, 0]", "'a', 'b'", "'a' 'b'", "b'a'", "'a\\\n'", "('a')"])
def test_only_a_lone_string_literal_is_read_from_a_kernel(shown: str) -> None:
    with pytest.raises(ValueError, match="something other than the string"):
        values.shown_string(shown)
    assert values.shown_string(repr('{"q": "it\'s \\"b\\""}')) == '{"q": "it\'s \\"b\\""}'
