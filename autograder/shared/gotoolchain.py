"""A Go toolchain for the Go builds.

The installed `go` when new enough, else the pinned one from the Go module proxy.

Go publishes each release as the module `golang.org/toolchain` (what `GOTOOLCHAIN` switching
downloads). Where no Go is installed, as in a hosted image's build stage on a plain Python base
image, the pinned release's module zip is fetched from `$GOPROXY`, checked against its pinned
SHA-256, and unpacked into the cache; a failed or interrupted fetch leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import shutil
import subprocess
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from autograder.shared.errors import LabError
from autograder.shared.pins import GO_TOOLCHAIN_SHA256, GO_VERSION, cache_root

logger = logging.getLogger(__name__)

MINIMUM_GO = (1, 25)  # k8s.io/kubernetes 1.34's go.mod asks for go 1.25.0
DEFAULT_PROXY = "https://proxy.golang.org"
ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class ToolchainError(LabError):
    """No usable Go and the pinned toolchain could not be fetched; the message says why."""


def installed_go() -> Path | None:
    """The folder of a `go` on PATH at least MINIMUM_GO, or None."""
    found = shutil.which("go")
    if found is None:
        return None
    done = subprocess.run([found, "env", "GOVERSION"], capture_output=True, text=True, check=False)
    match = re.match(r"go(\d+)\.(\d+)", done.stdout.strip())
    if match is None or (int(match[1]), int(match[2])) < MINIMUM_GO:
        return None
    return Path(found).parent


def proxy_url() -> str:
    """The first HTTP(S) proxy in `$GOPROXY` (comma or pipe separated), as `go` would ask first."""
    for entry in re.split(r"[,|]", os.environ.get("GOPROXY", "")):
        if entry.startswith(("http://", "https://")):
            return entry.rstrip("/")
    return DEFAULT_PROXY


def architecture() -> str:
    machine = platform.machine().lower()
    if machine not in ARCHITECTURES:
        raise ToolchainError(
            f"no pinned Go toolchain for {machine}; install Go >= "
            f"{'.'.join(map(str, MINIMUM_GO))} and put it on PATH"
        )
    return ARCHITECTURES[machine]


def toolchain_dir(arch: str) -> Path:
    return cache_root() / "go" / f"go{GO_VERSION}.linux-{arch}"


def ensure_go() -> Path:
    """The folder holding a usable `go`: the installed one, or the pinned one (fetched once)."""
    found = installed_go()
    if found is not None:
        return found
    arch = architecture()
    target = toolchain_dir(arch)
    if not (target / "bin" / "go").is_file():
        fetch(arch, target)
    return target / "bin"


def fetch(arch: str, target: Path) -> None:
    """Download, verify and unpack `golang.org/toolchain` at the pinned version into `target`."""
    version = f"v0.0.1-go{GO_VERSION}.linux-{arch}"
    url = f"{proxy_url()}/golang.org/toolchain/@v/{version}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        archive = scratch / "toolchain.zip"
        logger.info(
            "No Go >= %s here: fetching Go %s from %s",
            ".".join(map(str, MINIMUM_GO)),
            GO_VERSION,
            url,
        )
        digest = _download(url, archive)
        if digest != GO_TOOLCHAIN_SHA256[arch]:
            raise ToolchainError(
                f"{url} has SHA-256 {digest}, not the pinned "
                f"{GO_TOOLCHAIN_SHA256[arch]}; refusing to use it"
            )
        _unpack(archive, f"golang.org/toolchain@{version}/", scratch / "go")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(scratch / "go", target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _download(url: str, path: Path) -> str:
    """Stream `url` into `path` with a progress bar; returns the SHA-256 of what arrived."""
    digest = hashlib.sha256()
    try:
        with (
            urllib.request.urlopen(url, timeout=60) as response,
            path.open("wb") as out,
            tqdm(
                total=int(response.headers.get("Content-Length") or 0) or None,
                unit="B",
                unit_scale=True,
                desc=f"go{GO_VERSION}",
                mininterval=5,
            ) as bar,
        ):
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    except OSError as error:
        raise ToolchainError(
            f"cannot fetch {url}: {error}; set GOPROXY to a Go module proxy "
            "this machine reaches, or install Go"
        ) from None
    return digest.hexdigest()


def _unpack(archive: Path, prefix: str, into: Path) -> None:
    """Extract the module zip without its path prefix.

    A module zip keeps no file modes, so the programs under bin/ and pkg/tool/ are made executable,
    as `go` does when it switches toolchains.
    """
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            if not member.filename.startswith(prefix) or member.is_dir():
                continue
            relative = member.filename[len(prefix) :]
            path = into / relative
            if not path.resolve().is_relative_to(into.resolve()):
                raise ToolchainError(
                    f"the toolchain zip names a path outside its folder: {member.filename}"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            with bundle.open(member) as source, path.open("wb") as out:
                shutil.copyfileobj(source, out)
            executable = relative.startswith(("bin/", "pkg/tool/"))
            path.chmod(0o755 if executable else 0o644)
