"""A kind node image built offline, because `kind build node-image` pulls from registries.

The image does what kind's base image and its node-image build do, from parts this machine can
get without a registry (see `nodeparts`): a Debian bookworm rootfs with systemd and Debian's
containerd, runc and CNI plugins, kind's base files, Kubernetes binaries built from Go modules,
and the component images kubeadm asks for, each built locally and preloaded into the node's
containerd. The result is tagged only once it is whole; its tag carries a hash of its inputs,
so a rebuild happens only when an input changes.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from tqdm.auto import tqdm

from autograder.build import baseimage
from autograder.build.nodeparts import (
    IPTABLES_ROOTFS,
    NODE_BINARIES,
    NODE_ENTRYPOINT,
    NODE_ROOTFS,
    STATIC_BASE,
    NodeImageError,
    Rootfs,
    check_kubeadm_images,
    component_dockerfile,
    components,
    gather_binaries,
    inputs_digest,
    kind_base_files,
    node_dockerfile,
    node_files,
)
from autograder.providers.kind import LOCAL_NODE_IMAGE
from autograder.shared import dockerengine, pins
from autograder.shared.waiting import poll

logger = logging.getLogger(__name__)

__all__ = ["ALIAS_TAG", "NodeImage", "NodeImageError", "build", "last_build"]

ALIAS_TAG = LOCAL_NODE_IMAGE
REPOSITORY = ALIAS_TAG.split(":")[0]


@dataclass(frozen=True)
class NodeImage:
    """A finished node image and what making it cost."""

    tag: str
    alias: str
    size_bytes: int
    seconds: float
    cached: bool

    def summary(self) -> str:
        """One line for the terminal: which image, how big, how long."""
        how = "already built, inputs unchanged:" if self.cached else "built in"
        return (
            f"{self.tag} (alias {self.alias}): {how} {self.seconds:.1f} s, "
            f"{self.size_bytes / 1e6:.0f} MB"
        )


def image_tag(files: dict[str, tuple[bytes, int]]) -> str:
    """The tag a build of `files` and today's pins gets: `k8s-ml-lab/kind-node:v1.34.12-<hash>`."""
    return f"{REPOSITORY}:v{pins.KUBERNETES_VERSION}-{inputs_digest(files)[:12]}"


def docker_client() -> docker.DockerClient:
    """A client for a Docker engine that answers, or a message on how to start one."""
    reason = dockerengine.unreachable_reason()
    if reason:
        raise NodeImageError(f"{reason}; in this repo's CI `.ci/docker-engine start`")
    return docker.from_env(timeout=600)


def _image_exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


@contextmanager
def _build_lock() -> Iterator[None]:
    """One node-image build at a time on this machine; a second caller waits for the first."""
    pins.cache_root().mkdir(parents=True, exist_ok=True)
    with open(pins.cache_root() / ".kind-node-image.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _remove_leftovers(client: docker.DockerClient) -> None:
    """Drop what an earlier build killed halfway left behind: its containers and staging tags."""
    for container in client.containers.list(all=True, filters={"name": "k8s-ml-lab-preload-"}):
        logger.info("removing leftover build container %s", container.name)
        container.remove(force=True)
    for image in client.images.list():
        for tag in image.tags:
            if tag.startswith(("k8s-ml-lab/staging-", f"{REPOSITORY}:staging-")):
                logger.info("removing leftover staging tag %s", tag)
                client.images.remove(tag)


def _drop_older(client: docker.DockerClient, current: str, replaced: list[str]) -> None:
    """Remove node images of other inputs and those a rebuild left untagged, unless in use."""
    older = [
        tag
        for image in client.images.list(name=REPOSITORY)
        for tag in image.tags
        if tag not in (current, ALIAS_TAG)
    ]
    untagged = [
        image_id
        for image_id in dict.fromkeys(replaced)
        if _image_exists(client, image_id) and not client.images.get(image_id).tags
    ]
    for target in (*older, *untagged):
        try:
            client.images.remove(target)
        except APIError:  # a kind node still runs it
            pass


def _context(dockerfile: str, files: dict[str, tuple[bytes, int] | Path], into: Path) -> Path:
    """A build context tarball: the Dockerfile plus files given as bytes or as paths on disk."""
    archive = into / f"context-{uuid.uuid4().hex[:8]}.tar"
    with tarfile.open(archive, "w") as tar:
        entries: dict[str, tuple[bytes, int] | Path] = {
            "Dockerfile": (dockerfile.encode(), 0o644),
            **files,
        }
        for name, source in entries.items():
            info = tarfile.TarInfo(name.rstrip("/"))
            if isinstance(source, Path):
                info.size, info.mode = source.stat().st_size, 0o755
                with open(source, "rb") as stream:
                    tar.addfile(info, stream)
            elif name.endswith("/"):
                info.type, info.mode = tarfile.DIRTYPE, source[1]
                tar.addfile(info)
            else:
                info.size, info.mode = len(source[0]), source[1]
                tar.addfile(info, io.BytesIO(source[0]))
    return archive


def docker_build(client: docker.DockerClient, context: Path, tag: str, bar: tqdm) -> None:
    """`docker build` a context tarball as `tag`, named on the progress bar, its steps below it."""
    bar.set_postfix_str(f"docker build {tag.rsplit('/', 1)[-1]}")
    dockerengine.build(client, context, tag, failure=NodeImageError, pull=False)


def ensure_rootfs(client: docker.DockerClient, wanted: Rootfs) -> str:
    """The rootfs image `wanted`, debootstrapped and imported the first time only."""
    tag = wanted.tag
    if _image_exists(client, tag):
        return tag
    pins.cache_root().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"kind-{wanted.name}-rootfs-", dir=pins.cache_root()))
    try:
        rootfs = baseimage.debootstrap(work / "rootfs", wanted.packages)
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (rootfs / leftover).glob("*"):
                if item.is_file():
                    item.unlink()
        baseimage.import_rootfs(rootfs, tag, client=client, check=("sh", "-c", wanted.check))
    finally:
        baseimage.unmount_below(work)
        shutil.rmtree(work, ignore_errors=True)
    return tag


