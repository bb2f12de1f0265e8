"""What the practice cluster's simulated kubelets hold: images, their apps, and pod routes.

An image is built from a folder and its Dockerfile (dockerfile.py) into the files of its WORKDIR
and a run config (environment, command). Images live in two places. A namespace's own images are
ConfigMaps in it (labelled IMAGE_LABEL) holding the build folder, like a registry of its own: a
student's load writes there with the student's own rights, and the runtime builds each record
itself, so a record can hold nothing a Dockerfile could not. The cluster's images, loaded by its
administrator (the course's reference v1 and v2, pre-pulled), are in a catalog ConfigMap in
kube-system and on every node's status.images; a namespace labelled OWN_IMAGES (every graded
one) never runs them, so a submission runs only what it built. kwok PortForward objects, one per
pod, are the routes by which `kubectl port-forward` reaches the app of the pod's image.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from kubernetes import client

from autograder.modelserver import SOURCE as MODEL_SERVER
from autograder.practice import dockerfile
from autograder.practice.supervise import state_dir
from autograder.shared import k8s, pins
from autograder.shared.errors import DockerfileMissing, LabError

if TYPE_CHECKING:
    from autograder.shared.provider import Lab

CATALOG_NAMESPACE = "kube-system"

CATALOG_NAME = "lab-images"

CATALOG_KEY = "images.json"

KWOK = ("kwok.x-k8s.io", "v1alpha1")

MANAGED_BY = {"app.kubernetes.io/managed-by": "k8s-ml-lab-traffic"}

# The lesson's images, as `docker build --build-arg MODEL_VERSION=...` makes
# them from the reference app.
REFERENCE_IMAGES = {"ml-api:v1": "v1.0", "ml-api:v2": "v2.0"}

IMAGE_LABEL = "lab.k8s-ml-lab/image"  # on a ConfigMap: one of its namespace's own images
TAG_ANNOTATION = "lab.k8s-ml-lab/tag"
FOLDER_ANNOTATION, BUILT_AT_ANNOTATION = "lab.k8s-ml-lab/folder", "lab.k8s-ml-lab/built-at"
# On a record, written by a grader that builds records with Docker (kind): {"built_at": the
# record's BUILT_AT, "image": what it loaded} or {"built_at": ..., "error": why not}.
LOAD_RESULT_ANNOTATION = "lab.k8s-ml-lab/load-result"
LOAD_WAIT = 300  # seconds a kernel waits for the grader's build and load of its record
OWN_IMAGES_LABEL, OWN_IMAGES = (
    "lab.k8s-ml-lab/images",
    "own",
)  # on a namespace: it runs only its own images
FILES_KEY, ARGS_KEY = "files.json", "build-args.json"
IMAGE_CONFIG = "image.json"
# A ConfigMap holds at most 1 MiB; a model server's folder needs a few KiB.
MAX_RECORD_BYTES, MAX_FILES = 900 * 1024, 256


class ImageNotLoaded(LabError):
    """Pods run an image the practice cluster never received; the message says how to load it."""


def safe_name(tag: str) -> str:
    """An image tag as a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", tag)


def snapshot_dir(tag: str, digest: str) -> Path:
    """Where one content of an image's app is kept: rebuilding v2 never changes what v1 serves."""
    return pins.cache_root() / "practice-images" / safe_name(tag) / digest[:16]


def snapshot(target: Path, fill: Callable[[Path], object]) -> Path:
    """`target`, filled once by `fill` in a scratch folder and renamed: never seen half-written."""
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
    """Tags the lab's namespace can run: its own and the cluster's. A namespace-scoped identity (a
    graded kernel) may not read the cluster's catalog, and its namespace runs only its own; one that
    may not even read those (the grader's reader) counts every image its pods run as loaded: the
    runtime, which can, still starts only those."""
    try:
        records = lab.core.list_namespaced_config_map(
            lab.namespace, label_selector=IMAGE_LABEL
        ).items
    except client.ApiException as error:
        if error.status != 403:
            raise
        return {
            image
            for pod in lab.core.list_namespaced_pod(lab.namespace).items
            for image in pod_images(pod)
        }
    own = {(record.metadata.annotations or {}).get(TAG_ANNOTATION, "") for record in records}
    try:
        return own | set(catalog(lab.core))
    except client.ApiException as error:
        if error.status != 403:
            raise
        return own


def register_image(core: client.CoreV1Api, tag: str, entry: dict) -> None:
    """Record that the cluster holds `tag` and what it runs (an entry of `build`)."""
    for _ in range(10):
        try:
            current = core.read_namespaced_config_map(CATALOG_NAME, CATALOG_NAMESPACE)
        except client.ApiException as error:
            if error.status != 404:
                raise
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=CATALOG_NAME, labels=MANAGED_BY),
                data={CATALOG_KEY: json.dumps({tag: entry})},
            )
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
    raise LabError(
        f"could not record {tag} in {CATALOG_NAMESPACE}/{CATALOG_NAME}: too many conflicts"
    )


