"""On kind, the grader builds the images each graded kernel records, and loads them into the nodes.

A graded kernel has no Docker (the jail): `images.load_into_cluster` writes its build folder as an
image record in its namespace (`catalog.push`, as on the practice cluster) and waits. Here, in the
grading process, each record is built with Docker under a tag unique to the submission, loaded into
every node with `kind load docker-image`, and tagged on the nodes as the name the record asks for
(`ml-api:v1`); the result is written back on the record for the waiting kernel.

Why node tags, and not a mutating admission policy rewriting pods' images to the unique tag: the
student's Deployment, ReplicaSets and pods keep naming exactly the image the student wrote, so every
check and every `kubectl get` shows what the lesson shows, and the cluster needs no beta feature
gate. The price: the nodes hold one submission's images at a time. So kind grades submissions one
at a time, and before each one every image a short name reaches (an earlier submission's, the
course's own `ml-api:v1` and `v2` a lab run loaded) is removed from every node, with what `kind
load` leaves there: a tag the submission never built is then absent, and
`imagePullPolicy: Never` makes its pods ErrImageNeverPull, as on the practice cluster.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from docker.errors import DockerException
from docker.models.containers import Container
from kubernetes import client, watch

from autograder.build import offlinebase
from autograder.lab import images
from autograder.practice import catalog
from autograder.providers.kind import Kind
from autograder.shared import dockerengine
from autograder.shared.errors import LabError

logger = logging.getLogger(__name__)

GRADED_REPOSITORY = "lab-graded"  # Docker's and the nodes' name for each submission's builds
# A short name as the lesson writes it: NAME[:TAG], which Docker and containerd read as
# docker.io/library/NAME:TAG. A registry or a path could name an image the nodes run for the
# cluster itself (registry.k8s.io/pause, kindnetd): a submission never replaces those.
SHORT_NAME = re.compile(
    r"^([a-z0-9]+(?:[._-][a-z0-9]+)*)(?::([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?$"
)
KIND_IMPORT_PREFIX = "import-"  # `kind load` imports each image under import-DATE@sha256:... too
WATCH_SECONDS = 5  # how soon the watcher notices the submission ended
# What a student's Dockerfile may take of the grader's Docker host. The time leaves a minute of
# the kernel's wait for `kind load`, so the kernel hears the limit; the lesson's image (flask and
# numpy, 261 MiB) builds in about 7 s within 64 MiB on one CPU.
SUBMISSION_LIMITS = dockerengine.BuildLimits(
    seconds=catalog.LOAD_WAIT - 60,
    memory_bytes=1024 * dockerengine.MIB,
    image_bytes=2048 * dockerengine.MIB,
)


def node_reference(tag: str) -> str:
    """The containerd reference kubelet looks up for `tag`; a name that is not short is refused."""
    match = SHORT_NAME.match(tag)
    if match is None:
        raise LabError(
            f"{tag!r} is not an image name grading builds: use a short NAME:TAG such as "
            "ml-api:v1 (no registry, no path), as the lesson does"
        )
    return f"docker.io/library/{match[1]}:{match[2] or 'latest'}"


def clearable(name: str) -> bool:
    """Whether a node's image `name` (as containerd lists it) is a submission's or a lab's load."""
    return name.startswith(
        ("docker.io/library/", f"docker.io/{GRADED_REPOSITORY}/", KIND_IMPORT_PREFIX)
    )


def by_id(name: str, kept: set[str]) -> bool:
    """Whether `name` is the id name (sha256:...) of an image outside `kept`."""
    return name.startswith("sha256:") and name not in kept


def _node_run(node: Container, command: list[str]) -> str:
    """`command`'s output on a kind node; a failure raises, naming the node."""
    code, output = node.exec_run(command)
    if code != 0:
        raise LabError(f"{' '.join(command[:3])} failed on kind node {node.name}: {output!r}")
    return output.decode()


def unique_tag(namespace: str, tag: str) -> str:
    """The Docker tag of the submission in `namespace`'s build of `tag`."""
    readable = re.sub(r"[^a-z0-9_.-]", "_", tag.lower())[:60]
    return (
        f"{GRADED_REPOSITORY}/{namespace}:{readable}-{hashlib.sha256(tag.encode()).hexdigest()[:8]}"
    )


def start_offline(dockerfile: Path) -> None:
    """Start the Dockerfile's `python:3.11-slim` from the offline base: RUN has no network."""
    if not dockerfile.is_file():
        return  # the build says what is missing
    text = dockerfile.read_text()
    offline = offlinebase.offline_dockerfile(text)
    if offline != text:
        offlinebase.ensure_offline_base(dockerengine.client())
        dockerfile.write_text(offline)


