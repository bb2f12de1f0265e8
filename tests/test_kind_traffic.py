"""The same notebook cells on kind: the image really loaded, pulled-or-not, and served."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from autograder import MANIFESTS
from autograder.lab import images, traffic
from autograder.lab import workloads as w
from autograder.lab.cluster import connect
from autograder.lesson import troubleshoot
from autograder.modelserver import SOURCE
from autograder.shared.provider import Lab

pytestmark = [pytest.mark.kind, pytest.mark.docker]

TAG = "t-kind-ml-api:v2"


@pytest.fixture(scope="module")
def kind_lab() -> Iterator[Lab]:
    """The kind cluster (created when missing) with a namespace of this module's own."""
    lab = connect("kind", namespace=f"t-kind-traffic-{uuid.uuid4().hex[:6]}")
    images.build(TAG, SOURCE, "v2.0", progress=False)
    yield lab
    lab.core.delete_namespace(lab.namespace)
    images.docker_client().images.remove(TAG)


def deploy(lab: Lab, image: str, wait: bool = True) -> None:
    docs = w.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml")
    docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] = image
    w.apply(lab, docs)
    if wait:
        w.wait_for_rollout(lab, "ml-api", timeout=180, progress=False)


def test_a_loaded_image_answers_through_the_service(kind_lab: Lab) -> None:
    images.load_into_cluster(kind_lab, TAG)
    deploy(kind_lab, TAG)
    with traffic.port_forward(kind_lab) as forward:
        assert forward.predict([1, 2, 3, 4, 5]) == {"prediction": 15.0, "model_version": "v2.0"}
        assert forward.health() == {"status": "healthy"}


def test_an_image_never_loaded_is_explained_in_plain_words(kind_lab: Lab) -> None:
    deploy(kind_lab, "t-kind-ml-api:never-built", wait=False)
    deadline = time.monotonic() + 60
    while not (problems := troubleshoot.image_problems(kind_lab)) and time.monotonic() < deadline:
        time.sleep(1)
    assert any("ErrImageNeverPull" in p and "load it first" in p for p in problems)