def record_on_nodes(core: client.CoreV1Api, tag: str, size: int) -> None:
    """Add `tag` to every node's status.images, as a kubelet reports images it holds."""
    names = [tag if "/" in tag else f"docker.io/library/{tag}", tag]
    for node in core.list_node().items:
        images = [image for image in node.status.images or [] if tag not in image.names]
        images.append(client.V1ContainerImage(names=names, size_bytes=size))
        core.patch_node_status(
            node.metadata.name,
            {
                "status": {
                    "images": [
                        {"names": image.names, "sizeBytes": image.size_bytes} for image in images
                    ]
                }
            },
        )


def build(tag: str, files: dict[str, bytes], build_args: dict[str, str]) -> dict:
    """The catalog entry of `tag` built from a build folder's `files`.

    Its WORKDIR's files and run config.

    Kept once per content (rebuilding v2 never changes what v1 serves); a folder the practice
    cluster cannot build gives an entry with only the "error" that says why.
    """
    digest = hashlib.sha256(json.dumps(build_args, sort_keys=True).encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())

    def fill(target: Path) -> None:
        context = target / "context"
        write_files(context, files)
        image = dockerfile.read(context, build_args)
        dockerfile.materialize(image, context, target / "workdir")
        (target / IMAGE_CONFIG).write_text(json.dumps(image.run_config()))

    try:
        folder = snapshot(snapshot_dir(tag, digest.hexdigest()), fill)
    except (
        Exception
    ) as error:  # whatever a student's folder holds, the runtime goes on: the pod says why
        return {"error": str(error)}
    return {"app": str(folder / "workdir"), **json.loads((folder / IMAGE_CONFIG).read_text())}


def source_files(source: Path) -> dict[str, bytes]:
    """A build folder's files by relative path (what `docker build` sends as its context)."""
    files = {name: (source / name).read_bytes() for name in dockerfile.context_files(source)}
    if not files:
        raise FileNotFoundError(
            f"no files in {source}: write your app.py and its Dockerfile there first"
        )
    size = sum(map(len, files.values()))
    if size > MAX_RECORD_BYTES or len(files) > MAX_FILES:
        raise LabError(
            f"{source} holds {len(files)} files, {size // 1024} KiB: the practice cluster builds "
            f"folders of at most {MAX_FILES} files and {MAX_RECORD_BYTES // 1024} KiB. Keep "
            "app.py, requirements.txt, the Dockerfile and what they need there"
        )
    return files


def build_source(tag: str, source: Path, build_args: dict[str, str]) -> tuple[dict, int]:
    """`tag` built from the folder `source` as the cluster's own image, its size; failure raises."""
    files = source_files(source)
    entry = build(tag, files, build_args)
    if "error" in entry:
        raise dockerfile.BuildFailed(f"cannot build {tag} from {source}: {entry['error']}")
    return entry, sum(map(len, files.values()))


def preload_reference_images(core: client.CoreV1Api) -> None:
    """The course's reference ml-api:v1/v2 come pre-pulled on the practice nodes.

    They are for namespaces that take the cluster's images (never a graded one: see OWN_IMAGES). The
    student image has no reference app (it answers the app exercise): none there.
    """
    if not (MODEL_SERVER / "app.py").is_file():
        return
    loaded = catalog(core)
    for tag, version in REFERENCE_IMAGES.items():
        if "cmd" not in loaded.get(tag, {}):  # missing, or recorded before images had a run config
            entry, size = build_source(tag, MODEL_SERVER, {"MODEL_VERSION": version})
            register_image(core, tag, entry)
            record_on_nodes(core, tag, size)


def record_name(tag: str) -> str:
    """The ConfigMap that holds a namespace's image `tag`: a readable name, unique per tag."""
    readable = re.sub(r"[^a-z0-9]+", "-", tag.lower()).strip("-")[:40]
    return f"image-{readable}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"


