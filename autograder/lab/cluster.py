"""`connect()`, the lab's front door: a cluster up, ready clients, and `!kubectl` pointed at it."""

from __future__ import annotations

import logging
import os
import sys

from kubernetes import client

from autograder.lab import kubectl
from autograder.providers.choice import choose, provider_of_context
from autograder.shared import kubeconfig
from autograder.shared.provider import Lab, Provider

NAMESPACE_ENV = "LAB_NAMESPACE"
# The notebooks' own namespace: never `default`, so a call without `namespace=`
# misses at home as in grading.
LAB_NAMESPACE = "ml-lab"

logger = logging.getLogger(__name__)


def show_messages() -> None:
    """Print the lab's own messages (a cluster starting, an image loading) if logging is unset."""
    package = logging.getLogger("autograder")
    if not package.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
        package.setLevel(logging.INFO)


def connect(name: str | None = None, namespace: str | None = None) -> Lab:
    """Bring up (or reuse) a cluster and return clients for it and the namespace to use."""
    show_messages()
    chosen = choose(name)
    chosen.up()
    return attach(chosen, namespace)


def attach(chosen: Provider, namespace: str | None = None) -> Lab:
    """Clients for a provider whose cluster is up, in `namespace` (created when missing).

    A `!kubectl` line of this process works there too.
    """
    context = chosen.context
    namespace = namespace or os.environ.get(NAMESPACE_ENV) or own_namespace(context)
    api = kubeconfig.api_client(context, config_file=chosen.kubeconfig_file)
    _ensure_namespace(client.CoreV1Api(api), namespace)
    kubectl.put_first_on_path()
    return Lab(
        provider=provider_of_context(context) if chosen.name == "existing" else chosen.name,
        context=context,
        namespace=namespace,
        api=api,
        kubeconfig_file=kubectl.point_at(context, namespace, chosen.kubeconfig_file),
    )


def own_namespace(context: str) -> str:
    """The namespace the context names (a namespace-scoped identity keeps it), else ml-lab."""
    named = kubeconfig.context_namespace(context)
    return named if named and named != "default" else LAB_NAMESPACE


def _ensure_namespace(core: client.CoreV1Api, namespace: str) -> None:
    """Create the namespace when it is missing; a namespace-scoped identity may not list them."""
    try:
        core.read_namespace(namespace)
    except client.ApiException as error:
        if error.status == 404:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        elif error.status != 403:
            raise
