"""Hostile submissions against the jail, graded by `grade_class` on the real practice cluster.

Each reproduces an escape found in a hostile trial: a submission that shadows the jail's own
module, a kernel that plants one for the next kernel, a kwok PortForward that runs a command on
the host, etcd and the other control-plane ports on loopback, a symlink at a later notebook's
output, a node given an owner in the student's namespace, and memory and fork bombs. Each must
get exactly the score its honest work earned, and leave the bystander namespace, the nodes and
the marker paths untouched.
"""

from __future__ import annotations

import re
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import nbformat
import psutil
import pytest
from kubernetes import client
from nbformat.v4 import new_code_cell, new_notebook

import autograder
from autograder import REPO_ROOT
from autograder.grading import sandbox
from autograder.grading.classrun import submissions
from autograder.grading.classrun.course import Course, ensure_in_gradebook
from autograder.grading.classrun.runner import grade_class, table
from autograder.grading.kernel import jail
from autograder.grading.settings import GradingSettings
from autograder.shared import binaries, kubeconfig
from test_grading import (
    ASSIGNMENT,
    FULL,
    NOTEBOOK,
    POINTS,
    STEPS,
    _meta,
    bystander,  # noqa: F401 (a fixture the test asks for)
    edit,
    master,
    replace_step,
)

# sorts after steps.ipynb: nbgrader writes its output after the first kernel ran
LATER = "wrap-up.ipynb"
SOLUTION = {step: solution for step, solution, _, _ in STEPS}
TOTAL = FULL + 1

SHADOW_INIT = """import os
if os.geteuid() == 0:
    open({marker!r}, "a").write("submission code ran as root\\n")
__path__[:], __file__ = [{real!r}], {real!r} + "/__init__.py"
exec(compile(open(__file__).read(), __file__, "exec"))
"""
SHADOW_JAIL = 'open({marker!r}, "a").write("the submission\'s jail module ran\\n")\n'
PLANT = """import os, pathlib
for file, text in {files!r}.items():
    for base in (".", {autograded!r}):
        try:
            (pathlib.Path(base) / file).parent.mkdir(parents=True, exist_ok=True)
            (pathlib.Path(base) / file).write_text(text)
            print("PROBE planted", base, file)
        except OSError as error:
            print("PROBE refused", base, file, error.errno)
"""
KWOK_COMMAND = """from kubernetes import client as k8s
for plural, namespaced in [("portforwards", True), ("clusterportforwards", False),
                           ("logs", True), ("clusterlogs", False)]:
    body = {{"apiVersion": "kwok.x-k8s.io/v1alpha1", "metadata": {{"name": "ml-api"}},
            "spec": {{"forwards": [{{"ports": [8080], "command": ["sh", "-c", "touch {marker}"]}}],
                     "logs": [{{"containers": ["ml-api"], "logsFile": "/etc/shadow"}}]}}}}
    api = k8s.CustomObjectsApi(lab.api)
    try:
        if namespaced:
            api.create_namespaced_custom_object(
                "kwok.x-k8s.io", "v1alpha1", lab.namespace, plural, body)
        else:
            api.create_cluster_custom_object("kwok.x-k8s.io", "v1alpha1", plural, body)
        print("PROBE created", plural)
    except k8s.ApiException as error:
        print("PROBE refused", plural, error.status)
"""
PORTS = """import socket
for host, port in {targets!r}:
    with socket.socket() as connection:
        connection.settimeout(3)
        reached = connection.connect_ex((host, port)) == 0
        print("PROBE", host, port, "reached" if reached else "unreachable")
"""
SYMLINK = """import os
for base in (".", {autograded!r}):
    link = os.path.join(base, {later!r})
    try:
        os.symlink({target!r}, link + ".new")
        os.replace(link + ".new", link)
        print("PROBE linked", base)
    except OSError as error:
        print("PROBE refused", base, error.errno)
"""
NODES = """from kubernetes import client as k8s
owner = lab.core.create_namespaced_config_map(
    lab.namespace, {{"metadata": {{"name": "node-owner"}}}})
reference = {{"apiVersion": "v1", "kind": "ConfigMap", "name": "node-owner",
             "uid": owner.metadata.uid}}
for what, patch in [
        ("owner", {{"metadata": {{"ownerReferences": [reference]}}}}),
        ("finalizer", {{"metadata": {{"finalizers": ["example.com/keep"]}}}}),
        ("label", {{"metadata": {{"labels": {{"hacked": "yes"}}}}}}),
        ("taint", {{"spec": {{"taints": [{{"key": "hacked", "effect": "NoSchedule"}}]}}}}),
        ("cordon", {{"spec": {{"unschedulable": True}}}}),
        ("uncordon", {{"spec": {{"unschedulable": False}}}})]:
    try:
        lab.core.patch_node({node!r}, patch)
        print("PROBE allowed", what)
    except k8s.ApiException as error:
        print("PROBE refused", what)
"""
MEMORY_HOG = """def hog():
    chunks = []
    while True:
        chunks.append(b"x" * (64 * 2**20))
hog()
"""
FORK_BOMB = """import os, time
def bomb():
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.5)
try:
    while True:
        if os.fork() == 0:
            bomb()
except OSError as error:
    print("PROBE fork refused", error.errno)
"""


