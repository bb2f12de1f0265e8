"""The student image holds no answer: searched file by file for the masters' hidden tests and the
answer-holding files, and its JupyterLab offers students no instructor tool of nbgrader."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import time
from collections.abc import Iterator

import pytest
import requests
from nbformat import read as read_notebook

from autograder import REPO_ROOT
from autograder.build import hostedimage
from autograder.lab import images
from jupyter_browser import SCREENSHOTS, VIEWPORT, Screenshots, chromium

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS\n(.*?)### END HIDDEN TESTS", re.S)
SHORTEST_NEEDLE = (
    20  # characters: shorter hidden lines (`pass`, a bracket) say nothing about a leak
)
ELF = b"\x7fELF"
SMALLEST_ANSWER = 200  # bytes: smaller answer files (an empty __init__.py) match unrelated files
# Files that hold answers or grade them: a student's server may hold none of them, under any name.
ANSWER_FILES = (
    "source/**/*",
    "autograder/grading/**/*",
    "autograder/build/**/*",
    "autograder/bench/**/*",
    "autograder/modelserver/*",
    "autograder/course/**/*",
    "manifests/deployment.yaml",
    "manifests/service.yaml",
)
INSTRUCTOR_PLUGINS = {
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:course-list",
}
PAGE_CONFIG = re.compile(
    r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', re.S
)


def hidden_test_lines() -> set[str]:
    """Every telling line of the masters' hidden tests that the release does not show."""
    released = {
        line.strip()
        for notebook in (REPO_ROOT / "notebooks").glob("*.ipynb")
        for cell in read_notebook(notebook, as_version=4).cells
        for line in cell.source.splitlines()
    }
    lines = set()
    for master in sorted((REPO_ROOT / "source").glob("*/*.ipynb")):
        for cell in read_notebook(master, as_version=4).cells:
            for region in HIDDEN.findall(cell.source):
                lines.update(
                    line.strip()
                    for line in region.splitlines()
                    if len(line.strip()) >= SHORTEST_NEEDLE
                )
    assert lines - released, "the masters hold hidden tests"
    return lines - released


def needles() -> list[bytes]:
    """The hidden lines as a file would hold them: as written, and JSON-escaped (a notebook)."""
    return sorted(
        {form.encode() for line in hidden_test_lines() for form in (line, json.dumps(line)[1:-1])}
    )


def answer_digests() -> dict[str, str]:
    """The SHA-256 of every answer-holding file of the repository, to its path."""
    files = {
        path
        for pattern in ANSWER_FILES
        for path in REPO_ROOT.glob(pattern)
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.stat().st_size >= SMALLEST_ANSWER
    }
    return {
        hashlib.sha256(path.read_bytes()).hexdigest(): str(path.relative_to(REPO_ROOT))
        for path in files
    }


def leaks(files: Iterator[tuple[str, bytes]]) -> list[str]:
    """Each file that holds a hidden test line or is an answer file, with what it holds."""
    found, wanted, digests = [], needles(), answer_digests()
    for name, content in files:
        if (digest := hashlib.sha256(content).hexdigest()) in digests:
            found.append(f"{name}: a copy of {digests[digest]}")
        if not content.startswith(
            ELF
        ):  # compiled programs (the cluster's binaries: most of the bytes)
            found += [
                f"{name}: hidden test line {needle.decode()!r}"
                for needle in wanted
                if needle in content
            ]
    return found


def filesystem(container) -> Iterator[tuple[str, bytes]]:
    """Every regular file of a container's filesystem (`docker export`), with its content."""
    with tarfile.open(fileobj=_Stream(container.export()), mode="r|") as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                yield member.name, handle.read() if handle else b""


