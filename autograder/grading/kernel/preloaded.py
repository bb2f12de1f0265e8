"""The grading kernel: ipykernel with the lesson's libraries imported before it is ready.

The worker's kernel server (jail.serve) imports them once and each kernel is its fork, so no
notebook's first cell spends seconds importing. The kernelspec's command reads
`python -P -m autograder.grading.kernel.preloaded -f FILE`; the jail runs it in that fork, or as a
new interpreter without a server. No file of the submission can stand in for these modules (the
server runs `python -I`, the command `-P`); the notebook's folder joins `sys.path` after they are
loaded, where `python -m ipykernel_launcher` would put it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Any

import kubernetes.config
import pexpect
from ipykernel import kernelapp
from kubernetes.client import models
from kubernetes.config import kube_config

from autograder.shared import isolation

log = logging.getLogger(__name__)

# kubernetes.client loads an API's module (and its hundreds of models) at its first use:
# named here. ipykernel.debugger (debugpy) is what ipykernel imports as it starts; flask is
# what 04's app.py imports.
PRELOADED = (
    "ipykernel.debugger",
    "matplotlib.pyplot",
    "matplotlib_inline.backend_inline",
    "kubernetes.client",
    "kubernetes.client.api.core_v1_api",
    "kubernetes.client.api.apps_v1_api",
    "kubernetes.client.api.custom_objects_api",
    "kubernetes.client.api.discovery_v1_api",
    "kubernetes.client.api.version_api",
    "kubernetes.utils",
    "kubernetes.watch",
    "docker",
    "requests",
    "flask",
    "autograder.lab",
    *(
        f"autograder.lesson.{name}"
        for name in (
            "checks",
            "ecosystem",
            "fleet",
            "handson",
            "manifests",
            "observe",
            "platforms",
            "review",
            "scenarios",
            "troubleshoot",
        )
    ),
)
_SPAWN_PTY = pexpect.spawn._spawnpty
# ipykernel chooses this backend when it starts; matplotlib reads it when
# imported, so it is set first.
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def preload(modules: tuple[str, ...] = PRELOADED) -> None:
    """Import what the notebooks import; one that fails is left for its notebook cell to report."""
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    os.environ.setdefault(
        "PYDEVD_DISABLE_FILE_VALIDATION", "1"
    )  # as ipykernel's own kernelspec: no warning
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as error:
            log.warning("not preloaded: %s", error)
    # Each model's module loads at its first use too: a Pod read for the first time loads dozens.
    for name in models.__all__:
        getattr(models, name)


def _spawn_closing_at_once(self: pexpect.spawn, args: list, **kwargs: Any) -> Any:
    """pexpect's pty closed without its 0.1 s pause: `!cmd` closes it once the command is reaped."""
    process = _SPAWN_PTY(self, args, **kwargs)
    process.delayafterclose = 0
    return process


def main() -> None:
    """ipykernel's own start, with `sys.argv`, once the libraries are loaded."""
    isolation.die_with_parent()  # the jail's pid 1 is the parent: the kernel goes with it
    preload()
    pexpect.spawn._spawnpty = (
        _spawn_closing_at_once  # a graded submission runs ~35 `!kubectl` lines
    )
    # Read at import, which in a server's fork came before this kernel's
    # environment was set: read again.
    location = os.environ.get("KUBECONFIG", "~/.kube/config")
    kube_config.KUBE_CONFIG_DEFAULT_LOCATION = kubernetes.config.KUBE_CONFIG_DEFAULT_LOCATION = (
        location
    )
    parent = int(
        os.environ.get("JPY_PARENT_PID") or 0
    )  # set: ipykernel copies no output to the terminal
    sys.path.insert(0, os.getcwd())  # the student's own modules import as in any kernel
    kernelapp.IPKernelApp.launch_instance(parent_handle=parent)


if __name__ == "__main__":
    main()