SENTINEL = ("INSTRUCTOR_CLOUD_KEY", f"sentinel-{uuid.uuid4().hex}")
# Reads every path it is given (files read, folders listed, recursively), and looks for
# the grader's variable in its own environment, in a subprocess's and in an app.py it
# imports, as a student would.
SNOOP = """import os, pathlib, subprocess, sys
def walk(path, depth=0):
    try:
        if path.is_dir():
            for entry in sorted(os.listdir(path)):
                if depth < 3:
                    yield from walk(path / entry, depth + 1)
                else:
                    yield str(path / entry)
            return
        path.read_bytes()
        yield str(path)
    except OSError:
        return
for place in {places!r}:
    for found in walk(pathlib.Path(place)):
        print("PROBE read", found)
pathlib.Path("app.py").write_text("import os\\nSEEN = {name!r} in os.environ\\n")
sys.path.insert(0, ".")
import app
seen = {{"kernel": {name!r} in os.environ, "app.py": app.SEEN,
        "subprocess": "{name}=" in subprocess.run(["env"], capture_output=True, text=True).stdout}}
for where, found in seen.items():
    if found:
        print("PROBE sentinel in", where)
print("PROBE environment", sorted(os.environ))
"""


def later_notebook() -> nbformat.NotebookNode:
    """A second notebook with no cluster work: a kernel of its own, after the first one."""
    notebook = new_notebook(
        cells=[
            new_code_cell(
                "### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION",
                metadata=_meta("answer", solution=True),
            ),
            new_code_cell(
                "assert answer == 42",
                metadata=_meta("test-answer", grade=True, locked=True, points=1),
            ),
        ]
    )
    notebook.metadata.kernelspec = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return notebook


@pytest.fixture(scope="module")
def course(tmp_path_factory: pytest.TempPathFactory, practice_cluster) -> Path:
    """The cluster steps assignment of test_grading plus a later notebook, in a gradebook."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy2(REPO_ROOT / "nbgrader_config.py", root / "nbgrader_config.py")
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(master(), root / "source" / ASSIGNMENT / NOTEBOOK)
    nbformat.write(later_notebook(), root / "source" / ASSIGNMENT / LATER)
    ensure_in_gradebook(Course(root), ASSIGNMENT)
    return root


@pytest.fixture(scope="module")
def markers() -> Iterator[Path]:
    """A folder outside /tmp that only code running outside the jail could write in."""
    folder = Path("/var/tmp") / f"isolation-markers-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    (folder / "gradebook-stand-in.db").write_text("precious")
    yield folder
    shutil.rmtree(folder)


def _shadow_package(marker: Path) -> dict[str, str]:
    """Files that make `autograder` the submission's own (then hand over to the real package)."""
    real = str(Path(autograder.__file__).parent)
    return {
        "autograder/__init__.py": SHADOW_INIT.format(marker=str(marker), real=real),
        "autograder/grading/__init__.py": "",
        "autograder/grading/kernel/jail.py": SHADOW_JAIL.format(marker=str(marker)),
    }


