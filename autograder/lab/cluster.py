"""Pick a cluster provider and hand notebooks ready clients: `connect()` is the lab's front door."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client

from autograder.lab import kubeconfig, kubectl
from autograder.lab.existing import Existing
from autograder.lab.kind import Kind
from autograder.lab.practice import Practice
from autograder.lab.provider import Provider

PROVIDER_ENV = "LAB_CLUSTER"
NAMESPACE_ENV = "LAB_NAMESPACE"
# The notebooks' own namespace: never `default`, so a call without `namespace=` misses at home as in grading.
LAB_NAMESPACE = "ml-lab"

logger = logging.getLogger(__name__)
PROVIDERS: dict[str, type[Provider]] = {"practice": Practice, "kind": Kind, "existing": Existing}


def provider(name: str) -> Provider:
    """The provider called `name`; an unknown name lists the valid ones."""
    if name not in PROVIDERS:
        raise ValueError(f"unknown cluster provider {name!r}; choose one of: {', '.join(PROVIDERS)}")
    return PROVIDERS[name]()


def provider_of_context(context: str | None) -> str:
    """Which provider made a context: the lab's own clusters are recognised by name."""
    for name in ("practice", "kind"):
        if context == provider(name).context:
            return name
    return "existing"


def choose(name: str | None = None) -> Provider:
    """An explicit name or $LAB_CLUSTER; else the lab's own cluster if it answers, then kind, then practice.

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
        logger.info(f"Not using the current context {context!r}: the lab did not create it. To work there, "
                    f"ask for it by name: connect(\"existing\") or {PROVIDER_ENV}=existing.")
    kind = Kind()
    return kind if kind.unusable_reason() is None else Practice()


@dataclass
class Lab:
    """Clients for one cluster and the namespace this notebook works in."""

    provider: str
    context: str
    namespace: str
    api: client.ApiClient
    kubeconfig_file: Path | None = None  # what kubectl reads for this lab; None: $KUBECONFIG as it is

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    def __repr__(self) -> str:
        return f"Lab(provider={self.provider!r}, context={self.context!r}, namespace={self.namespace!r})"


def show_messages() -> None:
    """Print the lab's own messages (a cluster starting, an image loading) where nobody configured logging."""
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
    """Clients for a provider whose cluster is up, in `namespace` (created when missing); a `!kubectl`
    line of this process works there too."""
    context = chosen.context
    namespace = namespace or os.environ.get(NAMESPACE_ENV) or own_namespace(context)
    api = kubeconfig.api_client(context, config_file=chosen.kubeconfig_file)
    _ensure_namespace(client.CoreV1Api(api), namespace)
    kubectl.put_first_on_path()
    return Lab(provider=provider_of_context(context) if chosen.name == "existing" else chosen.name,
               context=context, namespace=namespace, api=api,
               kubeconfig_file=kubectl.point_at(context, namespace, chosen.kubeconfig_file))


def own_namespace(context: str) -> str:
    """The namespace the context names (a namespace-scoped identity keeps it), else ml-lab: never default."""
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
