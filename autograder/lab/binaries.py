"""Find or build the cluster binaries: kube-apiserver, etcd, kwok, kind and friends.

Lookup order for each binary: the directory in ``$LAB_BIN_DIR``, ``PATH``, the project's
cache (outside the repo, one folder per pinned version), and last a build with Go from Go
modules at the pinned versions below.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

KUBERNETES_VERSION = "1.34.12"
ETCD_VERSION = "3.5.35"
KWOK_VERSION = "0.8.0"
KIND_VERSION = "0.33.0"

BIN_DIR_ENV = "LAB_BIN_DIR"
CACHE_DIR_ENV = "LAB_CACHE_DIR"

# Staging modules that k8s.io/kubernetes replaces with ./staging paths in its own go.mod;
# a wrapper module must point each at the published v0.<minor>.<patch> release instead.
KUBERNETES_STAGING_MODULES = (
    "api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider "
    "cluster-bootstrap code-generator component-base component-helpers controller-manager "
    "cri-api cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt "
    "kms kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics "
    "mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller"
).split()


def _kubernetes_version_flags(version: str) -> list[str]:
    """Stamp the version the way upstream's build does; unstamped kubectl fails `version`."""
    major, minor, _ = version.split(".")
    values = {
        "gitVersion": f"v{version}",
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
    }
    return [
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for key, value in values.items()
    ]


@dataclass(frozen=True)
class GoRecipe:
    """How to build a group of binaries from Go modules in a generated wrapper module."""

    name: str
    version: str
    requires: dict[str, str]
    packages: dict[str, str]  # binary name -> Go package path
    replaces: dict[str, str] = field(default_factory=dict)
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def go_mod(self) -> str:
        """The wrapper's go.mod: the godebug line only takes effect from the main module."""
        lines = ["module lab.local/build", "", "go 1.24.0", "", "godebug default=go1.24", ""]
        lines += [f"require {module} {version}" for module, version in self.requires.items()]
        lines += [f"replace {module} => {module} {version}" for module, version in self.replaces.items()]
        return "\n".join(lines) + "\n"


RECIPES: dict[str, GoRecipe] = {
    recipe.name: recipe
    for recipe in (
        GoRecipe(
            name="kubernetes",
            version=KUBERNETES_VERSION,
            requires={"k8s.io/kubernetes": f"v{KUBERNETES_VERSION}"},
            replaces={
                f"k8s.io/{module}": "v0." + KUBERNETES_VERSION.split(".", 1)[1]
                for module in KUBERNETES_STAGING_MODULES
            },
            packages={
                name: f"k8s.io/kubernetes/cmd/{name}"
                for name in (
                    "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                    "kubectl", "kubelet", "kubeadm", "kube-proxy",
                )
            },
            ldflags=tuple(_kubernetes_version_flags(KUBERNETES_VERSION)),
            tags=("selinux", "notest"),
        ),
        GoRecipe(
            name="etcd",
            version=ETCD_VERSION,
            requires={
                **{
                    f"go.etcd.io/etcd/{module}/v3": f"v{ETCD_VERSION}"
                    for module in ("server", "etcdctl", "api", "client/pkg", "client", "pkg", "raft")
                },
                "go.etcd.io/etcd/client/v2": "v2.305." + ETCD_VERSION.rsplit(".", 1)[1],
            },
            packages={"etcd": "go.etcd.io/etcd/server/v3", "etcdctl": "go.etcd.io/etcd/etcdctl/v3"},
        ),
        GoRecipe(
            name="kwok",
            version=KWOK_VERSION,
            requires={"sigs.k8s.io/kwok": f"v{KWOK_VERSION}"},
            packages={"kwok": "sigs.k8s.io/kwok/cmd/kwok", "kwokctl": "sigs.k8s.io/kwok/cmd/kwokctl"},
            ldflags=(
                f"-X sigs.k8s.io/kwok/pkg/consts.Version={KWOK_VERSION}",
                f"-X sigs.k8s.io/kwok/pkg/consts.KubeVersion={KUBERNETES_VERSION}",
            ),
        ),
        GoRecipe(
            name="kind",
            version=KIND_VERSION,
            requires={"sigs.k8s.io/kind": f"v{KIND_VERSION}"},
            packages={"kind": "sigs.k8s.io/kind"},
        ),
    )
}

RECIPE_OF: dict[str, GoRecipe] = {
    binary: recipe for recipe in RECIPES.values() for binary in recipe.packages
}

