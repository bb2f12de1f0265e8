"""Which provider a lab gets: by name, by $LAB_CLUSTER, or the lab's own cluster when it answers."""

from __future__ import annotations

import logging
import os

from autograder.practice.cluster import Practice
from autograder.providers.existing import Existing
from autograder.providers.kind import Kind
from autograder.shared import kubeconfig
from autograder.shared.provider import Provider

PROVIDER_ENV = "LAB_CLUSTER"
PROVIDERS: dict[str, type[Provider]] = {"practice": Practice, "kind": Kind, "existing": Existing}

logger = logging.getLogger(__name__)


def provider(name: str) -> Provider:
    """The provider called `name`; an unknown name lists the valid ones."""
    if name not in PROVIDERS:
        raise ValueError(
            f"unknown cluster provider {name!r}; choose one of: {', '.join(PROVIDERS)}"
        )
    return PROVIDERS[name]()


def provider_of_context(context: str | None) -> str:
    """Which provider made a context: the lab's own clusters are recognised by name."""
    for name in ("practice", "kind"):
        if context == provider(name).context:
            return name
    return "existing"


def choose(name: str | None = None) -> Provider:
    """An explicit name or $LAB_CLUSTER.

    Else the lab's own cluster if it answers, then kind, then practice.

    A context the lab did not create (a work cluster) is used only when asked for by name
    ("existing"): the notebooks create namespaces and cordon nodes.
    """
    name = name or os.environ.get(PROVIDER_ENV) or None
    if name:
        return provider(name)
    context = kubeconfig.current_context()
    own = provider_of_context(context)
    if own != "existing" and kubeconfig.answers(context):
        return provider(own)
    if context is not None and own == "existing":
        logger.info(
            "Not using the current context %r: the lab did not create it. To work there, ask for "
            'it by name: connect("existing") or %s=existing.',
            context,
            PROVIDER_ENV,
        )
    kind = Kind()
    return kind if kind.unusable_reason() is None else Practice()
