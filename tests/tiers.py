"""The suite's two tiers (a pytest plugin).

A test's resources mark it, and the fast tier cannot reach them.

Each marker in RESOURCES names what a test needs beyond a Python process (a cluster, Docker, root,
Go...); a test carrying none is in the fast tier, which plain `pytest` runs (pyproject's addopts
deselect the rest). Tests named on the command line (`pytest tests/test_grading.py -k round`) run
whatever they need, unless `-m` says otherwise. A test is marked from the fixtures it takes, so a
new cluster test leaves the fast tier without anyone remembering to mark it; and a session holding
only fast tests runs without those resources, so a test that reaches for one unmarked fails there
loudly instead of passing slowly.
"""

from __future__ import annotations

import os

import pytest

from autograder.practice.cluster import Practice
from autograder.providers.kind import Kind
from autograder.shared import isolation

RESOURCES = ("cluster", "docker", "kind", "browser", "root", "go", "binaries", "slow")
# What a fixture needs, as markers; a test taking it (directly or through
# another fixture) gets them.
FIXTURE_NEEDS = {
    "practice_cluster": ("cluster",),
    "runtime_cluster": ("cluster",),
    "own_cluster": ("cluster",),
    "graded_course": ("cluster", "root", "slow"),  # grading jails each kernel, and takes minutes
    "kind_cluster": ("kind", "docker"),
    "kind_lab": ("kind", "docker"),
    "worker_server": ("root",),  # the grader's fork server serves root alone
    "kind_base_files": ("go",),
    "pinned_kubectl": ("binaries",),
    "classroom": (
        "root",
        "binaries",
        "slow",
    ),  # Unix users, confined servers, a cluster per student
}
FAST_TIMEOUT = 60  # seconds: the fast tier's tests take 7 s at most on a busy 2-core machine
NO_CLUSTER = "/nonexistent/the-fast-tier-has-no-cluster"
NO_DOCKER = "unix:///nonexistent/the-fast-tier-has-no-docker.sock"
NO_NETWORK = (
    "http://127.0.0.1:9"  # the discard port: nothing listens, so every proxied request is refused
)
LOOPBACK = "localhost,127.0.0.1,::1"
PROXIES = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def is_fast(item: pytest.Item) -> bool:
    """A test that needs none of the resources: the fast tier's."""
    return not any(item.get_closest_marker(name) for name in RESOURCES)


def fixture_needs(item: pytest.Item) -> set[str]:
    """The resources a test needs through the fixtures it takes (directly or not)."""
    fixtures = getattr(item, "fixturenames", ())
    return {need for fixture in fixtures for need in FIXTURE_NEEDS.get(fixture, ())}


def pytest_configure(config: pytest.Config) -> None:
    """Only plain `pytest` is the fast tier: tests named on the command line run in every tier."""
    chose_markers = any(arg.startswith("-m") for arg in config.invocation_params.args)
    if config.args_source == pytest.Config.ArgsSource.ARGS and not chose_markers:
        config.option.markexpr = ""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in sorted(fixture_needs(item)):
            item.add_marker(name)
        if is_fast(item) and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(FAST_TIMEOUT))


def pytest_collection_finish(session: pytest.Session) -> None:
    """A fast-only session gives up root, Docker, clusters and the network before tests run."""
    if session.items and all(is_fast(item) for item in session.items):
        _without_resources()


def _refuse_cluster(self: object) -> None:
    raise RuntimeError(
        f"{type(self).__name__}.up() in the fast tier: take the practice_cluster fixture, "
        "or mark the test `cluster` (or `kind`)"
    )


def _without_resources() -> None:
    """What a fast test finds: no root powers, no kubeconfig, no Docker engine, no live proxy."""
    if _effective_capabilities():
        isolation.renounce_capabilities()
    os.environ.update(
        {
            "KUBECONFIG": NO_CLUSTER,
            "DOCKER_HOST": NO_DOCKER,
            "GOPROXY": "off",
            **dict.fromkeys(PROXIES, NO_NETWORK),
            "no_proxy": LOOPBACK,
            "NO_PROXY": LOOPBACK,
        }
    )
    Practice.up = Kind.up = _refuse_cluster  # type: ignore[method-assign]


def _effective_capabilities() -> int:
    """This process's effective capabilities as /proc shows them: root's all set, a user's none."""
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("CapEff:")), 16)
