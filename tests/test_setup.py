"""`make test` obtains everything the suite needs: checked from the code, without a cold run.

The suite's markers say which clusters its tests run on; each provider says which binaries it
runs. `make -n test` says what the README's test command would do. A set-up step that is missing
(as kind's was) fails here in a second instead of after a 45-minute build on a fresh machine.
"""

from __future__ import annotations

import ast
import shlex
import subprocess
from pathlib import Path

from autograder import REPO_ROOT
from autograder.cli import binaries_wanted, build_parser
from autograder.providers.choice import provider

TESTS = Path(__file__).resolve().parent

# What each marker promises the test needs, and so what `make test` must set up for it.
PROVIDER_OF_MARKER = {"cluster": "practice", "kind": "kind"}
SETUP_STEP_OF_MARKER = {
    "docker": ".ci/docker-engine start",
    "kind": "-m autograder kind-image build",
}
PROVIDER_OF_FIXTURE = {"practice_cluster": "practice", "lab": "practice"}


def _markers_and_fixtures(module: Path) -> set[str]:
    """The `pytest.mark.X` names and fixture arguments a test module uses."""
    used: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "mark"
        ):
            used.add(node.attr)
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            used.update(arg.arg for arg in node.args.args)
    return used


def suite_needs() -> tuple[set[str], set[str]]:
    """The providers the suite's tests run on, and the set-up steps its markers ask for."""
    providers: set[str] = set()
    steps: set[str] = set()
    for module in TESTS.glob("test_*.py"):
        used = _markers_and_fixtures(module)
        providers |= {
            name
            for key, name in {**PROVIDER_OF_MARKER, **PROVIDER_OF_FIXTURE}.items()
            if key in used
        }
        steps |= {step for marker, step in SETUP_STEP_OF_MARKER.items() if marker in used}
    return providers, steps


def planned_commands(makefile: Path, target: str = "test") -> list[str]:
    """Every command `make TARGET` would run, prerequisites included, from a dry run."""
    done = subprocess.run(
        ["make", "-n", "-B", "-f", str(makefile), "-C", str(REPO_ROOT), target],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.splitlines()


def binaries_obtained(commands: list[str]) -> set[str]:
    """The binaries the `python -m autograder binaries ...` commands among `commands` obtain."""
    obtained: set[str] = set()
    for line in commands:
        words = shlex.split(line)
        if words[1:4] == ["-m", "autograder", "binaries"]:
            obtained.update(binaries_wanted(build_parser().parse_args(words[3:])))
    return obtained


def missing_setup(makefile: Path) -> list[str]:
    """What the suite needs that `make test` (as `makefile` says it) never obtains."""
    providers, steps = suite_needs()
    commands = planned_commands(makefile)
    needed = {name for chosen in providers for name in provider(chosen).required_binaries}
    gaps = [f"binary {name}" for name in sorted(needed - binaries_obtained(commands))]
    gaps += [
        f"step `{step}`" for step in sorted(steps) if not any(step in line for line in commands)
    ]
    return gaps


def test_the_suite_runs_on_both_lab_clusters() -> None:
    providers, steps = suite_needs()
    assert providers == {"practice", "kind"}
    assert steps == set(SETUP_STEP_OF_MARKER.values())


def test_make_test_obtains_everything_the_suite_needs() -> None:
    assert missing_setup(REPO_ROOT / "Makefile") == []


def test_a_missing_setup_step_is_caught(tmp_path: Path) -> None:
    """The Makefile before issue 9: `test` built only the practice cluster's binaries."""
    broken = (
        (REPO_ROOT / "Makefile").read_text().replace("binaries practice kind", "binaries practice")
    )
    (tmp_path / "Makefile").write_text(broken)
    assert missing_setup(tmp_path / "Makefile") == ["binary kind"]