def _outside_the_jail(course: Path) -> list[str]:
    """Every course path a kernel could look for, the real course's masters, the grader's home."""
    home = Path.home()
    interpreter = [
        path for path in (Path(sys.prefix), Path(sys.base_prefix)) if path.is_relative_to(home)
    ]
    places = [
        course,
        REPO_ROOT / "source",
        REPO_ROOT / "submitted",
        REPO_ROOT / ".git",
        REPO_ROOT / "tests",
    ]
    places += [
        path
        for path in home.iterdir()
        if not any(inside.is_relative_to(path) for inside in interpreter)
    ]
    return [str(path) for path in places]


def _control_plane_targets(practice_cluster) -> list[tuple[str, int]]:
    """Each cluster port on loopback and every host address, but the API server's on loopback.

    The ports are etcd's two, the API server's, kwok's and the controllers'; on the API server's
    loopback port the jail's relay answers.
    """
    text = (practice_cluster.workdir / "kwok.yaml").read_text()
    ports = {
        name: int(port) for name, port in re.findall(r"^\s*(\w+Port): (\d+)$", text, re.MULTILINE)
    }
    hosts = sorted(
        {
            address.address
            for addresses in psutil.net_if_addrs().values()
            for address in addresses
            if address.family.name == "AF_INET"
        }
    )
    return [
        (host, port)
        for host in hosts
        for port in sorted(set(ports.values()) - {0})
        if (host, port) != ("127.0.0.1", ports["kubeApiserverPort"])
    ]


def _probes(course: Path, student: str, step: str) -> list[str]:
    """The PROBE lines a step's cell printed, as nbgrader saved them."""
    path = course / "autograded" / student / ASSIGNMENT / NOTEBOOK
    cell = next(
        cell
        for cell in nbformat.read(path, as_version=4).cells
        if cell.metadata.get("nbgrader", {}).get("grade_id") == step
    )
    text = "".join(output.get("text", "") + output.get("ename", "") for output in cell.outputs)
    return [
        line.removeprefix("PROBE ") for line in text.splitlines() if line.startswith("PROBE ")
    ] or [text]


def _errors(course: Path, student: str) -> dict[str, str]:
    """Each cell's error as nbgrader saved it: why a student lost points."""
    path = course / "autograded" / student / ASSIGNMENT / NOTEBOOK
    return {
        cell.metadata.get("nbgrader", {}).get("grade_id", "?"): f"{output.ename}: {output.evalue}"
        for cell in nbformat.read(path, as_version=4).cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    }


def _node_state(core: client.CoreV1Api) -> dict[str, tuple]:
    return {
        node.metadata.name: (
            node.metadata.labels,
            node.metadata.annotations,
            node.metadata.owner_references,
            node.metadata.finalizers,
            node.spec.taints,
        )
        for node in core.list_node().items
    }


