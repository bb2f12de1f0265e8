"""A local stand-in for `python:3.11-slim`, made from Debian packages when no registry answers.

The lesson's Dockerfile starts `FROM python:3.11-slim`. Where that image cannot be pulled (CI has
no registry), debootstrap a Debian bookworm root filesystem (its python3 is 3.11), make `python`
and `pip` behave as in the official image, trust the host's CA bundle so pip inside `docker
build` reaches the package index the way the host does, and import it under the official tag.

`debootstrap()` and `import_rootfs()` are generic: the kind node image reuses them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound
from tqdm.auto import tqdm

from autograder.shared.errors import LabError
from autograder.shared.pins import cache_root

BASE_IMAGE = "python:3.11-slim"
SUITE = "bookworm"
PYTHON_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")
MIRROR_ENV = "LAB_DEBIAN_MIRROR"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
APT_SOURCES = Path("/etc/apt")
# What the official image sets: /usr/local/bin first, a UTF-8 locale, an interactive python.
PYTHON_IMAGE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)

logger = logging.getLogger(__name__)
PYTHON_IMAGE_CHECK = (
    "sh",
    "-c",
    "python --version && pip --version && python -c 'import ssl, venv'",
)
# pip settings worth carrying from the host into the image; host-local paths (find-links) are not.
PIP_KEYS = (
    "index-url",
    "extra-index-url",
    "trusted-host",
    "proxy",
    "timeout",
    "default-timeout",
    "retries",
)
PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


class BaseImageError(LabError):
    """The stand-in image could not be made; the message says why and what to do next."""


def debian_mirror(suite: str = SUITE, apt_dir: Path = APT_SOURCES) -> str:
    """The Debian archive this host's apt uses for `suite` (or $LAB_DEBIAN_MIRROR)."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV]
    for uri, suites in apt_sources(apt_dir):
        if suite in suites:
            return uri
    raise BaseImageError(
        f"no apt source for Debian {suite} in {apt_dir}/sources.list(.d); "
        f"set {MIRROR_ENV}=http://<a Debian mirror>/debian"
    )


def apt_sources(apt_dir: Path) -> Iterable[tuple[str, list[str]]]:
    """(URI, suites) of every enabled `deb` source, one-line or deb822 format."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        for line in path.read_text().splitlines() if path.is_file() else []:
            words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE))
            if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                for uri in fields.get("URIs", "").split():
                    yield uri, fields.get("Suites", "").split()


def debootstrap(
    target: Path,
    packages: Sequence[str],
    *,
    suite: str = SUITE,
    mirror: str | None = None,
    variant: str = "minbase",
) -> Path:
    """Fill the empty directory `target` with a Debian root filesystem holding `packages`."""
    if os.geteuid() != 0:
        raise BaseImageError(
            "debootstrap needs root (it creates device files and chroots); run as root or in CI"
        )
    program = shutil.which("debootstrap") or _apt_install("debootstrap")
    mirror = mirror or debian_mirror(suite)
    command = [
        program,
        f"--variant={variant}",
        f"--include={','.join(packages)}",
        suite,
        str(target),
        mirror,
    ]
    logger.info(
        "debootstrap %s from %s with %s into %s", suite, mirror, ", ".join(packages), target
    )
    tail: list[str] = []
    with (
        subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
        tqdm(desc="debootstrap", unit=" steps", leave=False) as bar,
    ):
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-30:]
            bar.set_postfix_str(line.strip()[:60])
            bar.update()
    if proc.returncode != 0:
        unmount_below(target)
        raise BaseImageError(
            f"debootstrap failed (exit {proc.returncode}); last lines:\n" + "\n".join(tail)
        )
    return target


def _apt_install(package: str) -> str:
    """Install a Debian package this module needs and return the program's path."""
    logger.info("installing %s with apt-get", package)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise BaseImageError(f"{' '.join(command)} failed: {done.stderr.strip()[-1500:]}")
    found = shutil.which(package)
    if not found:
        raise BaseImageError(f"{package} was installed but is not on PATH")
    return found