def _run(container, command: list[str]) -> str:
    """Run a command in the preload container; a failure raises with its output."""
    code, output = container.exec_run(command)
    text = output.decode(errors="replace").strip()
    if code != 0:
        raise NodeImageError(
            f"{' '.join(command)} failed in the build container (exit {code}):\n{text}"
        )
    return text


def preload(
    client: docker.DockerClient,
    stage: str,
    images: dict[str, str],
    into: str,
    work: Path,
    bar: tqdm,
) -> None:
    """Import `images` (staging tag -> kubeadm's name) into the node's containerd, commit `into`."""
    saved = work / "preload"
    saved.mkdir()
    for number, staging in enumerate(images):
        bar.set_postfix_str(f"docker save {images[staging]}")
        with open(saved / f"{number}.tar", "wb") as stream:
            stream.writelines(client.images.get(staging).save(named=True))
    # Importing without unpacking needs only containerd's content store: no privileges, no mounts.
    container = client.containers.run(
        stage,
        entrypoint=["/usr/local/bin/containerd"],
        detach=True,
        name=f"k8s-ml-lab-preload-{uuid.uuid4().hex[:8]}",
        tmpfs={"/run": "", "/tmp": ""},
        volumes={str(saved): {"bind": "/preload", "mode": "ro"}},
    )
    try:
        if (
            poll(
                lambda: container.exec_run(["ctr", "version"]).exit_code, lambda code: code == 0, 60
            )
            != 0
        ):
            raise NodeImageError(
                "containerd in the build container did not answer within 60 s:\n"
                + container.logs(tail=20).decode(errors="replace")
            )
        for number, (staging, final) in enumerate(images.items()):
            bar.set_postfix_str(f"ctr import {final}")
            ctr = ["ctr", "--namespace=k8s.io", "images"]
            _run(
                container,
                [*ctr, "import", "--all-platforms", "--no-unpack", f"/preload/{number}.tar"],
            )
            _run(container, [*ctr, "tag", "--force", f"docker.io/{staging}", final])
            _run(container, [*ctr, "rm", f"docker.io/{staging}"])
        present = set(_run(container, ["ctr", "--namespace=k8s.io", "images", "ls", "-q"]).split())
        # ctr also names each imported image by its config digest; kubelet
        # would list those as <none>.
        by_digest = sorted(name for name in present if name.startswith("sha256:"))
        if by_digest:
            _run(container, ["ctr", "--namespace=k8s.io", "images", "rm", *by_digest])
        present -= set(by_digest)
        if present != set(images.values()):
            raise NodeImageError(
                f"the node's containerd holds {sorted(present)}, expected {sorted(images.values())}"
            )
        container.stop(timeout=30)
        repository, tag = baseimage.split_tag(into)
        # The rest of the config (env, stop signal) carries over from the stage image.
        container.commit(repository=repository, tag=tag, changes=[NODE_ENTRYPOINT])
    finally:
        container.remove(force=True)


