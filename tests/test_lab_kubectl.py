"""Plain `kubectl` in a notebook: connect()'s kubeconfig, with real files and the real kubectl."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from autograder.lab import kubectl
from autograder.shared import binaries, kubeconfig

WORK = {
    "name": "work-prod",
    "context": {"cluster": "prod", "user": "admin", "namespace": "payments"},
}


def user_kubeconfig(path: Path) -> Path:
    """A user's kubeconfig: a work context (current) and the lab's, which names no namespace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "ca.crt").write_text("lab-ca")
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "work-prod",
                "preferences": {},
                "clusters": [
                    {"name": "prod", "cluster": {"server": "https://10.0.0.1"}},
                    {
                        "name": "kwok-ml-learning",
                        "cluster": {
                            "server": "https://127.0.0.1:6443",
                            "certificate-authority": "ca.crt",
                        },
                    },
                ],
                "users": [
                    {"name": "admin", "user": {"token": "work-secret"}},
                    {"name": "kwok-ml-learning", "user": {"token": "lab-token"}},
                ],
                "contexts": [
                    WORK,
                    {
                        "name": "kwok-ml-learning",
                        "context": {"cluster": "kwok-ml-learning", "user": "kwok-ml-learning"},
                    },
                ],
            }
        )
    )
    return path


@pytest.fixture
def pinned_kubectl() -> Path:
    """The pinned kubectl, as `make test-binaries` provides it (the fast tier runs before)."""
    pinned = binaries.find("kubectl")
    assert pinned is not None, "kubectl is one of the binaries `make test` provides"
    return pinned


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned_kubectl: Path) -> Path:
    """A user's home with ~/.kube/config, $KUBECONFIG unset, and the project's cache beside it."""
    # Found before the cache moves, then on PATH.
    monkeypatch.setenv("PATH", os.pathsep.join([str(pinned_kubectl.parent), os.environ["PATH"]]))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv(kubeconfig.USER_FILE_ENV, raising=False)
    user_kubeconfig(tmp_path / "home" / ".kube" / "config")
    return tmp_path / "home"


def test_the_lab_file_holds_only_the_labs_context_in_its_namespace(home: Path) -> None:
    user_file = home / ".kube" / "config"
    before = user_file.read_bytes(), user_file.stat().st_mtime_ns

    written = kubectl.point_at("kwok-ml-learning", "ml-lab")

    assert written is not None and os.environ["KUBECONFIG"] == str(written)
    assert written.parent == kubeconfig.lab_folder() and not written.is_relative_to(home)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    document = yaml.safe_load(written.read_text())
    assert document["current-context"] == "kwok-ml-learning"
    assert document["contexts"] == [
        {
            "name": "kwok-ml-learning",
            "context": {
                "cluster": "kwok-ml-learning",
                "user": "kwok-ml-learning",
                "namespace": "ml-lab",
            },
        }
    ]
    assert [entry["name"] for entry in document["clusters"]] == ["kwok-ml-learning"]
    assert [entry["name"] for entry in document["users"]] == ["kwok-ml-learning"]
    assert "work-secret" not in written.read_text(), (
        "the work cluster's credentials stay in the user's file"
    )
    assert document["clusters"][0]["cluster"]["certificate-authority-data"], (
        "a relative file, embedded"
    )
    assert (user_file.read_bytes(), user_file.stat().st_mtime_ns) == before
    assert kubeconfig.current_context() == "work-prod", (
        "the lab's own reads still see the user's kubeconfig"
    )


def test_plain_kubectl_reads_the_lab_context_and_namespace(home: Path) -> None:
    kubectl.point_at("kwok-ml-learning", "ml-lab")
    kubectl.put_first_on_path()
    contexts = subprocess.run(
        ["kubectl", "config", "get-contexts", "--no-headers"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    namespace = subprocess.run(
        [
            "kubectl",
            "config",
            "view",
            "--minify",
            "-o",
            "jsonpath={.contexts[0].context.namespace}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert contexts.split() == [
        "*",
        "kwok-ml-learning",
        "kwok-ml-learning",
        "kwok-ml-learning",
        "ml-lab",
    ]
    assert namespace == "ml-lab"


def test_each_namespace_gets_its_own_file_and_the_users_choice_is_remembered(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = user_kubeconfig(tmp_path / "elsewhere" / "config")
    monkeypatch.setenv("KUBECONFIG", str(chosen))
    first = kubectl.point_at("kwok-ml-learning", "ml-lab")
    second = kubectl.point_at("kwok-ml-learning", "team-b")
    assert first != second and first is not None and first.is_file()
    assert os.environ["KUBECONFIG"] == str(second)
    assert kubeconfig.default_file() == str(chosen)
    assert kubeconfig.user_environment()["KUBECONFIG"] == str(chosen), (
        "kind and kwokctl write to the user's"
    )
    assert not (home / ".kube" / "config").read_text().count("team-b")


def test_a_kubeconfig_that_already_names_the_namespace_is_used_as_it_is(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    student = tmp_path / "student.kubeconfig"
    student.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "student@grade-1",
                "clusters": [{"name": "lab", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "student", "user": {"token": "scoped"}}],
                "contexts": [
                    {
                        "name": "student@grade-1",
                        "context": {"cluster": "lab", "user": "student", "namespace": "grade-1"},
                    }
                ],
            }
        )
    )
    before = student.read_bytes()
    monkeypatch.setenv("KUBECONFIG", str(student))
    assert kubectl.point_at("student@grade-1", "grade-1") is None
    assert os.environ["KUBECONFIG"] == str(student) and student.read_bytes() == before
    assert not kubeconfig.lab_folder().exists(), "nothing written"


def test_returning_to_the_users_kubeconfig_puts_kubeconfig_back(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubectl.point_at("kwok-ml-learning", "ml-lab")
    work = home / ".kube" / "config"
    assert kubectl.point_at("work-prod", "payments") is None
    assert "KUBECONFIG" not in os.environ and kubeconfig.USER_FILE_ENV not in os.environ
    assert kubeconfig.default_file() == str(work)


def test_a_missing_context_is_named() -> None:
    with pytest.raises(ValueError, match="'kwok-ml-learning'"):
        kubectl.with_namespace({"contexts": [WORK]}, "kwok-ml-learning", "ml-lab")


def test_the_pinned_kubectl_comes_first_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned_kubectl: Path
) -> None:
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    (impostor / "kubectl").write_text("#!/bin/sh\necho impostor\n")
    (impostor / "kubectl").chmod(0o755)
    pinned = pinned_kubectl
    monkeypatch.setenv("PATH", os.pathsep.join([str(impostor), os.environ["PATH"]]))
    assert kubectl.put_first_on_path() == pinned
    found = shutil.which("kubectl")
    assert found is not None and Path(found).resolve() == pinned.resolve()
    path = os.environ["PATH"]
    kubectl.put_first_on_path()
    assert os.environ["PATH"] == path, "a second connect() leaves PATH as it is"
