"""The command line as a user meets it: clear errors, the doctor's report, a no-op `down`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from autograder import doctor
from autograder.shared import binaries, pins


def autograder(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autograder", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_unknown_provider_is_refused_with_the_valid_ones() -> None:
    done = autograder("cluster", "up", "--provider", "minikube")
    assert done.returncode == 2
    assert "'practice', 'kind', 'existing'" in done.stderr


def test_unknown_provider_in_the_environment_is_explained(tmp_path: Path) -> None:
    done = autograder(
        "demo", env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LAB_CLUSTER": "k3s"}
    )
    assert done.returncode == 1
    assert "unknown cluster provider 'k3s'; choose one of: practice, kind, existing" in done.stderr


def test_down_without_a_cluster_is_a_no_op(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KWOK_WORKDIR": str(tmp_path / "kwok")}
    done = autograder("cluster", "down", "--provider", "practice", env=env)
    assert done.returncode == 0
    assert "No practice cluster 'ml-learning' to delete." in done.stdout


def test_doctor_names_each_missing_piece_and_its_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/bin")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    monkeypatch.setenv(pins.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    rows = {item: (state, detail) for item, state, detail in doctor.findings()}
    assert set(pins.PIN_OF) <= set(rows)
    assert rows["docker"][0] == doctor.MISSING and "start" in rows["docker"][1]
    assert rows["go"][0] == doctor.MISSING and "go.dev" in rows["go"][1]
    assert rows["kube-apiserver"] == (doctor.MISSING, "see: conda env create -f environment.yml")
    assert rows["context"][0] == doctor.MISSING and "cluster up" in rows["context"][1]


@pytest.mark.parametrize("activated", [False, True])
def test_the_gradebook_opens_when_the_venv_is_not_activated(
    tmp_path: Path, activated: bool
) -> None:
    """nbgrader runs `alembic` via PATH; `.venv/bin/python -m autograder grade` finds it too."""
    database = tmp_path / "gradebook.db"
    opens = (
        "from autograder import cli; cli.scripts_on_path(); from nbgrader.api import Gradebook; "
        f"Gradebook('sqlite:///{database}').close()"
    )
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin" if activated else "/usr/bin:/bin"
    result = subprocess.run(
        [sys.executable, "-c", opens],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": path, "HOME": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert database.is_file()
