"""Build the cluster binaries from Go modules at the pinned versions, in a generated wrapper module.

`k8s.io/kubernetes` cannot be `go install`ed: its go.mod replaces its staging modules with local
paths. The wrapper requires it and replaces each staging module with its published
v0.<minor>.<patch> release instead. Builds run under a file lock into a scratch folder that is
renamed into the cache, so a failed or interrupted build leaves nothing behind.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from autograder.shared import gotoolchain
from autograder.shared.errors import LabError
from autograder.shared.pins import (
    ETCD_VERSION,
    KIND_VERSION,
    KUBERNETES_VERSION,
    KWOK_VERSION,
    PIN_OF,
    PINS,
    cache_dir,
)

# Staging modules that k8s.io/kubernetes replaces with ./staging paths in its own go.mod;
# a wrapper module must point each at the published v0.<minor>.<patch> release instead.
KUBERNETES_STAGING_MODULES = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
]

logger = logging.getLogger(__name__)


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
        lines += [
            f"replace {module} => {module} {version}" for module, version in self.replaces.items()
        ]
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
                name: f"k8s.io/kubernetes/cmd/{name}" for name in PINS["kubernetes"].binaries
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
                    for module in (
                        "server",
                        "etcdctl",
                        "api",
                        "client/pkg",
                        "client",
                        "pkg",
                        "raft",
                    )
                },
                "go.etcd.io/etcd/client/v2": "v2.305." + ETCD_VERSION.rsplit(".", 1)[1],
            },
            packages={"etcd": "go.etcd.io/etcd/server/v3", "etcdctl": "go.etcd.io/etcd/etcdctl/v3"},
        ),
        GoRecipe(
            name="kwok",
            version=KWOK_VERSION,
            requires={"sigs.k8s.io/kwok": f"v{KWOK_VERSION}"},
            packages={
                "kwok": "sigs.k8s.io/kwok/cmd/kwok",
                "kwokctl": "sigs.k8s.io/kwok/cmd/kwokctl",
            },
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


def _count_packages(workdir: Path, packages: list[str], env: dict[str, str]) -> int | None:
    """How many packages the build compiles at most, for the progress bar's total."""
    listing = subprocess.run(
        ["go", "list", "-deps", *packages],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return len(listing.stdout.split()) if listing.returncode == 0 else None


def build(recipe: GoRecipe, binaries: Iterable[str] | None = None) -> Path:
    """Build a recipe's `binaries` (all by default) into its cache folder.

    Each appears whole or not at all.

    Only what is asked is built: the practice cluster needs three of the seven Kubernetes programs
    (kubelet, kubeadm and kube-proxy are for the kind node image alone).
    """
    target = cache_dir(recipe)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = [name for name in (binaries or recipe.packages) if not (target / name).is_file()]
        if not wanted:
            return target
        for stale in target.parent.glob(f".{target.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            _go_build(recipe, staging, wanted)
            target.mkdir(exist_ok=True)
            for name in wanted:
                os.rename(staging / "bin" / name, target / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _go_build(recipe: GoRecipe, staging: Path, binaries: list[str]) -> None:
    workdir = staging / "module"
    workdir.mkdir()
    (workdir / "go.mod").write_text(recipe.go_mod())
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    logger.info(
        "Building %s %s from Go modules (the first build takes several "
        "minutes; later runs reuse it)",
        ", ".join(binaries),
        recipe.version,
    )
    download = subprocess.run(
        ["go", "mod", "download"], cwd=workdir, env=env, capture_output=True, text=True, check=False
    )
    packages = {name: recipe.packages[name] for name in binaries}
    total = _count_packages(workdir, list(packages.values()), env)
    if download.returncode != 0 or total is None:
        raise LabError(f"go could not resolve {recipe.name} {recipe.version}:\n{download.stderr}")
    outputs = staging / "bin"
    outputs.mkdir()
    tail: list[str] = []
    # A CI log is not a terminal: redraw the bar rarely there so the log stays readable.
    interval = 0.5 if sys.stderr.isatty() else 30
    with tqdm(
        total=total,
        desc=f"go build {recipe.name}",
        unit="pkg",
        file=sys.stderr,
        mininterval=interval,
    ) as bar:
        for binary, package in packages.items():
            command = [
                "go",
                "build",
                "-v",
                "-trimpath",
                "-o",
                str(outputs / binary),
                "-ldflags",
                " ".join(("-s", "-w", *recipe.ldflags)),
            ]
            if recipe.tags:
                command += ["-tags", ",".join(recipe.tags)]
            bar.set_postfix_str(binary)
            process = subprocess.Popen(
                [*command, package],
                cwd=workdir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            assert process.stdout is not None
            for line in process.stdout:
                tail = (tail + [line.rstrip()])[-30:]
                bar.update(1)
            if process.wait() != 0:
                raise LabError(f"go build {package} failed:\n" + "\n".join(tail))


def install(names: list[str], into: Path, prebuilt: Path | None = None) -> dict[str, str]:
    """Put each named binary into `into`: from `prebuilt` when it has it, else built here with Go.

    Returns where each came from. A Docker build stage calls this through `main`: CI hands it the
    host's cached binaries in the build context; elsewhere it builds them, fetching Go if needed.
    """
    into.mkdir(parents=True, exist_ok=True)
    sources = {name: "prebuilt" for name in names if prebuilt and (prebuilt / name).is_file()}
    to_build = [name for name in names if name not in sources]
    if to_build:
        os.environ["PATH"] = f"{gotoolchain.ensure_go()}{os.pathsep}{os.environ.get('PATH', '')}"
        for group in dict.fromkeys(PIN_OF[name].name for name in to_build):
            build(RECIPES[group], [name for name in to_build if PIN_OF[name].name == group])
        sources.update(dict.fromkeys(to_build, "built with Go"))
    for name in names:
        origin = (
            prebuilt / name
            if sources[name] == "prebuilt" and prebuilt
            else cache_dir(PIN_OF[name]) / name
        )
        shutil.copy2(origin, into / name)
        (into / name).chmod(0o755)
    return sources


def main(arguments: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.shared.gobuild", description=install.__doc__
    )
    parser.add_argument(
        "--into", type=Path, required=True, help="the folder that receives the binaries"
    )
    parser.add_argument(
        "--prebuilt", type=Path, help="a folder whose binaries are taken as they are"
    )
    parser.add_argument("names", nargs="+", choices=sorted(PIN_OF), metavar="BINARY")
    args = parser.parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name, source in install(args.names, args.into, args.prebuilt).items():
        print(f"{name:<24} {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
