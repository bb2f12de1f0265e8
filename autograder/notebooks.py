"""Student notebooks are nbgrader's output: generate them from the masters, spot drift, run them."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from autograder import REPO_ROOT
from autograder.shared.errors import LabError

logger = logging.getLogger(__name__)

ASSIGNMENT = "lesson01"
STUDENT_DIR = "notebooks"
SOURCE_DIR = "source"
NO_CLUSTER = ("01-why-orchestration", "02-choosing-a-platform")
# The kernel's manager hands it CurveZMQ keys (the kernelspec of ipykernel declares them): over
# plain TCP ipykernel warns at every start that the traffic is unencrypted, lines
# `notebooks run` users took for errors.
KERNEL_CONFIG = Config({"KernelManager": {"transport_encryption": "auto"}})


class NotebookError(LabError):
    """nbgrader could not produce the student notebooks; the message carries its log."""


@contextmanager
def _python_scripts_on_path() -> Iterator[None]:
    """nbgrader runs `alembic` through PATH: this interpreter's scripts must be found first."""
    before = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{before}"
    try:
        yield
    finally:
        os.environ["PATH"] = before


def generate(course: Path, into: Path) -> Path:
    """Run `nbgrader generate_assignment` on a copy of the course in `into`.

    Returns the release folder.

    Working on a copy keeps the instructor's gradebook and release folder untouched.
    """
    from nbgrader.apps import NbGraderAPI

    masters = course / SOURCE_DIR / ASSIGNMENT
    if not any(masters.glob("*.ipynb")):
        raise NotebookError(
            f"no master notebooks in {masters}; the masters live in source/{ASSIGNMENT}/"
        )
    shutil.copytree(masters, into / SOURCE_DIR / ASSIGNMENT, dirs_exist_ok=True)
    config = PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config()
    config.CourseDirectory.root = str(into)
    with _python_scripts_on_path():
        result = NbGraderAPI(config=config).generate_assignment(ASSIGNMENT, force=True)
    if not result["success"]:
        raise NotebookError(
            f"nbgrader generate_assignment {ASSIGNMENT} failed:\n"
            f"{result.get('error') or result.get('log')}"
        )
    return into / "release" / ASSIGNMENT


def _same(a: Path, b: Path) -> bool:
    return b.is_file() and nbformat.read(a, as_version=4) == nbformat.read(b, as_version=4)


def drift(course: Path = REPO_ROOT) -> list[str]:
    """Student notebooks that differ from, are missing from, or are absent in a fresh generation."""
    with tempfile.TemporaryDirectory(prefix="nbgrader-course-") as scratch:
        release = generate(course, Path(scratch))
        fresh = {path.name: path for path in release.glob("*.ipynb")}
        shipped = {path.name: path for path in (course / STUDENT_DIR).glob("*.ipynb")}
        return sorted(
            name
            for name in fresh.keys() | shipped.keys()
            if name not in fresh or name not in shipped or not _same(fresh[name], shipped[name])
        )


def sync(course: Path = REPO_ROOT) -> list[str]:
    """Regenerate notebooks/ from the masters; returns the names that changed or were removed."""
    with tempfile.TemporaryDirectory(prefix="nbgrader-course-") as scratch:
        release = generate(course, Path(scratch))
        target = course / STUDENT_DIR
        target.mkdir(exist_ok=True)
        changed = []
        fresh = {path.name for path in release.glob("*.ipynb")}
        for stale in sorted(target.glob("*.ipynb")):
            if stale.name not in fresh:
                stale.unlink()
                changed.append(stale.name)
        for name in sorted(fresh):
            if not _same(release / name, target / name):
                shutil.copyfile(release / name, target / name)
                changed.append(name)
        return changed


def needs_cluster(path: Path) -> bool:
    """Notebooks 1 and 2 are pure Python; every later one drives a cluster."""
    return path.stem not in NO_CLUSTER


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for a kernel about to start, and put the old values back."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def execute(
    path: Path, *, namespace: str | None = None, allow_errors: bool = False, timeout: float = 600
) -> tuple[nbformat.NotebookNode, float]:
    """Run a notebook top to bottom in a fresh kernel of this Python.

    Returns it with its outputs and the seconds taken.

    A cluster notebook works in `namespace` (through LAB_NAMESPACE, as a student's would).
    """
    notebook = nbformat.read(path, as_version=4)
    variables = {"LAB_NAMESPACE": namespace} if namespace else {}
    started = time.monotonic()
    with _python_scripts_on_path(), _environment(**variables):
        NotebookClient(
            notebook,
            timeout=timeout,
            kernel_name="python3",
            allow_errors=allow_errors,
            resources={"metadata": {"path": str(path.parent)}},
            config=KERNEL_CONFIG,
        ).execute()
    return notebook, time.monotonic() - started


@dataclass(frozen=True)
class Run:
    """One notebook's run: how long it took and the errors its cells showed."""

    name: str
    seconds: float
    errors: tuple[str, ...]


def errors(notebook: nbformat.NotebookNode) -> tuple[str, ...]:
    """Every error a cell showed, as "ErrorName: message"."""
    return tuple(
        f"{output.ename}: {output.evalue}"[:300]
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    )


def run_all(folder: Path, provider: str | None = None) -> list[Run]:
    """Run `folder`'s notebooks in order, cluster ones in throwaway namespaces; record errors."""
    from autograder.lab.cluster import connect

    runs = []
    for path in sorted(folder.glob("*.ipynb")):
        namespace = f"nb-{path.stem[:2]}-{uuid.uuid4().hex[:6]}" if needs_cluster(path) else None
        lab = connect(provider, namespace=namespace) if namespace else None
        logger.info(
            "running %s%s", path.name, f" on {lab.context} in namespace {namespace}" if lab else ""
        )
        try:
            with _environment(**({"LAB_CLUSTER": lab.provider} if lab else {})):
                notebook, seconds = execute(path, namespace=namespace, allow_errors=True)
        finally:
            if lab:
                lab.core.delete_namespace(namespace)
        runs.append(Run(path.stem, seconds, errors(notebook)))
    return runs
