"""Whatever cluster the current kubeconfig context points at: minikube, Docker Desktop, a cloud."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from autograder import IMAGE_BUILDER_ENV
from autograder.practice import catalog
from autograder.practice.catalog import serves_kwok_routes, wait_routed
from autograder.shared import kubeconfig
from autograder.shared.provider import ClusterError, Lab

logger = logging.getLogger(__name__)


@dataclass
class Existing:
    """The lab never creates or deletes this cluster; it only uses it."""

    name: str = "existing"
    required_binaries: tuple[str, ...] = ("kubectl",)  # the lesson's kubectl cells and port-forward

    @property
    def context(self) -> str:
        context = kubeconfig.current_context()
        if context is None:
            raise ClusterError(
                "no kubeconfig context is set; run `kubectl config use-context NAME` "
                "or choose another provider (LAB_CLUSTER=practice or kind)"
            )
        return context

    @property
    def kubeconfig_file(self) -> Path | None:
        return None

    loads_images_only = False

    def before_forward(self, lab: Lab, selector: str, timeout: float) -> None:
        # A grader's student kernel sees the practice cluster as "existing": its simulated pods
        # answer only once the router has given each one its PortForward.
        if serves_kwok_routes(lab):
            wait_routed(lab, selector, timeout)

    def loads_images(self, lab: Lab) -> bool:
        return graded_on_kind() or serves_kwok_routes(lab)

    def load_image(
        self, lab: Lab, tag: str, context: Path | None, build_args: dict[str, str]
    ) -> None:
        # A grader's student kernel sees its cluster as "existing": it records its build folder in
        # its namespace. The practice cluster's runtime builds that record; on kind the grader does
        # it with Docker, and the kernel waits for its image to be on the nodes.
        if context is not None and self.loads_images(lab):
            on_kind = graded_on_kind()
            built_at = catalog.push(
                lab.core, lab.namespace, tag, context, build_args, docker_builds=on_kind
            )
            if on_kind:
                catalog.wait_loaded(lab.core, lab.namespace, tag, built_at)
            logger.info("built %s from %s for namespace %s", tag, context, lab.namespace)
            return
        raise ValueError(
            f"load images into {lab.context!r} with its own tools (a registry, "
            "`minikube image load`, ...); the lab loads into kind and practice only"
        )

    def unusable_reason(self) -> str | None:
        context = kubeconfig.current_context()
        if context is None:
            return "no current kubeconfig context (is ~/.kube/config or $KUBECONFIG set?)"
        if not kubeconfig.answers(context):
            return f"the API server of context {context!r} does not answer"
        return None

    def status(self) -> str:
        return f"existing cluster: {self.unusable_reason() or f'context {self.context!r} answers'}"

    def up(self) -> None:
        reason = self.unusable_reason()
        if reason:
            raise ClusterError(f"cannot use the existing cluster: {reason}")
        logger.info("Using the existing cluster of context %r.", self.context)

    def down(self) -> None:
        logger.info("The existing cluster is not the lab's to delete; nothing done.")


def graded_on_kind() -> bool:
    """Whether this kernel's grader builds the images it records (classrun/kindimages.py)."""
    return os.environ.get(IMAGE_BUILDER_ENV) == "grader"