def unmount_below(path: Path) -> None:
    """Undo mounts an interrupted debootstrap left inside `path`, deepest first."""
    root = str(path.resolve())
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == root or m.startswith(root + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


def install_host_certificates(rootfs: Path, bundle: Path = HOST_CA_BUNDLE) -> int:
    """Add the host's CAs the rootfs lacks to its trust store; returns how many were added."""
    if not bundle.is_file():
        return 0
    known = set(PEM_BLOCK.findall((rootfs / "etc/ssl/certs/ca-certificates.crt").read_text()))
    extra = [pem for pem in PEM_BLOCK.findall(bundle.read_text()) if pem not in known]
    local = rootfs / "usr/local/share/ca-certificates"
    local.mkdir(parents=True, exist_ok=True)
    for number, pem in enumerate(extra):
        (local / f"host-{number}.crt").write_text(pem + "\n")
    if extra:
        done = subprocess.run(
            ["chroot", str(rootfs), "update-ca-certificates"],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BaseImageError(
                f"update-ca-certificates in the rootfs failed: {done.stderr.strip()}"
            )
    return len(extra)


def host_pip_settings() -> dict[str, str]:
    """How the host's pip reaches the index (config files and PIP_* variables), as pip.conf keys."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    )
    settings = {}
    for match in re.finditer(r"^[^.\s]*\.([\w-]+)='(.*)'$", done.stdout, re.MULTILINE):
        key, value = match.groups()
        if key in PIP_KEYS:
            settings["timeout" if key == "default-timeout" else key] = value
    return settings


def make_python_official_like(rootfs: Path, pip_settings: dict[str, str]) -> None:
    """`python` and `pip` on PATH, pip free to install (no PEP 668 marker), the host's index."""
    local_bin = rootfs / "usr/local/bin"
    local_bin.mkdir(parents=True, exist_ok=True)
    for name, target in (("python", "python3"), ("pip", "pip3"), ("pip3", "pip3")):
        link = local_bin / name
        link.unlink(missing_ok=True)
        link.symlink_to(f"/usr/bin/{target}")
    # Debian marks its python as system-managed; the official image's python is not.
    for marker in (rootfs / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    settings = {**pip_settings, "cert": "/etc/ssl/certs/ca-certificates.crt"}
    (rootfs / "etc/pip.conf").write_text(
        "[global]\n" + "".join(f"{key} = {value}\n" for key, value in sorted(settings.items()))
    )
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (rootfs / cache).glob("*"):
            if item.is_file():
                item.unlink()


def pack(rootfs: Path, tarball: Path) -> Path:
    """Write `rootfs` as a tar file, atomically: a reader never sees a half-written file."""
    entries = sum(len(dirs) + len(files) for _, dirs, files in os.walk(rootfs))
    partial = tarball.with_name(f".{tarball.name}.{uuid.uuid4().hex[:8]}")
    try:
        with (
            tarfile.open(partial, "w") as tar,
            tqdm(total=entries, desc=f"pack {tarball.name}", unit=" files", leave=False) as bar,
        ):

            def counted(info: tarfile.TarInfo) -> tarfile.TarInfo:
                bar.update()
                return info

            for item in sorted(rootfs.iterdir()):
                tar.add(item, arcname=item.name, filter=counted)
        partial.replace(tarball)
    finally:
        partial.unlink(missing_ok=True)
    return tarball


def import_rootfs(
    source: Path,
    tag: str,
    *,
    changes: Sequence[str] = (),
    check: Sequence[str] = (),
    client: docker.DockerClient | None = None,
) -> str:
    """`docker import` a rootfs directory or tar as `tag`, tagged only once `check` passed in it."""
    client = client or docker.from_env()
    repository, version = split_tag(tag)
    staging = f"{repository}:staging-{uuid.uuid4().hex[:8]}"
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root()) as scratch:
        tarball = pack(source, Path(scratch) / "rootfs.tar") if source.is_dir() else source
        logger.info(
            "docker import %s (%.0f MiB) as %s", tarball.name, tarball.stat().st_size / 2**20, tag
        )
        client.api.import_image(
            src=str(tarball),
            repository=repository,
            tag=split_tag(staging)[1],
            changes=list(changes),
        )
    try:
        if check:
            output = client.containers.run(staging, list(check), remove=True, stderr=True)
            logger.info("%s check: %s", tag, output.decode().strip())
        client.api.tag(staging, repository, version)
        return client.images.get(tag).id
    except DockerException as error:
        raise BaseImageError(
            f"the imported image failed its check {list(check)}: {error}"
        ) from error
    finally:
        client.api.remove_image(staging)


def split_tag(tag: str) -> tuple[str, str]:
    """("repo", "tag") of an image reference; a missing tag is "latest", as Docker reads it."""
    name, _, version = tag.rpartition(":")
    if not name or "/" in version:
        return tag, "latest"
    return name, version


def _pullable(client: docker.DockerClient, tag: str) -> bool:
    """Pull `tag` from its registry; False (quietly) when no registry can be reached."""
    try:
        client.images.pull(tag)
    except (APIError, DockerException) as error:
        logger.info(
            "cannot pull %s (%s); making a local stand-in", tag, str(error).splitlines()[0][:120]
        )
        return False
    return True


def stand_in_tarball() -> Path:
    """Where the debootstrapped stand-in is cached, so a wiped Docker re-imports in seconds."""
    return cache_root() / "images" / f"{BASE_IMAGE.replace(':', '-')}-{SUITE}-standin.tar"


def build_python_rootfs(tarball: Path) -> Path:
    """Debootstrap bookworm with python3 and pip, set it up like the official image, pack it."""
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=tarball.parent))
    try:
        rootfs = debootstrap(work / "rootfs", PYTHON_PACKAGES)
        added = install_host_certificates(rootfs)
        settings = host_pip_settings()
        make_python_official_like(rootfs, settings)
        logger.info(
            "trusted %s host CA certificate(s); pip settings from the host: %s",
            added,
            ", ".join(f"{k}={v}" for k, v in settings.items()) or "none (pypi.org)",
        )
        return pack(rootfs, tarball)
    finally:
        unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)


def ensure_python_base(client: docker.DockerClient | None = None) -> str:
    """Make `python:3.11-slim` present: as it is, pulled, or built locally; returns its image id."""
    client = client or docker.from_env()
    try:
        return client.images.get(BASE_IMAGE).id
    except ImageNotFound:
        pass
    if _pullable(client, BASE_IMAGE):
        return client.images.get(BASE_IMAGE).id
    started = time.monotonic()
    tarball = stand_in_tarball()
    if not tarball.is_file():
        build_python_rootfs(tarball)
    image = import_rootfs(
        tarball, BASE_IMAGE, changes=PYTHON_IMAGE_CHANGES, check=PYTHON_IMAGE_CHECK, client=client
    )
    logger.info(
        "%s stand-in ready in %.0f s (%s)", BASE_IMAGE, time.monotonic() - started, image[:19]
    )
    return image