KUBERNETES_BINARIES = frozenset(RECIPES["kubernetes"].packages)
PRACTICE_BINARIES = (
    "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "etcd", "kwok", "kwokctl",
)


class BinaryNotFound(RuntimeError):
    """A binary is missing and cannot be built here; the message says how to get it."""


def cache_root() -> Path:
    """The project's cache: builds and clusters live here, never inside the repo."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "k8s-ml-lab"


def cache_dir(recipe: GoRecipe) -> Path:
    """One folder per recipe and pinned version, so a version bump never reuses old binaries."""
    return cache_root() / "bin" / f"{recipe.name}-{recipe.version}"


def _reported_minor(path: Path) -> int | None:
    """The Kubernetes minor version a kube binary reports, or None when it will not say."""
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
    if name not in RECIPE_OF:
        raise KeyError(f"unknown binary {name!r}; known: {', '.join(sorted(RECIPE_OF))}")
    candidates: list[Path] = []
    if os.environ.get(BIN_DIR_ENV):
        candidates.append(Path(os.environ[BIN_DIR_ENV]) / name)
    candidates += [Path(folder) / name for folder in os.environ.get("PATH", "").split(os.pathsep) if folder]
    candidates.append(cache_dir(RECIPE_OF[name]) / name)
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


def ensure(names: Iterable[str], log: Callable[[str], None] = print) -> dict[str, Path]:
    """Paths of every binary in `names`, building the missing ones with Go."""
    names = list(dict.fromkeys(names))
    found = {name: find(name) for name in names}
    missing = [name for name, path in found.items() if path is None]
    if missing and shutil.which("go") is None:
        raise BinaryNotFound(how_to_get(missing))
    for recipe_name in dict.fromkeys(RECIPE_OF[name].name for name in missing):
        build(RECIPES[recipe_name], log=log)
    return {name: path or cache_dir(RECIPE_OF[name]) / name for name, path in found.items()}


def _count_packages(workdir: Path, recipe: GoRecipe, env: dict[str, str]) -> int | None:
    """How many packages the build compiles at most, for the progress bar's total."""
    listing = subprocess.run(
        ["go", "list", "-deps", *recipe.packages.values()],
        cwd=workdir, env=env, capture_output=True, text=True, check=False,
    )
    return len(listing.stdout.split()) if listing.returncode == 0 else None


def build(recipe: GoRecipe, log: Callable[[str], None] = print) -> Path:
    """Build one recipe into its cache folder; the folder appears whole or not at all."""
    target = cache_dir(recipe)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all((target / binary).is_file() for binary in recipe.packages):
            return target
        for stale in target.parent.glob(f".{target.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            _go_build(recipe, staging, log)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(staging / "bin", target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _go_build(recipe: GoRecipe, staging: Path, log: Callable[[str], None]) -> None:
    workdir = staging / "module"
    workdir.mkdir()
    (workdir / "go.mod").write_text(recipe.go_mod())
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    log(f"Building {', '.join(recipe.packages)} {recipe.version} from Go modules "
        "(the first build takes several minutes; later runs reuse it)")
    download = subprocess.run(
        ["go", "mod", "download"], cwd=workdir, env=env, capture_output=True, text=True, check=False
    )
    total = _count_packages(workdir, recipe, env)
    if download.returncode != 0 or total is None:
        raise RuntimeError(f"go could not resolve {recipe.name} {recipe.version}:\n{download.stderr}")
    outputs = staging / "bin"
    outputs.mkdir()
    tail: list[str] = []
    # A CI log is not a terminal: redraw the bar rarely there so the log stays readable.
    interval = 0.5 if sys.stderr.isatty() else 30
    with tqdm(total=total, desc=f"go build {recipe.name}", unit="pkg", file=sys.stderr,
              mininterval=interval) as bar:
        for binary, package in recipe.packages.items():
            command = [
                "go", "build", "-v", "-trimpath", "-o", str(outputs / binary),
                "-ldflags", " ".join(("-s", "-w", *recipe.ldflags)),
            ]
            if recipe.tags:
                command += ["-tags", ",".join(recipe.tags)]
            bar.set_postfix_str(binary)
            process = subprocess.Popen(
                [*command, package], cwd=workdir, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            assert process.stdout is not None
            for line in process.stdout:
                tail = (tail + [line.rstrip()])[-30:]
                bar.update(1)
            if process.wait() != 0:
                raise RuntimeError(f"go build {package} failed:\n" + "\n".join(tail))
