"""Binary resolution order, version vetting, and atomic, interruptible builds."""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from autograder.shared import binaries, gobuild, pins
from autograder.shared.errors import LabError
from autograder.shared.gobuild import GoRecipe

GO_DIR = Path(shutil.which("go") or "/usr/local/go/bin/go").parent


def fake_binary(folder: Path, name: str, version_line: str = "") -> Path:
    """An executable script that prints a version line, like the real tools do."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache, no $LAB_BIN_DIR and a PATH holding only the shell."""
    monkeypatch.setenv(pins.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(binaries.BIN_DIR_ENV, raising=False)
    monkeypatch.setenv("PATH", "/bin")
    return tmp_path


def test_env_dir_wins_over_path_and_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_kwok = fake_binary(isolated / "envdir", "kwok")
    path_kwok = fake_binary(isolated / "pathdir", "kwok")
    fake_binary(pins.cache_dir(gobuild.RECIPES["kwok"]), "kwok")
    monkeypatch.setenv(binaries.BIN_DIR_ENV, str(isolated / "envdir"))
    monkeypatch.setenv("PATH", f"{isolated / 'pathdir'}:/bin")
    assert binaries.find("kwok") == env_kwok
    monkeypatch.delenv(binaries.BIN_DIR_ENV)
    assert binaries.find("kwok") == path_kwok


def test_cache_is_last_before_building(isolated: Path) -> None:
    cached = fake_binary(pins.cache_dir(gobuild.RECIPES["kind"]), "kind")
    assert binaries.find("kind") == cached


def test_kubernetes_binaries_outside_the_version_skew_are_passed_over(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_binary(isolated / "old", "kubectl", "Client Version: v1.29.3")
    good = fake_binary(isolated / "new", "kubectl", "Client Version: v1.33.1")
    monkeypatch.setenv("PATH", f"{isolated / 'old'}:{isolated / 'new'}:/bin")
    assert binaries.find("kubectl") == good


def test_a_binary_is_asked_its_version_once_and_again_once_replaced(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubectl = fake_binary(isolated / "bin", "kubectl", "Client Version: v1.34.1")
    monkeypatch.setenv("PATH", f"{isolated / 'bin'}:/bin")
    asked: list[list[str]] = []
    run = subprocess.run
    monkeypatch.setattr(
        binaries.subprocess,
        "run",
        lambda command, **kwargs: asked.append(command) or run(command, **kwargs),
    )
    assert [binaries.find("kubectl"), binaries.find("kubectl")] == [kubectl, kubectl]
    fake_binary(
        isolated / "bin", "kubectl", "Client Version: v1.29.10"
    )  # replaced in place, too old
    assert binaries.find("kubectl") != kubectl
    assert [command[0] for command in asked if command[0] == str(kubectl)] == [str(kubectl)] * 2


def test_missing_everything_without_go_says_how_to_get_them(isolated: Path) -> None:
    with pytest.raises(binaries.BinaryNotFound) as raised:
        binaries.ensure(["kwokctl", "etcd"])
    message = str(raised.value)
    assert "kwokctl, etcd" in message
    assert (
        "environment.yml" in message
        and binaries.BIN_DIR_ENV in message
        and "LAB_CLUSTER=kind" in message
    )


def test_unknown_binary_is_named() -> None:
    with pytest.raises(KeyError, match="known: "):
        binaries.find("kubefoo")


def test_wrapper_module_replaces_every_staging_module() -> None:
    go_mod = gobuild.RECIPES["kubernetes"].go_mod()
    assert "require k8s.io/kubernetes v1.34.12" in go_mod
    assert "godebug default=go1.24" in go_mod
    for module in ("api", "client-go", "kubelet", "pod-security-admission"):
        assert f"replace k8s.io/{module} => k8s.io/{module} v0.34.12" in go_mod


def test_version_stamp_covers_both_version_packages() -> None:
    flags = " ".join(gobuild.RECIPES["kubernetes"].ldflags)
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        assert f"{package}.gitVersion=v1.34.12" in flags and f"{package}.gitMinor=34" in flags


BROKEN = GoRecipe(
    name="broken",
    version="0.0.1",
    requires={"k8s.io/kubernetes": "v0.0.0-does-not-exist"},
    packages={"nothing": "k8s.io/kubernetes/cmd/nothing"},
)


def test_failed_build_leaves_no_binary_and_no_partial(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{GO_DIR}:/bin")
    with pytest.raises(LabError, match="could not resolve"):
        gobuild.build(BROKEN)
    folder = pins.cache_dir(BROKEN).parent
    assert not pins.cache_dir(BROKEN).exists()
    assert not list(folder.glob(".broken-0.0.1.partial-*"))


def test_interrupted_build_leaves_nothing_half_made(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(recipe: GoRecipe, staging: Path, binaries: list[str]) -> None:
        (staging / "bin").mkdir()
        (staging / "bin" / "nothing").write_text("half a binary")
        raise KeyboardInterrupt

    monkeypatch.setattr(gobuild, "_go_build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        gobuild.build(BROKEN)
    assert not pins.cache_dir(BROKEN).exists()
    assert not list(pins.cache_dir(BROKEN).parent.glob(".broken-0.0.1.partial-*"))


def test_only_the_binaries_asked_for_are_built_and_those_already_there_are_kept(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[list[str]] = []

    def fake_go_build(recipe: GoRecipe, staging: Path, binaries: list[str]) -> None:
        built.append(binaries)
        (staging / "bin").mkdir()
        for name in binaries:
            (staging / "bin" / name).write_text(name)

    monkeypatch.setattr(gobuild, "_go_build", fake_go_build)
    kubernetes = gobuild.RECIPES["kubernetes"]
    folder = gobuild.build(kubernetes, ["kubectl", "kube-apiserver"])
    gobuild.build(kubernetes, ["kube-apiserver", "kube-scheduler"])
    assert built == [["kubectl", "kube-apiserver"], ["kube-scheduler"]]
    assert sorted(path.name for path in folder.iterdir()) == [
        "kube-apiserver",
        "kube-scheduler",
        "kubectl",
    ]
    assert "kubelet" not in set(binaries.PRACTICE_BINARIES)
