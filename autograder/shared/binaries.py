"""Find the cluster binaries (kube-apiserver, etcd, kwok, kind...) at their pinned versions.

Lookup order for each binary: the directory in ``$LAB_BIN_DIR``, ``PATH``, the project's
cache (outside the repo, one folder per pinned version); a missing one is built with Go from
Go modules by `autograder.shared.gobuild`, imported only then.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from autograder.shared.errors import LabError
from autograder.shared.pins import KUBERNETES_VERSION, PIN_OF, PINS, cache_dir

BIN_DIR_ENV = "LAB_BIN_DIR"
KUBERNETES_BINARIES = frozenset(PINS["kubernetes"].binaries)
PRACTICE_BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "kwok",
    "kwokctl",
)


class BinaryNotFound(LabError):
    """A binary is missing and cannot be built here; the message says how to get it."""


def _reported_minor(path: Path) -> int | None:
    """The Kubernetes minor version a kube binary reports, or None when it will not say."""
    status = path.stat()
    return _asked_minor(path, status.st_ino, status.st_mtime_ns, status.st_size)


@functools.lru_cache(maxsize=64)
def _asked_minor(path: Path, inode: int, mtime_ns: int, size: int) -> int | None:
    """Asked once per file as it is: each `kubectl port-forward` looked kubectl up again."""
    flag = ["version", "--client"] if path.name == "kubectl" else ["--version"]
    try:
        out = subprocess.run(
            [str(path), *flag], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"v1\.(\d+)\.", out)
    return int(match.group(1)) if match else None


def _usable(path: Path) -> bool:
    """Kubernetes binaries from elsewhere must be within one minor of the pinned version."""
    if not (path.is_file() and os.access(path, os.X_OK)):
        return False
    if path.name not in KUBERNETES_BINARIES:
        return True
    minor = _reported_minor(path)
    pinned = int(KUBERNETES_VERSION.split(".")[1])
    return minor is not None and abs(minor - pinned) <= 1


def find(name: str) -> Path | None:
    """Where `name` is, without building: $LAB_BIN_DIR, then PATH, then the cache."""
    if name not in PIN_OF:
        raise KeyError(f"unknown binary {name!r}; known: {', '.join(sorted(PIN_OF))}")
    candidates: list[Path] = []
    if os.environ.get(BIN_DIR_ENV):
        candidates.append(Path(os.environ[BIN_DIR_ENV]) / name)
    candidates += [
        Path(folder) / name for folder in os.environ.get("PATH", "").split(os.pathsep) if folder
    ]
    candidates.append(cache_dir(PIN_OF[name]) / name)
    return next((path for path in candidates if _usable(path)), None)


def how_to_get(names: Iterable[str]) -> str:
    """The message shown when binaries are missing and Go is not installed."""
    return (
        f"Missing: {', '.join(names)}. Get them one of these ways:\n"
        "  1. conda env create -f environment.yml && conda activate k8s-ml-lesson01\n"
        "     (conda-forge ships kubernetes-server, kubernetes-client, etcd and kind)\n"
        f"  2. install Go >= 1.24 (https://go.dev/doc/install); the lab then builds them itself\n"
        f"  3. put prebuilt binaries in one folder and export {BIN_DIR_ENV}=/that/folder\n"
        "  4. use Docker + kind instead: LAB_CLUSTER=kind (only kind and kubectl are needed)"
    )


def ensure(names: Iterable[str]) -> dict[str, Path]:
    """Paths of every binary in `names`, building the missing ones with Go."""
    names = list(dict.fromkeys(names))
    found = {name: find(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing and shutil.which("go") is None:
        raise BinaryNotFound(how_to_get(missing))
    if missing:
        from autograder.shared import gobuild  # only when something must be built

        for group in dict.fromkeys(PIN_OF[name].name for name in missing):
            gobuild.build(
                gobuild.RECIPES[group], [name for name in missing if PIN_OF[name].name == group]
            )
    return {name: path or cache_dir(PIN_OF[name]) / name for name, path in found.items()}