class _Stream:
    """docker's export chunks as the file object tarfile's stream mode reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks, self.rest = iter(chunks), b""

    def read(self, size: int) -> bytes:
        while len(self.rest) < size:
            chunk = next(self.chunks, b"")
            if not chunk:
                break
            self.rest += chunk
        taken, self.rest = self.rest[:size], self.rest[size:]
        return taken


def test_the_allowlist_takes_the_release_and_runtime_and_no_answer_file() -> None:
    chosen = hostedimage.student_files(REPO_ROOT)
    sources = {str(path.relative_to(REPO_ROOT)) for path in chosen.values()}
    assert {
        f"notebooks/{path.name}" for path in (REPO_ROOT / "notebooks").glob("*.ipynb")
    } <= sources
    assert {
        "autograder/lab/__init__.py",
        "autograder/lesson/checks.py",
        "autograder/practice/supervise.py",
        "manifests/practice/kwokctl.yaml",
    } <= sources
    assert not sources & set(answer_digests().values()), "an answer-holding file is allowed"
    assert not leaks((name, path.read_bytes()) for name, path in chosen.items())


def test_the_leak_search_finds_a_master_and_a_renamed_reference_manifest() -> None:
    master = REPO_ROOT / "source" / "lesson01" / "04-first-deployment.ipynb"
    found = leaks(
        iter(
            [
                ("home/copy.ipynb", master.read_bytes()),
                ("tmp/x.yaml", (REPO_ROOT / "manifests" / "deployment.yaml").read_bytes()),
            ]
        )
    )
    assert any(entry.startswith("home/copy.ipynb: a copy of source/lesson01/") for entry in found)
    assert any(entry.startswith("home/copy.ipynb: hidden test line") for entry in found)
    assert "tmp/x.yaml: a copy of manifests/deployment.yaml" in found


@pytest.fixture(scope="module")
def student_image() -> hostedimage.HostedBuild:
    """The student image, built from the allowlist (cached after the first build: seconds)."""
    missing = set(hostedimage.PRACTICE_BINARIES) - set(hostedimage.cached_binaries())
    assert not missing, (
        f"no pinned {sorted(missing)} on this machine: run `make test-binaries` first"
    )
    return hostedimage.build(hostedimage.STUDENT_TAG, student=True)


@pytest.mark.docker
@pytest.mark.slow
def test_no_file_of_the_student_image_holds_a_hidden_test_or_an_answer(
    student_image: hostedimage.HostedBuild,
) -> None:
    client = images.docker_client()
    container = client.containers.create(student_image.tag)
    try:
        started = time.monotonic()
        files = list(filesystem(container))
        found = leaks(iter(files))
        print(
            f"searched {len(files)} files of {student_image.tag} "
            f"in {time.monotonic() - started:.1f} s"
        )
    finally:
        container.remove(force=True)
    names = [name for name, _ in files]
    assert not found, f"answers in the student image: {found}"
    assert not [
        name
        for name in names
        if re.search(r"autograder/(grading|build|bench)/|/source/lesson01/", name)
    ]
    assert sum(name.startswith("home/jovyan/notebooks/") for name in names) == len(
        list((REPO_ROOT / "notebooks").glob("*.ipynb"))
    )


@pytest.mark.docker
@pytest.mark.slow
def test_the_student_image_runs_the_lab_and_offers_no_instructor_tool(
    student_image: hostedimage.HostedBuild,
) -> None:
    modules = sorted(
        {
            key.removeprefix("lib/").removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            for key in hostedimage.student_files(REPO_ROOT)
            if key.endswith(".py") and not key.endswith("__main__.py")
        }
    )
    with hostedimage.running(student_image.tag) as lab:
        lab.python(f"import importlib\nfor name in {modules!r}:\n    importlib.import_module(name)")
        namespace = lab.python(
            "from autograder.lab import connect\nprint(connect('practice').namespace)"
        )
        page = requests.get(f"{lab.url}/lab", params={"token": lab.token}, timeout=30).text
        config = json.loads(PAGE_CONFIG.search(page)[1])
        formgrader = requests.get(f"{lab.url}/formgrader", params={"token": lab.token}, timeout=30)
        assignments = requests.get(
            f"{lab.url}/assignments", params={"token": lab.token}, timeout=30
        )
        home = requests.get(
            f"{lab.url}/api/contents/notebooks", params={"token": lab.token}, timeout=30
        ).json()
    assert namespace.strip(), (
        "a notebook's connect() reaches the practice cluster started with the server"
    )
    assert {item["name"] for item in home["content"]} == {
        path.name for path in (REPO_ROOT / "notebooks").glob("*.ipynb")
    }, "the release is in the home"
    assert set(config["disabledExtensions"]) >= INSTRUCTOR_PLUGINS
    assert "@jupyter/nbgrader:assignment-list" not in config["disabledExtensions"]
    assert formgrader.status_code == 404, "no formgrader on a student's server"
    assert assignments.status_code != 404, (
        "the Assignments tab's handler answers (it asks for a course)"
    )


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.browser
def test_a_student_sees_the_assignments_tab_and_no_formgrader_in_jupyterlab(
    student_image: hostedimage.HostedBuild,
) -> None:
    shots = Screenshots(SCREENSHOTS / "student-image-jupyterlab")
    command = [
        "jupyter",
        "lab",
        "--ip=0.0.0.0",
        "--port=8888",
        "--no-browser",
        "--LabApp.expose_app_in_browser=True",
    ]
    with (
        hostedimage.running(student_image.tag, command=command) as lab,
        chromium() as browser,
    ):
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{lab.url}/lab?token={lab.token}")
        page.wait_for_function(
            "() => window.jupyterapp && window.jupyterapp.commands.hasCommand("
            "'nbgrader:open-assignment-list')",
            timeout=90_000,
        )
        commands = page.evaluate(
            "() => ['nbgrader:open-formgrader', 'nbgrader:open-create-assignment', "
            "'nbgrader:open-course-list', 'nbgrader:open-assignment-list']"
            ".map(id => window.jupyterapp.commands.hasCommand(id))"
        )
        page.evaluate("() => window.jupyterapp.commands.execute('nbgrader:open-assignment-list')")
        page.get_by_text("Released assignments").first.wait_for(timeout=30_000)
        shots.take(page, "assignments-tab")
        page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
        offered = page.locator(".lm-Menu-content .lm-Menu-itemLabel").all_inner_texts()
        shots.take(page, "nbgrader-menu")
    assert commands == [False, False, False, True]
    assert "Assignment List" in offered and not [
        item for item in offered if re.search("Formgrader|Course", item)
    ]
