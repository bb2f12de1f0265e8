"""Plain `kubectl` in a notebook.

The lab's own kubeconfig, whose context carries the namespace, and the pinned kubectl first on PATH,
so `!kubectl get pods` works as the lesson prints it.

The user's kubeconfig is only read: connect() writes a minimal copy of the lab's context (its
cluster and user, the namespace set) under the project's cache and points this process's $KUBECONFIG
at it. A kubeconfig that already has the lab's context current with the lab's namespace (the one
grading gives a kernel) is used as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from autograder.shared import binaries, kubeconfig
from autograder.shared.provider import run


def lab_file(context: str, namespace: str) -> Path:
    """One kubeconfig per cluster and namespace; a context name may hold what a file name cannot."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", context)
    return kubeconfig.lab_folder() / f"{safe}.{namespace}.yaml"


def with_namespace(minified: dict[str, Any], context: str, namespace: str) -> dict[str, Any]:
    """A one-context kubeconfig (`kubectl config view --minify`), current and in `namespace`."""
    contexts = [entry for entry in minified.get("contexts") or [] if entry["name"] == context]
    if len(contexts) != 1:
        raise ValueError(
            f"expected the one context {context!r} in the minified kubeconfig, got "
            f"{[entry['name'] for entry in minified.get('contexts') or []]}"
        )
    entry = {"name": context, "context": {**contexts[0]["context"], "namespace": namespace}}
    return {**minified, "contexts": [entry], "current-context": context}


def minified(source: str, context: str) -> dict[str, Any]:
    """Only `context`, its cluster and user, as kubectl reads them in `source` (files embedded)."""
    kubectl = binaries.ensure(["kubectl"])["kubectl"]
    done = run(
        [str(kubectl), "config", "view", "--minify", "--flatten", "--context", context],
        env={**kubeconfig.user_environment(), "KUBECONFIG": source},
        timeout=60,
        what=f"kubectl config view --minify --context {context}",
    )
    return yaml.safe_load(done.stdout)


def write_private(path: Path, document: dict[str, Any]) -> Path:
    """Write `document` readable by its owner only (it holds credentials), replacing it at once."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as stream:
            yaml.safe_dump(document, stream, sort_keys=False)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_lab_kubeconfig(source: str, context: str, namespace: str) -> Path:
    """The lab's own kubeconfig for `context` in `namespace`, from those `source` names."""
    document = with_namespace(minified(source, context), context, namespace)
    return write_private(lab_file(context, namespace), document)


def already_set(context: str, namespace: str) -> bool:
    """Whether the user's kubeconfig has `context` current with `namespace` (as grading's has)."""
    return (
        kubeconfig.current_context() == context
        and kubeconfig.context_namespace(context) == namespace
    )


def point_at(context: str, namespace: str, source: Path | None = None) -> Path | None:
    """Make this process's kubectl talk to `context` in `namespace`.

    The lab's file, or None for the user's.

    `source` is the provider's own kubeconfig holding the context, None for the user's.
    """
    current = os.environ.get("KUBECONFIG")
    if source is None and already_set(context, namespace):
        if kubeconfig.is_lab_file(current):
            _restore_user_file()
        return None
    path = write_lab_kubeconfig(str(source or kubeconfig.default_file()), context, namespace)
    if not kubeconfig.is_lab_file(current):
        os.environ[kubeconfig.USER_FILE_ENV] = current or ""
    os.environ["KUBECONFIG"] = str(path)
    return path


def _restore_user_file() -> None:
    """$KUBECONFIG back to what the user had before connect() replaced it."""
    before = os.environ.pop(kubeconfig.USER_FILE_ENV, "")
    if before:
        os.environ["KUBECONFIG"] = before
    else:
        os.environ.pop("KUBECONFIG", None)


def put_first_on_path() -> Path:
    """The pinned kubectl is the one `!kubectl` runs; PATH stays as it is when it already is."""
    pinned = binaries.ensure(["kubectl"])["kubectl"]
    found = shutil.which("kubectl")
    if found is None or Path(found).resolve() != pinned.resolve():
        folders = [
            folder
            for folder in os.environ.get("PATH", "").split(os.pathsep)
            if folder and folder != str(pinned.parent)
        ]
        os.environ["PATH"] = os.pathsep.join([str(pinned.parent), *folders])
    return pinned
