"""The fast tier (tests/tiers.py): nothing in it takes a cluster; what it cannot reach fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from autograder import REPO_ROOT
from tiers import FAST_TIMEOUT, FIXTURE_NEEDS, RESOURCES

TESTS = Path(__file__).parent

DUMP_PLUGIN = """import json, os
def pytest_collection_finish(session):
    with open(os.environ["TIERS_DUMP"], "w") as out:
        json.dump({item.nodeid: {"fixtures": sorted(item.fixturenames),
                                 "marks": sorted({mark.name for mark in item.iter_markers()}),
                                 "timeout": [mark.args for mark in item.iter_markers("timeout")]}
                   for item in session.items}, out)
"""

CONFTEST = '''import pytest

pytest_plugins = ["tiers"]


@pytest.fixture
def practice_cluster() -> None:
    """A stand-in: its name alone marks a test `cluster`."""
'''

PROBES = """import urllib.request

import docker
import pytest

from autograder.shared import isolation
from autograder.practice.cluster import Practice


def test_root() -> None:
    isolation.own_mounts()


def test_docker() -> None:
    docker.from_env().ping()


def test_cluster() -> None:
    Practice().up()


def test_network() -> None:
    urllib.request.urlopen("http://example.org/", timeout=10)


def test_takes_the_cluster(practice_cluster) -> None:
    pass


@pytest.mark.root
def test_marked() -> None:
    pass


def test_plain() -> None:
    pass
"""


def _collected(tmp_path: Path) -> dict[str, dict]:
    """The suite's tests as plain `pytest` selects them: each one's fixtures, markers, timeout."""
    (tmp_path / "tiers_dump.py").write_text(DUMP_PLUGIN)
    dump = tmp_path / "collected.json"
    done = _pytest(
        REPO_ROOT,
        "--collect-only",
        "-q",
        "-p",
        "tiers_dump",
        PYTHONPATH=f"{tmp_path}{os.pathsep}{TESTS}",
        TIERS_DUMP=str(dump),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(dump.read_text())


def test_the_fast_tier_takes_no_fixture_that_needs_a_resource_and_has_the_short_timeout(
    tmp_path: Path,
) -> None:
    fast = _collected(tmp_path)
    assert len(fast) > 150
    assert {
        test: sorted(set(seen["fixtures"]) & set(FIXTURE_NEEDS))
        for test, seen in fast.items()
        if set(seen["fixtures"]) & set(FIXTURE_NEEDS)
    } == {}
    assert {
        test: seen["marks"] for test, seen in fast.items() if set(seen["marks"]) & set(RESOURCES)
    } == {}
    assert {
        test: seen["timeout"] for test, seen in fast.items() if seen["timeout"] != [[FAST_TIMEOUT]]
    } == {}


def test_an_unmarked_test_reaching_for_root_docker_a_cluster_or_the_network_fails_in_the_fast_tier(
    tmp_path: Path,
) -> None:
    (tmp_path / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text(CONFTEST)
    (tmp_path / "tests" / "test_probes.py").write_text(PROBES)
    report = tmp_path / "report.xml"
    done = _pytest(tmp_path, f"--junitxml={report}")
    outcomes = {
        case.get("name"): " ".join(part.get("message", "") for part in case)
        for case in ElementTree.parse(report).getroot().iter("testcase")
    }
    # The stand-in cluster fixture and the `root` marker each take their test out of the fast tier.
    ran = {"test_root", "test_docker", "test_cluster", "test_network", "test_plain"}
    assert set(outcomes) == ran, done.stdout
    assert outcomes["test_plain"] == ""
    assert "cannot make new namespaces: Operation not permitted" in outcomes["test_root"]
    assert "mark the test `cluster`" in outcomes["test_cluster"]
    assert "Connection refused" in outcomes["test_network"]  # by the proxy that is not there
    assert outcomes["test_docker"]
    # Named on the command line, the file runs whole; `-m` still chooses.
    named = ("--collect-only", "-q", "tests/test_probes.py")
    assert "7 tests collected" in _pytest(tmp_path, *named).stdout
    assert "1/7 tests collected" in _pytest(tmp_path, "-m", "root", *named).stdout


def _pytest(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """pytest run in `folder`, with this suite's tier plugin importable (and `env` set)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        env={**os.environ, "PYTHONPATH": str(TESTS), **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