def push(
    core: client.CoreV1Api,
    namespace: str,
    tag: str,
    source: Path,
    build_args: dict[str, str],
    *,
    docker_builds: bool = False,
) -> str:
    """`docker build` + push into the namespace's own registry.

    The folder, checked, as an image record; returns the record's BUILT_AT. With `docker_builds`
    (a grader builds it with Docker, on kind) Docker judges the Dockerfile, not the practice rules.

    The record holds the build folder itself, not a built image: the runtime builds it again, so a
    record written by hand can hold nothing a Dockerfile could not. A folder without a Dockerfile
    carries on from the namespace's last build of a folder of that name: a graded notebook starts
    from a fresh copy of the submission, without the Dockerfile an earlier notebook wrote.
    """
    files = source_files(source)
    if dockerfile.DOCKERFILE not in files:
        files = {**last_build(core, namespace, source.name), **files}
    if dockerfile.DOCKERFILE not in files:
        raise DockerfileMissing(source)
    if not docker_builds:
        with tempfile.TemporaryDirectory() as scratch:
            write_files(Path(scratch), files)
            dockerfile.read(
                Path(scratch), build_args
            )  # the student hears of a refused line now, not from a pod
    names = sorted(files)
    annotations = {
        TAG_ANNOTATION: tag,
        FOLDER_ANNOTATION: source.name,
        BUILT_AT_ANNOTATION: f"{time.time():.6f}",
    }
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(
            name=record_name(tag), labels={IMAGE_LABEL: "true"}, annotations=annotations
        ),
        data={
            FILES_KEY: json.dumps({f"f{index}": name for index, name in enumerate(names)}),
            ARGS_KEY: json.dumps(build_args),
        },
        binary_data={
            f"f{index}": base64.b64encode(files[name]).decode() for index, name in enumerate(names)
        },
    )
    try:
        core.create_namespaced_config_map(namespace, body)
    except client.ApiException as error:
        if error.status != 409:
            raise
        core.replace_namespaced_config_map(record_name(tag), namespace, body)
    return annotations[BUILT_AT_ANNOTATION]


def load_result(record: client.V1ConfigMap) -> dict | None:
    """The grader's load result for the record as it now is (None: not built yet)."""
    annotations = record.metadata.annotations or {}
    try:
        result = json.loads(annotations.get(LOAD_RESULT_ANNOTATION, "null"))
    except ValueError:
        return None
    if isinstance(result, dict) and result.get("built_at") == annotations.get(BUILT_AT_ANNOTATION):
        return result
    return None


def wait_loaded(
    core: client.CoreV1Api, namespace: str, tag: str, built_at: str, timeout: float = LOAD_WAIT
) -> str:
    """The image the grader loaded for the record of `tag` pushed at `built_at`.

    A kernel without Docker (a graded one on kind) waits here for the grader, which builds the
    record outside the kernel; the grader's build or load failure is raised as the student's error.
    """
    name = record_name(tag)

    def result(records: list[client.V1ConfigMap]) -> dict | None:
        current = [r for r in records if (r.metadata.annotations or {}).get(BUILT_AT_ANNOTATION)]
        if current and current[0].metadata.annotations[BUILT_AT_ANNOTATION] != built_at:
            raise LabError(f"{tag} was loaded again meanwhile: load it once at a time")
        return load_result(current[0]) if current else None

    try:
        loaded = k8s.wait_for(
            core.list_namespaced_config_map,
            namespace,
            field_selector=f"metadata.name={name}",
            until=result,
            timeout=timeout,
            what=f"the grader's build of {tag}",
        )
    except k8s.WaitTimeout:
        raise LabError(
            f"the grader did not build {tag} within {timeout:.0f} s; a Dockerfile whose "
            "steps take long (a large pip install) is the usual cause: make it build faster"
        ) from None
    if loaded.get("error"):
        raise dockerfile.BuildFailed(f"cannot build {tag} from your folder: {loaded['error']}")
    return str(loaded.get("image", tag))


def last_build(core: client.CoreV1Api, namespace: str, folder: str) -> dict[str, bytes]:
    """The files of the namespace's latest image built from a folder called `folder` (none: {})."""
    records = [
        record
        for record in core.list_namespaced_config_map(namespace, label_selector=IMAGE_LABEL).items
        if (record.metadata.annotations or {}).get(FOLDER_ANNOTATION) == folder
    ]
    if not records:
        return {}
    latest = max(
        records, key=lambda record: float(record.metadata.annotations.get(BUILT_AT_ANNOTATION, 0))
    )
    try:
        return record_files(latest)[0]
    except (ValueError, TypeError):
        return {}


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    """A build folder's `files` (relative paths, already checked) written under `folder`."""
    for name, content in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)


def record_files(config_map: client.V1ConfigMap) -> tuple[dict[str, bytes], dict[str, str]]:
    """A record's files and build arguments; paths that climb out or are absolute are refused."""
    data, binary = config_map.data or {}, config_map.binary_data or {}
    index, build_args = json.loads(data.get(FILES_KEY, "{}")), json.loads(data.get(ARGS_KEY, "{}"))
    if not isinstance(index, dict) or len(index) > MAX_FILES or not isinstance(build_args, dict):
        raise ValueError("not an image record")
    files = {}
    for key, name in index.items():
        path = PurePosixPath(str(name))
        if path.is_absolute() or ".." in path.parts or not path.parts or key not in binary:
            raise ValueError(f"the record names a file it may not hold: {name!r}")
        files[str(path)] = base64.b64decode(binary[key])
    return files, {str(key): str(value) for key, value in build_args.items()}


