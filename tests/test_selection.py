"""Which provider `connect()` picks, from real kubeconfig files (no cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autograder.lab import cluster
from autograder.lab.kind import Kind


def write_kubeconfig(path: Path, context: str, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": "x"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context,
                                                   "namespace": "team-a"}}],
    }))
    return path


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv(cluster.PROVIDER_ENV, raising=False)
    return tmp_path


def test_unknown_provider_lists_the_valid_ones(no_kubeconfig: Path) -> None:
    with pytest.raises(ValueError, match="practice, kind, existing"):
        cluster.choose("minikube")


def test_explicit_argument_beats_the_environment(no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster.PROVIDER_ENV, "kind")
    assert cluster.choose("practice").name == "practice"
    assert cluster.choose().name == "kind"


def test_unknown_provider_in_the_environment_is_refused(no_kubeconfig: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cluster.PROVIDER_ENV, "docker-desktop")
    with pytest.raises(ValueError, match="unknown cluster provider 'docker-desktop'"):
        cluster.choose()


def test_without_context_kind_comes_before_practice(no_kubeconfig: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: None)
    assert cluster.choose().name == "kind"
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: "Docker is down")
    assert cluster.choose().name == "practice"


def test_a_context_that_does_not_answer_is_passed_over(no_kubeconfig: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(
        no_kubeconfig / "config", "minikube", "https://127.0.0.1:1")))
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: "no Docker")
    assert cluster.choose().name == "practice"


def test_the_labs_own_contexts_are_recognised() -> None:
    assert cluster.provider_of_context("kwok-ml-learning") == "practice"
    assert cluster.provider_of_context("kind-ml-learning") == "kind"
    assert cluster.provider_of_context("gke_project_zone_name") == "existing"