@pytest.mark.cluster
@pytest.mark.slow
def test_hostile_kernels_stay_in_the_jail(
    course: Path,
    bystander: str,  # noqa: F811 (the fixture)
    markers: Path,
    practice_cluster,
) -> None:
    admin = kubeconfig.api_client(practice_cluster.context)
    core = client.CoreV1Api(admin)
    nodes_before = _node_state(core)
    node = sorted(nodes_before)[0]
    marker = markers / "escaped"
    target = markers / "gradebook-stand-in.db"
    autograded = lambda student: str(course / "autograded" / student / ASSIGNMENT)  # noqa: E731
    hostile = {
        "shadows-jail": None,
        "plants-module": PLANT.format(
            files=_shadow_package(marker), autograded=autograded("plants-module")
        ),
        "kwok-command": KWOK_COMMAND.format(marker=marker),
        "control-plane": PORTS.format(targets=_control_plane_targets(practice_cluster)),
        "symlinks-output": SYMLINK.format(
            autograded=autograded("symlinks-output"), later=LATER, target=str(target)
        ),
        "patches-node": NODES.format(node=node),
    }
    for student, code in hostile.items():
        submissions.write(course, ASSIGNMENT, student, None)
        if code:
            edit(course, student, replace_step("deploy", f"{code}\n{SOLUTION['deploy']}"))
    for file, text in _shadow_package(marker).items():
        path = course / "submitted" / "shadows-jail" / ASSIGNMENT / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    submissions.write(course, ASSIGNMENT, "memory-hog", None)
    edit(course, "memory-hog", replace_step("scale", MEMORY_HOG))
    submissions.write(course, ASSIGNMENT, "fork-bomb", None)
    edit(course, "fork-bomb", replace_step("cleanup", FORK_BOMB))
    submissions.write(course, ASSIGNMENT, "solved", None)

    outcomes = grade_class(
        course,
        ASSIGNMENT,
        settings=GradingSettings(jobs=2, cell_timeout=40, patience=20),  # two other workers load it
        provider="practice",
    )

    print(table(outcomes))
    expected = dict.fromkeys([*hostile, "solved"], TOTAL)
    expected |= {"memory-hog": TOTAL - POINTS["scale"], "fork-bomb": TOTAL - POINTS["cleanup"]}
    assert {o.student: (o.status, o.score) for o in outcomes} == {
        s: ("graded", p) for s, p in expected.items()
    }, {o.student: _errors(course, o.student) for o in outcomes}
    probes = {
        student: _probes(course, student, "deploy")
        for student in hostile
        if student != "shadows-jail"
    }
    probes["memory-hog"] = _probes(course, "memory-hog", "scale")
    probes["fork-bomb"] = _probes(course, "fork-bomb", "cleanup")
    print(probes)
    # The output folder's path leads into the kernel's own /tmp (a course under /tmp) or
    # nowhere: never to the folder.
    assert [probe for probe in probes["plants-module"] if probe.startswith("planted . ")] == [
        f"planted . {file}" for file in _shadow_package(marker)
    ]
    assert not (Path(autograded("plants-module")) / "autograder").exists()
    assert probes["kwok-command"] == [
        f"refused {plural} 403"
        for plural in ("portforwards", "clusterportforwards", "logs", "clusterlogs")
    ]
    assert probes["control-plane"] == [
        f"{host} {port} unreachable" for host, port in _control_plane_targets(practice_cluster)
    ]
    assert probes["symlinks-output"][0] == "linked ."
    assert not (Path(autograded("symlinks-output")) / LATER).is_symlink()
    assert probes["patches-node"] == [
        "refused owner",
        "refused finalizer",
        "refused label",
        "refused taint",
        "allowed cordon",
        "allowed uncordon",
    ]
    assert "MemoryError" in probes["memory-hog"][0]
    assert probes["fork-bomb"] == ["fork refused 11"]

    assert sorted(path.name for path in markers.iterdir()) == ["gradebook-stand-in.db"]
    assert target.read_text() == "precious"
    assert core.read_namespaced_config_map("precious", bystander).data == {"keep": "me"}
    assert _node_state(core) == nodes_before
    assert sandbox.leftovers(admin, Course(course).key) == []


@pytest.mark.cluster
@pytest.mark.slow
def test_a_kernel_reads_no_course_path_and_gets_none_of_the_graders_environment(
    course: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, value = SENTINEL
    monkeypatch.setenv(name, value)  # as an instructor's shell exported it before `grade`
    submissions.write(course, ASSIGNMENT, "classmate", None)
    edit(
        course,
        "classmate",
        replace_step("deploy", f"# classmate-secret-work\n{SOLUTION['deploy']}"),
    )
    submissions.write(course, ASSIGNMENT, "snoop", None)
    snoop = SNOOP.format(
        places=_outside_the_jail(course), name=name
    )  # its value must appear nowhere
    edit(course, "snoop", replace_step("deploy", f"{snoop}\n{SOLUTION['deploy']}"))

    outcomes = grade_class(
        course,
        ASSIGNMENT,
        settings=GradingSettings(jobs=2),
        provider="practice",
        students=["classmate", "snoop"],
    )

    print(table(outcomes))
    assert {o.student: (o.status, o.score) for o in outcomes} == {
        "classmate": ("graded", TOTAL),
        "snoop": ("graded", TOTAL),
    }
    probes = _probes(course, "snoop", "deploy")
    print(probes)
    tools = {
        f"read {binaries.find(tool).resolve()}" for tool in jail.TOOLS
    }  # what the kernel runs: kubectl
    assert [
        probe for probe in probes if not probe.startswith("environment ") and probe not in tools
    ] == [], "a kernel read a course path or saw the grader's variable"
    print(probes[-1])  # the variables a kernel gets
    assert name not in probes[-1]
    leaked = [
        str(path)
        for path in course.rglob("*")
        if path.is_file() and value.encode() in path.read_bytes()
    ]
    assert leaked == [], "the grader's environment reached a graded notebook or feedback"