NODE_CHECK = (
    "sh",
    "-c",
    (
        "kubelet --version && kubeadm version -o short && kubectl version --client "
        "&& crictl --version && containerd --version && runc --version | head -n1 "
        "&& test -x /opt/cni/bin/ptp && cat /kind/version"
    ),
)


def build(force: bool = False) -> NodeImage:
    """Build the node image unless one with the same inputs exists; it is tagged only when whole."""
    started = time.monotonic()
    client = docker_client()
    files = node_files(kind_base_files())
    tag = image_tag(files)
    with _build_lock():
        cached = not force and _image_exists(client, tag)
        if not cached:
            replaced = [
                client.images.get(name).id
                for name in (tag, ALIAS_TAG)
                if _image_exists(client, name)
            ]
            _remove_leftovers(client)
            _build(client, files, tag)
        image = client.images.get(tag)
        image.tag(*baseimage.split_tag(ALIAS_TAG))
        if not cached:
            _drop_older(client, tag, replaced)
    built = NodeImage(
        tag=tag,
        alias=ALIAS_TAG,
        size_bytes=image.attrs["Size"],
        seconds=time.monotonic() - started,
        cached=cached,
    )
    if not cached:
        _build_record().write_text(
            json.dumps({"tag": tag, "seconds": built.seconds, "size_bytes": built.size_bytes})
        )
    return built


def _build_record() -> Path:
    return pins.cache_root() / "kind-node-image.json"


def last_build() -> dict | None:
    """Tag, seconds and size of the last full build here, so a benchmark can report it later."""
    try:
        return json.loads(_build_record().read_text())
    except (OSError, ValueError):
        return None


def _build(client: docker.DockerClient, files: dict[str, tuple[bytes, int]], tag: str) -> None:
    """Every step of a build; whatever fails or is interrupted, only staging tags are removed."""
    build_id = uuid.uuid4().hex[:8]
    stage, whole = f"{REPOSITORY}:staging-{build_id}", f"{REPOSITORY}:staging-{build_id}-whole"
    made: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="kind-node-build-", dir=pins.cache_root()))
    try:
        with tqdm(total=6, desc="kind node image", unit="step") as bar:
            bar.set_postfix_str("binaries")
            paths = gather_binaries()
            check_kubeadm_images(paths["kubeadm"])
            bar.update()
            bar.set_postfix_str("bookworm rootfs")
            rootfs = ensure_rootfs(client, NODE_ROOTFS)
            iptables_rootfs = ensure_rootfs(client, IPTABLES_ROOTFS)
            bar.update()
            preloaded = {}
            for component in components():
                version = baseimage.split_tag(component.ref)[1]
                staging = f"k8s-ml-lab/staging-{build_id}/{component.name}:{version}"
                extra = {} if component.needs_iptables else STATIC_BASE
                context = _context(
                    component_dockerfile(component, rootfs, iptables_rootfs),
                    {component.name: paths[component.name], **extra},
                    work,
                )
                made.append(staging)
                docker_build(client, context, staging, bar)
                preloaded[staging] = component.ref
            bar.update()
            node_context = _context(
                node_dockerfile(rootfs),
                {
                    **{f"rootfs/{name}": entry for name, entry in files.items()},
                    **{f"rootfs/usr/bin/{name}": paths[name] for name in NODE_BINARIES},
                    "rootfs/usr/local/bin/crictl": paths["crictl"],
                },
                work,
            )
            made.append(stage)
            docker_build(client, node_context, stage, bar)
            bar.update()
            made.append(whole)
            preload(client, stage, preloaded, whole, work, bar)
            bar.update()
            bar.set_postfix_str("check")
            report = client.containers.run(whole, entrypoint=list(NODE_CHECK), remove=True)
            logger.info("node image check: %s", " | ".join(report.decode().split("\n")).strip(" |"))
            client.images.get(whole).tag(*baseimage.split_tag(tag))
            bar.update()
    except (DockerException, requests.RequestException) as error:
        raise NodeImageError(
            f"Docker failed during the node image build ({error}); is dockerd "
            "still running? (`docker info`)"
        ) from error
    finally:
        for staging in reversed(made):
            try:
                client.images.remove(staging)
            except NotFound:
                pass
        shutil.rmtree(work, ignore_errors=True)
