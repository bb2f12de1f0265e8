"""The pinned version of every cluster binary, and the cache folder each pinned build goes to."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

KUBERNETES_VERSION = "1.34.12"
ETCD_VERSION = "3.5.35"
KWOK_VERSION = "0.8.0"
KIND_VERSION = "0.33.0"
# The Go toolchain a machine without Go (a hosted image's build stage) fetches to build the above,
# and the SHA-256 of each platform's module zip on the Go module proxy (golang.org/toolchain).
GO_VERSION = "1.26.11"
GO_TOOLCHAIN_SHA256 = {
    "amd64": "e1edb778de0aa08c8e827f5a873b35a46afe680fb241482c531725b2355e470d",
    "arm64": "51902dab7e130b07083119a36ce09e0cc50fdd9d0d64184c24bd302072ad8b70",
}
CACHE_DIR_ENV = "LAB_CACHE_DIR"


class Versioned(Protocol):
    """Something built at one version: a `Pin` here, or a Go recipe of `autograder.build`."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...


@dataclass(frozen=True)
class Pin:
    """Binaries built together from one Go module at one version (`autograder.shared.gobuild`)."""

    name: str
    version: str
    binaries: tuple[str, ...]


PINS: dict[str, Pin] = {
    pin.name: pin
    for pin in (
        Pin(
            "kubernetes",
            KUBERNETES_VERSION,
            (
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubectl",
                "kubelet",
                "kubeadm",
                "kube-proxy",
            ),
        ),
        Pin("etcd", ETCD_VERSION, ("etcd", "etcdctl")),
        Pin("kwok", KWOK_VERSION, ("kwok", "kwokctl")),
        Pin("kind", KIND_VERSION, ("kind",)),
    )
}
PIN_OF: dict[str, Pin] = {binary: pin for pin in PINS.values() for binary in pin.binaries}


def cache_root() -> Path:
    """The project's cache: builds and clusters live here, never inside the repo."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "k8s-ml-lab"


def cache_dir(build: Versioned) -> Path:
    """One folder per build and pinned version, so a version bump never reuses old binaries."""
    return cache_root() / "bin" / f"{build.name}-{build.version}"
