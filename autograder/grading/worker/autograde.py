"""Autograde one submission in a process of its own: a crash or a hang here never stops the class.

Run by the class runner as `python -m autograder.grading.worker.autograde`, or as a fork of the
run's worker server (`--serve PATH`, see forkserver.py) that has nbgrader and the lesson's libraries
imported; its environment is the one the student's kernel inherits (the student's kubeconfig and
namespace), its arguments tell it where the grader's read-only kubeconfig is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from nbgrader.apps import NbGraderAPI
from nbgrader.converters import Autograde
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute
from traitlets.config import Config

from autograder.grading import nodes
from autograder.grading.kernel import bridge, jail
from autograder.grading.request import WorkerRequest
from autograder.grading.worker.kernelclient import ReadyKernelClient
from autograder.grading.worker.verify import PHASES, ClusterVerifiedExecute
from autograder.shared import forkserver, isolation, processes

WORKER_MODULE = "autograder.grading.worker.autograde"
SOCKETS_TMPFS = (
    "size=16m,nr_inodes=4096,mode=711"  # the kernels' ZMQ sockets and the API relay's: empty files
)


def autograde_steps() -> list[type]:
    """nbgrader's own autograde chain, its Execute step replaced by the grader's judging one."""
    default = Autograde.class_traits()["autograde_preprocessors"].default()
    return [ClusterVerifiedExecute if step is Execute else step for step in default]


def grading_config(request: WorkerRequest) -> Config:
    """The course's settings with nbgrader's Execute swapped for the cluster-verifying one."""
    config = Config(request.course_config)
    folders = CourseDirectory(config=config)
    config.ClusterVerifiedExecute.masters = folders.format_path(
        folders.source_directory, ".", request.assignment
    )
    config.Autograde.autograde_preprocessors = autograde_steps()
    config.Execute.timeout = request.cell_timeout
    config.Execute.interrupt_on_timeout = True
    config.Execute.store_widget_state = (
        False  # a widget's state is the kernel's to write: script in the notebook
    )
    config.AsyncKernelManager.client_class = (
        f"{ReadyKernelClient.__module__}.{ReadyKernelClient.__name__}"
    )
    config.ClusterVerifiedExecute.namespace = request.namespace
    config.ClusterVerifiedExecute.reader_kubeconfig = str(request.reader_kubeconfig)
    if request.lender_kubeconfig is not None:
        config.ClusterVerifiedExecute.lender_kubeconfig = str(request.lender_kubeconfig)
    config.ClusterVerifiedExecute.patience = request.patience
    config.ClusterVerifiedExecute.exclusive_lock = str(nodes.lock_file(request.course))
    config.ClusterVerifiedExecute.nodes_snapshot = str(
        nodes.saved_file(request.course, request.assignment)
    )
    return config


@contextlib.contextmanager
def jail_kernel(folder: Path, hide: list[Path]) -> Iterator[Config]:
    """A kernelspec in `folder` that starts each kernel in the jail, and the settings it needs.

    The jailed kernel has no network: its ZMQ sockets are files in a folder the jail keeps
    writable, and its one connection out, to the API server, is relayed through a unix socket there.
    Kernels are forks of a kernel server that runs while the block does (in a folder only root
    enters), itself a fork of this worker, which a warm server made with the kernel's libraries
    already loaded.
    """
    with forkserver.forked(folder / "server" / "kernels.sock", jail.serve) as server:
        sockets = folder / "sockets"
        sockets.mkdir()
        sockets.chmod(
            0o1733
        )  # every kernel uid may make its sockets there; none may see or remove others'
        folder.chmod(0o711)
        api_socket = None
        if os.environ.get("KUBECONFIG"):
            api_socket = sockets / "apiserver.sock"
            bridge.relay(api_socket, *jail.api_address(Path(os.environ["KUBECONFIG"]).read_text()))
        jail.write_kernelspec(folder, hide, api_socket, server)
        os.environ["JUPYTER_PATH"] = os.pathsep.join(
            filter(None, [str(folder), os.environ.get("JUPYTER_PATH")])
        )
        config = Config()
        config.Execute.kernel_name = jail.KERNEL_NAME
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(sockets / "kernel")
        yield config


def serve(path: Path) -> NoReturn:
    """The class run's worker server at `path`: nbgrader, lesson imported once; workers fork."""
    forkserver.serve(path, jail.warm, launch)


def launch(request: dict, stdout: int, stderr: int, client: int) -> int:
    """A worker for `request` (forkserver's argv, cwd, env), forked from the server; its pid."""
    argv = request["argv"]
    return forkserver.fork_and_become(
        lambda: processes.run_as_main(lambda: sys.exit(main(argv)), [WORKER_MODULE, *argv], None),
        stdout,
        stderr,
        request["cwd"],
        request["env"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m autograder.grading.worker.autograde", description=__doc__
    )
    parser.add_argument(
        "--request",
        type=WorkerRequest.from_json,
        required=True,
        help="the class run's WorkerRequest, as JSON",
    )
    request: WorkerRequest = parser.parse_args(argv).request
    with (
        tempfile.TemporaryDirectory(prefix="kernelspec-") as specs,
        contextlib.ExitStack() as mounts,
    ):
        config = grading_config(request)
        if request.jail_hide:
            # The one folder a jailed kernel writes outside its own /tmp: a few MB of
            # RAM, never the host's disk.
            isolation.own_mounts()
            mounts.enter_context(isolation.tmpfs(Path(specs), SOCKETS_TMPFS))
            config.merge(mounts.enter_context(jail_kernel(Path(specs), list(request.jail_hide))))
        config.CourseDirectory.submitted_directory = str(request.submitted_directory)
        folders = CourseDirectory(config=config)
        config.ClusterVerifiedExecute.submission = folders.format_path(
            folders.submitted_directory, request.student, request.assignment
        )
        result = NbGraderAPI(config=config).autograde(
            request.assignment, request.student, force=True, create=True
        )
    json.dump(
        {
            "success": bool(result.get("success")),
            "error": result.get("error", ""),
            "log": result.get("log", ""),
            "phases": PHASES,
        },
        sys.stdout,
    )
    return 0 if result.get("success") else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]))
    sys.exit(main())
