"""The suite on pytest-xdist workers (a pytest plugin): each worker has a lab of its own.

`make test` runs the suite on a few workers (`-n`, `--dist loadgroup`): most of its time is spent
waiting on clusters, kernels and pods rather than computing. A worker gets its own practice
cluster, kubeconfig and lab state (its own `KWOK_WORKDIR`, `KUBECONFIG` and `LAB_CACHE_DIR`,
where the shared cache's builds are linked, never rebuilt), and deletes its cluster when it ends.
What exists once per machine runs on one worker at a time: the kind cluster (group "kind"), the
images built in the Docker engine (group "docker"), the classroom's Unix users and hub (group
"classroom"). xdist hands out its largest groups of tests first (`--loadscope-reorder`), so the
long serial groups start at once rather than late on a worker the others then wait for.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from autograder.practice.cluster import Practice
from autograder.shared.pins import CACHE_DIR_ENV, cache_root
from tiers import fixture_needs

# A worker's own state; everything else in the shared cache (binaries, Go, base images, the kind
# node image's record, the practice images' snapshots) is built once and linked.
OWN_STATE = frozenset({"kubeconfig", "traffic", "practice-at-start.log", "xdist"})
# The resource a test needs that exists once per machine -> the one worker that runs its tests;
# the first that a test needs decides (a kind test needs Docker too).
SERIAL_GROUPS = {"kind": "kind", "docker": "docker"}
CLASSROOM_TESTS = "test_classroom"  # the hub, its Unix users and /srv: one classroom per machine
# A kind test of the node image alone (its build, a cluster of another name) needs Docker, not the
# lab's kind cluster: it runs beside the kind group, which is the longest.
NODE_IMAGE, KIND_CLUSTER = "node_image", "kind_cluster"


def worker_lab(shared: Path, worker: str) -> dict[str, str]:
    """The environment of one worker's lab: its own folders, the shared cache's builds linked."""
    own = shared / "xdist" / worker
    own.mkdir(parents=True, exist_ok=True)
    shared.mkdir(parents=True, exist_ok=True)
    for entry in shared.iterdir():
        link = own / entry.name
        if entry.name not in OWN_STATE and not os.path.lexists(link):
            link.symlink_to(entry)
    return {
        CACHE_DIR_ENV: str(own),
        "KWOK_WORKDIR": str(own / "kwok"),
        "KUBECONFIG": str(own / "kube-config"),
    }


def serial_group(item: pytest.Item) -> str | None:
    """The group of a test whose resource exists once per machine, else None (any worker)."""
    needs = fixture_needs(item) | {marker.name for marker in item.iter_markers()}
    fixtures = set(getattr(item, "fixturenames", ()))
    if Path(str(item.fspath)).name.startswith(CLASSROOM_TESTS):
        return "classroom"
    if NODE_IMAGE in fixtures and KIND_CLUSTER not in fixtures:
        return SERIAL_GROUPS["docker"]
    return next((group for need, group in SERIAL_GROUPS.items() if need in needs), None)


def worker_id(config: pytest.Config) -> str | None:
    """This process's xdist worker id (gw0, gw1...), None in the controller or without xdist.

    From the config xdist gives its workers, not the environment: a suite run by a test of this
    suite inherits its worker's PYTEST_XDIST_WORKER.
    """
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else None


def pytest_configure(config: pytest.Config) -> None:
    worker = worker_id(config)
    if worker:
        os.environ.update(worker_lab(cache_root(), worker))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the tests' ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = serial_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A worker's practice cluster goes with the worker: nothing of the suite keeps running."""
    if worker_id(session.config) and Practice().exists():
        Practice().down()