class SubmissionImages:
    """The kind nodes' images for one grading run: each submission's builds, and only its own."""

    def __init__(
        self,
        kind: Kind,
        admin: client.ApiClient,
        limits: dockerengine.BuildLimits = SUBMISSION_LIMITS,
    ) -> None:
        self.kind, self.core, self.limits = kind, client.CoreV1Api(admin), limits
        self.built: set[str] = set()  # Docker tags this run built

    def clear(self) -> None:
        """Remove from every node each image a short name reaches, and what `kind load` left.

        Every submission's builds and the course's own `ml-api`, by every name: their tags, kind's
        `import-DATE@sha256:...` names and the `sha256:ID` names a pod may give as its image (those
        of the node's own images stay), so no earlier build stays on the node or runs by its id.
        """
        for node in self.kind.node_containers():
            held = json.loads(_node_run(node, ["crictl", "images", "-o", "json"]))["images"]
            own = {
                image["id"]
                for image in held
                if any(not clearable(tag) for tag in image.get("repoTags") or [])
            }
            listed = _node_run(node, ["ctr", "--namespace=k8s.io", "images", "ls", "-q"]).split()
            doomed = [name for name in listed if clearable(name) or by_id(name, own)]
            if doomed:
                _node_run(node, ["ctr", "--namespace=k8s.io", "images", "rm", *doomed])
        for tag in self.built:
            try:
                dockerengine.client().images.remove(tag, noprune=True)
            except DockerException:  # already gone: nothing of it is left to serve
                pass
        self.built.clear()

    @contextmanager
    def serving(self, namespace: str) -> Iterator[None]:
        """While the block runs, the records of `namespace` are built and loaded as they come."""
        self.clear()
        stop = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(namespace, stop), name=f"images of {namespace}", daemon=True
        )
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()

    def _watch(self, namespace: str, stop: threading.Event) -> None:
        """Build each record of `namespace` that has no result for its latest push yet."""
        while not stop.is_set():
            try:
                for event in watch.Watch().stream(
                    self.core.list_namespaced_config_map,
                    namespace,
                    label_selector=catalog.IMAGE_LABEL,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    record = event["object"]
                    if event["type"] in ("ADDED", "MODIFIED") and not catalog.load_result(record):
                        self.answer(namespace, record)
                    if stop.is_set():
                        return
            except Exception:  # the API hiccuped or the namespace is going: watch again
                logger.debug("watching the image records of %s", namespace, exc_info=True)
                stop.wait(1)

    def answer(self, namespace: str, record: client.V1ConfigMap) -> None:
        """Build and load `record`, and write the outcome on it for the kernel that waits."""
        annotations = record.metadata.annotations or {}
        result: dict[str, str] = {"built_at": annotations.get(catalog.BUILT_AT_ANNOTATION, "")}
        try:
            result["image"] = self.build_and_load(namespace, record)
        except Exception as error:  # whatever the record holds, the run goes on: the kernel says it
            result["error"] = str(error)
        try:
            self.core.patch_namespaced_config_map(
                record.metadata.name,
                namespace,
                {"metadata": {"annotations": {catalog.LOAD_RESULT_ANNOTATION: json.dumps(result)}}},
            )
        except client.ApiException as error:
            if error.status != 404:
                raise

    def build_and_load(self, namespace: str, record: client.V1ConfigMap) -> str:
        """Build the record with Docker, load it into every node as the tag it names; that tag."""
        tag = (record.metadata.annotations or {}).get(catalog.TAG_ANNOTATION, "")
        reference = node_reference(tag)
        files, build_args = catalog.record_files(record)
        built = unique_tag(namespace, tag)
        with tempfile.TemporaryDirectory(prefix="graded-image-") as context:
            catalog.write_files(Path(context), files)
            start_offline(Path(context) / "Dockerfile")
            self.built.add(built)
            images.build(
                built,
                context,
                version=build_args.get(images.VERSION_ARG),
                progress=False,
                limits=self.limits,
            )
        self.kind.load_docker_image(built)
        for node in self.kind.node_containers():
            code, said = node.exec_run(
                [
                    "ctr",
                    "--namespace=k8s.io",
                    "images",
                    "tag",
                    "--force",
                    f"docker.io/{built}",
                    reference,
                ]
            )
            if code != 0:
                raise LabError(f"cannot tag {tag} on kind node {node.name}: {said!r}")
        logger.info("built %s of %s and loaded it into the kind nodes", tag, namespace)
        return tag
