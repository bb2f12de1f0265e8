"""Read the kubeconfig the way kubectl does, and ask a context whether its API server answers."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from autograder.shared.pins import cache_root

# What $KUBECONFIG was before connect() pointed it at the lab's own file ("" when it was unset).
USER_FILE_ENV = "LAB_USER_KUBECONFIG"


def lab_folder() -> Path:
    """Where connect() writes the lab's kubeconfigs: the project's cache, never ~/.kube."""
    return cache_root() / "kubeconfig"


def is_lab_file(path: str | None) -> bool:
    """Whether `path` is a kubeconfig connect() wrote (and may rewrite), not one the user keeps."""
    return bool(path) and Path(str(path)).resolve().parent == lab_folder().resolve()


def default_file() -> str:
    """The user's kubeconfig.

    $KUBECONFIG as it is now (the client library reads it once, at import), or what it was before
    connect() pointed it at the lab's file; else ~/.kube/config.
    """
    current = os.environ.get("KUBECONFIG")
    if is_lab_file(current):
        current = os.environ.get(USER_FILE_ENV)
    return current or str(Path.home() / ".kube" / "config")


def user_environment() -> dict[str, str]:
    """This process's environment with the user's kubeconfig: kind and kwokctl add contexts."""
    environment = {name: value for name, value in os.environ.items() if name != USER_FILE_ENV}
    return {**environment, "KUBECONFIG": default_file()}


def current_context(config_file: Path | None = None) -> str | None:
    """The name of the current kubeconfig context, or None when there is no kubeconfig."""
    try:
        _, active = config.list_kube_config_contexts(config_file=str(config_file or default_file()))
    except (ConfigException, FileNotFoundError, TypeError):
        return None
    return active["name"] if active else None


def context_namespace(context: str | None = None) -> str | None:
    """The namespace a context names, as `kubectl` would use it."""
    try:
        contexts, active = config.list_kube_config_contexts(config_file=default_file())
    except (ConfigException, FileNotFoundError, TypeError):
        return None
    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
    return (chosen or {}).get("context", {}).get("namespace")


def api_client(context: str | None = None, config_file: Path | None = None) -> client.ApiClient:
    """A client for `context` (the current one by default) that never touches global state."""
    configuration = client.Configuration()
    config.load_kube_config(
        config_file=str(config_file) if config_file else default_file(),
        context=context,
        client_configuration=configuration,
    )
    return client.ApiClient(configuration)


def answers(
    context: str | None = None, timeout: float = 3.0, config_file: Path | None = None
) -> bool:
    """Whether the API server behind `context` answers /version within `timeout` seconds."""
    try:
        api = api_client(context, config_file)
    except (ConfigException, FileNotFoundError, TypeError):
        return False
    try:
        # VersionApi rather than call_api: call_api's signature changed in kubernetes client 37.
        client.VersionApi(api).get_code(_request_timeout=timeout)
        return True
    except Exception:  # any transport or HTTP failure means "does not answer"
        return False
    finally:
        api.close()