class NamespaceImages(Mapping[str, dict]):
    """The images a namespace's pods can run: its own records, then the cluster's (or not)."""

    def __init__(
        self, core: client.CoreV1Api, namespace: str, cluster: Callable[[], dict[str, dict]]
    ) -> None:
        self.core, self.namespace, self._cluster = core, namespace, cluster
        self._built: dict[str, dict | None] = {}  # per tag: read once (a pass of the runtime)

    @functools.cached_property
    def own_only(self) -> bool:
        try:
            labels = self.core.read_namespace(self.namespace).metadata.labels or {}
        except client.ApiException as error:
            if error.status != 404:
                raise
            return True  # deleted meanwhile: its pods are going, with nothing to start
        return labels.get(OWN_IMAGES_LABEL) == OWN_IMAGES

    def own(self, tag: str) -> dict | None:
        """`tag` built from this namespace's record of it, if it has one."""
        try:
            record = self.core.read_namespaced_config_map(record_name(tag), self.namespace)
        except client.ApiException as error:
            if error.status == 404:
                return None
            raise
        if (record.metadata.annotations or {}).get(TAG_ANNOTATION) != tag:
            return None
        try:
            files, build_args = record_files(record)
        except (ValueError, TypeError) as error:
            return {
                "error": f"the record {record_name(tag)} of {tag} is damaged ({error}): "
                "load the image again"
            }
        return build(tag, files, build_args)

    def __getitem__(self, tag: str) -> dict:
        if tag not in self._built:
            self._built[tag] = self.own(tag)
        entry = self._built[tag]
        if entry is None and not self.own_only:
            entry = self._cluster().get(tag)
        if entry is None:
            raise KeyError(tag)
        return entry

    def __iter__(self) -> Iterator[str]:
        records = self.core.list_namespaced_config_map(
            self.namespace, label_selector=IMAGE_LABEL
        ).items
        own = [(r.metadata.annotations or {}).get(TAG_ANNOTATION, "") for r in records]
        return iter(dict.fromkeys([*own, *([] if self.own_only else self._cluster())]))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ClusterImages:
    """Every namespace's images for one pass of the runtime, each read on first use."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self._namespaces: dict[str, NamespaceImages] = {}

    @functools.cached_property
    def cluster(self) -> dict[str, dict]:
        return catalog(self.core)

    def of(self, namespace: str) -> NamespaceImages:
        if namespace not in self._namespaces:
            self._namespaces[namespace] = NamespaceImages(
                self.core, namespace, lambda: self.cluster
            )
        return self._namespaces[namespace]


def pod_images(pod: client.V1Pod) -> set[str]:
    """The images a pod's containers run."""
    return {container.image for container in pod.spec.containers}


def wait_routed(lab: Lab, selector: str, timeout: float = 30) -> None:
    """Block until every serving pod behind `selector` has its PortForward, so traffic can flow."""
    custom = client.CustomObjectsApi(lab.api)
    missing: list[str] = []

    def routed(forwards: list[dict]) -> bool:
        placed = [
            pod
            for pod in lab.core.list_namespaced_pod(lab.namespace, label_selector=selector).items
            if pod.spec.node_name and pod.metadata.deletion_timestamp is None
        ]
        pods = [pod for pod in placed if k8s.pod_ready(pod)]
        # Pods whose image was never loaded never start: with none serving,
        # that is the reason to give.
        unloaded = sorted(
            {image for pod in pods or placed for image in pod_images(pod)} - loaded_images(lab)
        )
        if unloaded:
            raise ImageNotLoaded(
                f"the pods behind {selector} run {', '.join(unloaded)}, which was never loaded "
                "into the practice cluster (a real kubelet would report ErrImageNeverPull): run "
                "images.load_into_cluster(lab, TAG) first"
            )
        names = {item["metadata"]["name"] for item in forwards}
        missing[:] = [pod.metadata.name for pod in pods if pod.metadata.name not in names] or (
            [] if pods else ["(none running)"]
        )
        return not missing

    try:
        k8s.wait_for(
            custom.list_namespaced_custom_object,
            *KWOK,
            lab.namespace,
            "portforwards",
            until=routed,
            timeout=timeout,
            what=f"routes to the pods behind {selector}",
            resync=0.5,
        )
    except k8s.WaitTimeout:
        raise k8s.WaitTimeout(
            f"no route to pods {missing} behind {selector} after {timeout:.0f} s; the "
            f"router's log says why: {state_dir(lab.context) / 'router.log'}"
        ) from None


def serves_kwok_routes(lab: Lab) -> bool:
    """Whether the cluster has kwok's PortForward API, i.e. its pods are simulated."""
    groups = client.ApisApi(lab.api).get_api_versions().groups or []
    return any(group.name == KWOK[0] for group in groups)
