"""What the practice cluster's simulated kubelets hold: loaded images, their apps, and pod routes.

A real kubelet pulls an image and reports it in node.status.images. Here "loading" an image
keeps its app folder, records the tag in a catalog ConfigMap (which the router reads to start
that app) and on every node's status.images; kwok PortForward objects, one per pod, are the
routes by which `kubectl port-forward` reaches the app of the pod's image.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kubernetes import client

from autograder.modelserver import SOURCE as MODEL_SERVER
from autograder.practice.supervise import state_dir
from autograder.shared import k8s, pins
from autograder.shared.errors import LabError

if TYPE_CHECKING:
    from autograder.shared.provider import Lab

CATALOG_NAMESPACE = "kube-system"

CATALOG_NAME = "lab-images"

CATALOG_KEY = "images.json"

KWOK = ("kwok.x-k8s.io", "v1alpha1")

MANAGED_BY = {"app.kubernetes.io/managed-by": "k8s-ml-lab-traffic"}

# The lesson's images, as `docker build --build-arg MODEL_VERSION=...` makes them from the reference app.
REFERENCE_IMAGES = {"ml-api:v1": "v1.0", "ml-api:v2": "v2.0"}


class ImageNotLoaded(LabError):
    """Pods run an image the practice cluster never received; the message says how to load it."""

def safe_name(tag: str) -> str:
    """An image tag as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tag)

def snapshot_dir(tag: str, digest: str) -> Path:
    """Where one content of an image's app is kept: rebuilding v2 never changes what v1 serves."""
    return pins.cache_root() / "practice-images" / safe_name(tag) / digest[:16]


def snapshot(target: Path, fill: Callable[[Path], object]) -> Path:
    """`target`, filled once by `fill` into a scratch folder and renamed: never seen half-written."""
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        fill(Path(scratch) / "app")
        try:
            (Path(scratch) / "app").rename(target)
        except OSError:
            if not target.is_dir():  # another load of the same content won the race: keep it
                raise
    return target


def catalog(core: client.CoreV1Api) -> dict[str, dict]:
    """The images loaded into the practice cluster: tag -> {"app": folder, "env": {...}}."""
    try:
        config_map = core.read_namespaced_config_map(CATALOG_NAME, CATALOG_NAMESPACE)
    except client.ApiException as error:
        if error.status == 404:
            return {}
        raise
    return json.loads((config_map.data or {}).get(CATALOG_KEY, "{}"))

def loaded_images(lab: Lab) -> set[str]:
    """Tags in the catalog; a namespace-scoped identity (a graded kernel) may not read it, and
    then every image counts as loaded: the router, which can, still serves only loaded ones."""
    try:
        return set(catalog(lab.core))
    except client.ApiException as error:
        if error.status != 403:
            raise
        return {image for pod in lab.core.list_namespaced_pod(lab.namespace).items for image in pod_images(pod)}

def register_image(core: client.CoreV1Api, tag: str, app: Path, env: dict[str, str]) -> None:
    """Record that the cluster holds `tag` and which app and environment it serves."""
    entry = {"app": str(app), "env": env}
    for _ in range(10):
        try:
            current = core.read_namespaced_config_map(CATALOG_NAME, CATALOG_NAMESPACE)
        except client.ApiException as error:
            if error.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=CATALOG_NAME, labels=MANAGED_BY),
                data={CATALOG_KEY: json.dumps({tag: entry})})
            try:
                core.create_namespaced_config_map(CATALOG_NAMESPACE, body)
                return
            except client.ApiException as race:
                if race.status != 409:
                    raise
                continue
        images = json.loads((current.data or {}).get(CATALOG_KEY, "{}"))
        images[tag] = entry
        current.data = {CATALOG_KEY: json.dumps(images, sort_keys=True)}
        try:
            core.replace_namespaced_config_map(CATALOG_NAME, CATALOG_NAMESPACE, current)
            return
        except client.ApiException as error:
            if error.status != 409:  # someone else changed it in between: read again
                raise
    raise LabError(f"could not record {tag} in {CATALOG_NAMESPACE}/{CATALOG_NAME}: too many conflicts")


