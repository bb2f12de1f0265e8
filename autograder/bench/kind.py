"""`bench cluster --provider kind`: the offline node image and the lesson on real nodes, timed."""

from __future__ import annotations

import time

from autograder.bench.cluster import bench_cluster
from autograder.build import nodeimage
from autograder.demo import lesson_flow
from autograder.lab import images as model_images
from autograder.lab.cluster import connect
from autograder.providers.kind import Kind


def quiet(_: str) -> None:
    """The figures are this benchmark's output; progress messages would bury them."""


def bench_kind() -> dict[str, float]:
    """Node image (cold when missing, then cached), kind create, image load, the lesson's steps."""
    figures: dict[str, float] = {}
    first = nodeimage.build()
    if not first.cached:
        figures["node image build, cold (s)"] = first.seconds
    last = nodeimage.last_build()
    if last:
        figures["node image build, last full build (s)"] = last["seconds"]
    figures["node image build, cached (s)"] = nodeimage.build().seconds
    figures["node image size (MB)"] = first.size_bytes / 1e6

    kind = Kind()
    kind.down()
    started = time.monotonic()
    kind.up()
    figures["kind create cluster (s)"] = time.monotonic() - started

    lab = connect("kind", namespace=f"bench-kind-{int(time.time())}")
    started = time.monotonic()
    for tag, version in (("ml-api:v1", "v1.0"), ("ml-api:v2", "v2.0")):
        model_images.build(tag, version=version, progress=False)
        model_images.load_into_cluster(lab, tag)
    figures["build + kind load ml-api v1 and v2 (s)"] = time.monotonic() - started
    try:
        steps = {step.name: step.seconds for step in lesson_flow(lab)}
    finally:
        lab.core.delete_namespace(lab.namespace)
    figures["deploy to 3/3 ready, real containers (s)"] = steps[
        "apply deployment + service, 3/3 ready"
    ]
    figures["rolling update to v2 (s)"] = steps["rolling update to ml-api:v2"]
    figures["rollout undo (s)"] = steps["rollout undo"]
    figures.update({f"practice: {name}": value for name, value in bench_cluster(runs=1).items()})
    return figures
