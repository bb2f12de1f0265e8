"""The lesson's hands-on steps, one call each, so a notebook can catch up on an earlier one."""

from __future__ import annotations

import logging
from pathlib import Path

from docker.errors import ImageNotFound

from autograder import MANIFESTS
from autograder.lab import images, workloads
from autograder.modelserver import SOURCE as MODEL_SERVER
from autograder.practice import catalog
from autograder.providers.choice import provider
from autograder.shared.dockerengine import unreachable_reason as docker_unreachable_reason
from autograder.shared.provider import Lab

logger = logging.getLogger(__name__)

DEPLOYMENT = "ml-api"
SERVICE = "ml-api-service"
SELECTOR = "app=ml-api"
VERSIONS = {"ml-api:v1": "v1.0", "ml-api:v2": "v2.0"}


def build_and_try(tag: str, context: Path = MODEL_SERVER) -> dict | None:
    """Step 2 with Docker: build the image, run it, POST /predict once; None (and why) without."""
    reason = docker_unreachable_reason()
    if reason:
        logger.info(
            "No Docker engine here (%s), so no local build. The practice cluster serves the app "
            "straight from its source folder; kind needs Docker.",
            reason,
        )
        return None
    images.build(tag, context, version=VERSIONS.get(tag))
    with images.run_local(tag, port=None) as server:
        answer = server.predict([1, 2, 3, 4, 5])
    logger.info("docker run %s -> POST /predict [1, 2, 3, 4, 5] -> %s", tag, answer)
    return answer


def load_image(lab: Lab, tag: str, context: Path = MODEL_SERVER) -> None:
    """Make `tag` available to the cluster's nodes (`kind load docker-image` or practice's twin)."""
    cluster = provider(lab.provider)
    if not images.can_load(lab):
        logger.info(
            "Cluster %r pulls images itself: push %s to a registry it can reach (or `minikube "
            "image load`), and make sure imagePullPolicy allows the pull.",
            lab.context,
            tag,
        )
    elif cluster.loads_images_only:  # no Docker needed: the cluster builds the folder itself
        images.load_into_cluster(lab, tag, context=context, version=VERSIONS.get(tag))
    else:
        if not _in_docker(tag):
            images.build(tag, context, version=VERSIONS.get(tag))
        images.load_into_cluster(lab, tag)


def _in_docker(tag: str) -> bool:
    try:
        images.docker_client().images.get(tag)
    except ImageNotFound:
        return False
    return True


def deploy_first_app(lab: Lab) -> None:
    """Steps 2-4 in one go: image v1 loaded, Deployment and Service applied, 3 replicas ready."""
    load_image(lab, "ml-api:v1")
    applied = workloads.apply(
        lab, workloads.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml")
    )
    seconds = workloads.wait_for_rollout(lab, DEPLOYMENT)
    logger.info("applied %s; rolled out in %.1f s", ", ".join(applied), seconds)


def serve_lesson_images(lab: Lab) -> None:
    """The course's v1 and v2 as the practice cluster's own images, for namespaces that take them (a
    graded one never does); a student's load goes to their namespace and never replaces them."""
    catalog.preload_reference_images(lab.core)