def record_on_nodes(core: client.CoreV1Api, tag: str, size: int) -> None:
    """Add `tag` to every node's status.images, as a kubelet reports images it holds."""
    names = [tag if "/" in tag else f"docker.io/library/{tag}", tag]
    for node in core.list_node().items:
        images = [image for image in node.status.images or [] if tag not in image.names]
        images.append(client.V1ContainerImage(names=names, size_bytes=size))
        core.patch_node_status(node.metadata.name, {"status": {"images": [
            {"names": image.names, "sizeBytes": image.size_bytes} for image in images]}})

def snapshot_source(tag: str, source: Path) -> tuple[Path, int]:
    """A frozen copy of the build context `source` (the folder with app.py) and its size in bytes."""
    if not (source / "app.py").is_file():
        raise FileNotFoundError(f"no app.py in {source}: write the model server there first")
    files = sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(source)).encode() + b"\0" + path.read_bytes())
    folder = snapshot(snapshot_dir(tag, digest.hexdigest()), lambda target: shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))
    return folder, sum(path.stat().st_size for path in files)


def preload_reference_images(core: client.CoreV1Api) -> None:
    """The course's reference ml-api:v1/v2 come pre-pulled on the practice nodes; a student's load
    replaces them. The student image has no reference app (it answers the app exercise): none there.
    """
    if not (MODEL_SERVER / "app.py").is_file():
        return
    loaded = catalog(core)
    for tag, version in REFERENCE_IMAGES.items():
        if tag not in loaded:
            folder, size = snapshot_source(tag, MODEL_SERVER)
            register_image(core, tag, folder, {"MODEL_VERSION": version})
            record_on_nodes(core, tag, size)


def images_on_nodes(lab: Lab) -> set[str]:
    """Every image name any node reports holding."""
    return {name for node in lab.core.list_node().items
            for image in node.status.images or [] for name in image.names or []}


def pod_images(pod: client.V1Pod) -> set[str]:
    """The images a pod's containers run."""
    return {container.image for container in pod.spec.containers}


def wait_routed(lab: Lab, selector: str, timeout: float = 30) -> None:
    """Block until every serving pod behind `selector` has its PortForward, so traffic can flow."""
    custom = client.CustomObjectsApi(lab.api)
    missing: list[str] = []

    def routed(forwards: list[dict]) -> bool:
        placed = [pod for pod in lab.core.list_namespaced_pod(lab.namespace, label_selector=selector).items
                  if pod.spec.node_name and pod.metadata.deletion_timestamp is None]
        pods = [pod for pod in placed if k8s.pod_ready(pod)]
        # Pods whose image was never loaded never start: with none serving, that is the reason to give.
        unloaded = sorted({image for pod in pods or placed for image in pod_images(pod)} - loaded_images(lab))
        if unloaded:
            raise ImageNotLoaded(
                f"the pods behind {selector} run {', '.join(unloaded)}, which was never loaded into "
                "the practice cluster (a real kubelet would report ErrImageNeverPull): run "
                "images.load_into_cluster(lab, TAG) first")
        names = {item["metadata"]["name"] for item in forwards}
        missing[:] = [pod.metadata.name for pod in pods if pod.metadata.name not in names] or (
            [] if pods else ["(none running)"])
        return not missing

    try:
        k8s.wait_for(custom.list_namespaced_custom_object, *KWOK, lab.namespace, "portforwards", until=routed,
                     timeout=timeout, what=f"routes to the pods behind {selector}", resync=0.5)
    except k8s.WaitTimeout:
        raise k8s.WaitTimeout(f"no route to pods {missing} behind {selector} after {timeout:.0f} s; the "
                              f"router's log says why: {state_dir(lab.context) / 'router.log'}") from None


def serves_kwok_routes(lab: Lab) -> bool:
    """Whether the cluster has kwok's PortForward API, i.e. its pods are simulated."""
    groups = client.ApisApi(lab.api).get_api_versions().groups or []
    return any(group.name == KWOK[0] for group in groups)
