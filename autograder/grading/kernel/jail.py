"""Start a student's kernel where it cannot reach the grader's secrets, files, rights or network.

The kernel gets its own mount, PID and network namespaces and a root of its own
(isolation.enter_root): the system's trees, the Python environment, the installed package's code and
the tools it runs, all read-only, a fresh /tmp and /dev/shm, and the folder of its ZMQ sockets (a
small tmpfs of the worker's). No course folder, grader's home, kubeconfig or other student's file is
there to find, and it sees no process but itself. Its environment is allowlisted
(KERNEL_ENVIRONMENT). It works in a private copy of its notebook's folder (regular files only), so
nothing it writes or links there reaches nbgrader's outputs or a later kernel. It runs as a uid of
its own with no capabilities and bounded resources (rlimits). Its network namespace holds only
loopback, where a forwarder relays the API server's port to the grading worker (`bridge`): the
student's namespace-scoped kubeconfig is its one way out. Everything that runs as root here runs
`python -I`, so no file of the submission is ever imported with the grader's rights. Kernels start
warm, as forks of the worker's kernel server (forkserver.py); without one, this command jails the
kernel itself. Needs root and util-linux's mount.
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import json
import logging
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

import yaml

import autograder
from autograder import MANIFESTS
from autograder.grading.kernel import bridge
from autograder.modelserver import SOURCE as MODEL_SERVER
from autograder.shared import forkserver, isolation, processes
from autograder.shared.errors import LabError

logger = logging.getLogger(__name__)
KERNEL_NAME = "lab-jail"
KERNEL_MODULE = (
    "autograder.grading.kernel.preloaded"  # ipykernel with the lesson's libraries preloaded
)
# A uid per kernel (base + the launcher's host pid, unique while it runs): RLIMIT_NPROC counts
# a real uid's tasks host-wide, so a fork bomb exhausts only its own kernel's share.
KERNEL_UID_BASE = 1_900_000_000
KERNEL_GID = 65534  # nogroup
LIMITS = {
    resource.RLIMIT_AS: 3
    * 2**30,  # numpy, matplotlib, the kubernetes client and kubectl fit well below
    # tasks, threads included: ipykernel, kubectl and the forwarder need ~60
    resource.RLIMIT_NPROC: 256,
    resource.RLIMIT_FSIZE: 256 * 2**20,
    resource.RLIMIT_NOFILE: 1024,
    resource.RLIMIT_CORE: 0,
}
# All a kernel keeps of the environment it is started with: an instructor's shell may hold
# cloud keys. Locale and time zone, the CPU quirks OpenBLAS is told of, what Jupyter tells a
# kernel, and what the grader sets for the student (their PATH, the kubeconfig whose context
# names their namespace, and whether the grader builds the images they record).
KERNEL_ENVIRONMENT = (
    "PATH",
    "KUBECONFIG",
    "LAB_CLUSTER",
    autograder.IMAGE_BUILDER_ENV,
    "LANG",
    "LANGUAGE",
    "TZ",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
)
KERNEL_ENVIRONMENT_PREFIXES = ("LC_", "JPY_")
TOOLS = (
    "kubectl",
)  # the programs a kernel runs besides Python, as PATH finds them; kept without their folders
HOME, WORK = Path("/tmp/home"), Path("/tmp/work")
COURSE_APP = (
    "app.py",
    "Dockerfile",
    "requirements.txt",
)  # the course's model server: the student writes theirs
REFERENCE_MANIFESTS = ("deployment.yaml", "service.yaml")  # the lesson's answers to steps 3 and 4
JAILED_KUBECONFIG = HOME / "kubeconfig"
LOOPBACK = "127.0.0.1"


class JailError(LabError):
    """The kernel cannot be started in the jail as asked."""


def unavailable_reason() -> str | None:
    """None when kernels can be jailed here, else why not."""
    if os.geteuid() != 0:
        return "the grader does not run as root"
    missing = [tool for tool in ("unshare", "mount") if shutil.which(tool) is None]
    missing += [] if isolation.pivot_root() else ["pivot_root"]
    if missing:
        return f"{', '.join(missing)} not found (install util-linux)"
    trial = subprocess.run(
        ["unshare", "--mount", "--pid", "--net", "--fork", "true"], capture_output=True, check=False
    )
    if trial.returncode != 0:
        return f"unshare is not permitted here: {trial.stderr.decode().strip()}"
    return None


def default_secrets(home: Path | None = None) -> list[Path]:
    """Places holding credentials stronger than the student's own (the grader's home by default)."""
    home = home or Path.home()
    return [
        home / ".kube",
        home / ".kwok",
        home / ".docker",
        home / ".config" / "kind",
        Path("/etc/kubernetes"),
        Path("/var/run/docker.sock"),
        Path("/run/docker.sock"),
    ]


def kernel_environment(environment: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of `environment`: what a student's code may see of the grader's."""
    return {
        name: value
        for name, value in environment.items()
        if name in KERNEL_ENVIRONMENT or name.startswith(KERNEL_ENVIRONMENT_PREFIXES)
    }


def write_kernelspec(
    folder: Path, hide: list[Path], api_socket: Path | None = None, server: Path | None = None
) -> Path:
    """A kernelspec named `lab-jail` in `folder`/kernels; put `folder` on JUPYTER_PATH to use it.

    The kernel must be started with ipc transport (the jail keeps the folder of its sockets) and,
    to reach the API server, with the worker's `bridge.relay` serving `api_socket`. With `server`
    (see `serve`), kernels are forks of that warm server.
    """
    argv = [sys.executable, "-I", "-m", "autograder.grading.kernel.jail"]
    if server is not None:
        argv += ["--server", str(server)]
    for path in hide:
        argv += ["--hide", str(path)]
    if api_socket is not None:
        argv += ["--api-socket", str(api_socket)]
    argv += ["--", sys.executable, "-P", "-m", KERNEL_MODULE, "-f", "{connection_file}"]
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": argv,
                "display_name": "Python 3 (grading jail)",
                "language": "python",
                # SIGINT would reach unshare, not the kernel; ask the kernel itself to interrupt.
                "interrupt_mode": "message",
            }
        )
    )
    return folder


def _cluster_of(document: dict) -> dict:
    """The cluster entry of a kubeconfig's current context."""
    contexts = {entry["name"]: entry["context"] for entry in document.get("contexts") or []}
    clusters = {entry["name"]: entry["cluster"] for entry in document.get("clusters") or []}
    current = document.get("current-context") or next(iter(contexts), "")
    if current not in contexts or contexts[current].get("cluster") not in clusters:
        raise JailError(f"the student's kubeconfig has no cluster for its context {current!r}")
    return clusters[contexts[current]["cluster"]]


def _server(cluster: dict) -> tuple[str, int]:
    """Host and port of a kubeconfig cluster's API server."""
    server = urlsplit(cluster["server"])
    return server.hostname or LOOPBACK, server.port or (443 if server.scheme == "https" else 80)


def api_address(kubeconfig_text: str) -> tuple[str, int]:
    """Host and port of the API server a kubeconfig's current context talks to."""
    return _server(_cluster_of(yaml.safe_load(kubeconfig_text)))


def jailed_kubeconfig(kubeconfig_text: str) -> str:
    """The kubeconfig seen from the jail: its API server on loopback, TLS checking the real name."""
    document = yaml.safe_load(kubeconfig_text)
    cluster = _cluster_of(document)
    host, port = _server(cluster)
    if host == LOOPBACK:
        return kubeconfig_text
    cluster["server"] = urlsplit(cluster["server"])._replace(netloc=f"{LOOPBACK}:{port}").geturl()
    cluster.setdefault("tls-server-name", host)
    return yaml.safe_dump(document)


def package_folders() -> list[Path]:
    """The installed package's code as Python finds it, not the checkout or course it may sit in."""
    return [Path(autograder.__file__).parent, MANIFESTS]


def course_only() -> list[Path]:
    """What the kept package holds that would do a graded step or give its answer.

    All of it is hidden in the jail.

    The course room (steps done for the student, the hidden tests' references), the demo and bench
    that run the lesson's steps, the course's own model server and the lesson's reference manifests.
    """
    package = Path(autograder.__file__).parent
    return [
        package / "course",
        package / "demo.py",
        package / "bench",
        *(MODEL_SERVER / name for name in COURSE_APP),
        *(MANIFESTS / name for name in REFERENCE_MANIFESTS),
    ]


def _seal(hide: list[Path], keep: list[Path], writable: Path) -> None:
    """Fresh namespaces: only system, interpreter, package and `keep`; fresh /tmp and /dev/shm."""
    isolation.enter_root(
        isolation.Root(
            keep=(Path(sys.prefix), Path(sys.base_prefix), *package_folders(), *keep),
            writable=writable,
            # The host's shared memory: filling it would take the machine's RAM.
            scratch=(
                (Path("/tmp"), "size=256m,mode=1777"),
                (Path("/dev/shm"), "size=64m,nr_inodes=1024,mode=1777"),
            ),
            hidden=(*hide, *course_only()),
        )
    )


def _copy_regular_files(source: Path, target: Path, owner: tuple[int, int]) -> None:
    """The kernel's own copy of its folder: regular files only, so no link leads out of it."""
    target.mkdir(mode=0o755)
    os.chown(target, *owner)
    for entry in os.scandir(source):
        status = entry.stat(follow_symlinks=False)
        copy = target / entry.name
        try:
            if stat.S_ISDIR(status.st_mode):
                _copy_regular_files(Path(entry.path), copy, owner)
            elif stat.S_ISREG(status.st_mode) and status.st_nlink == 1:
                shutil.copyfile(entry.path, copy, follow_symlinks=False)
                os.chown(copy, *owner)
            else:
                logger.warning(
                    "jail: %s is not a regular file; the kernel does not get it", entry.path
                )
        except OSError as error:
            logger.warning("jail: %s was not copied for the kernel: %s", entry.path, error)


def _give(path: Path, content: str, owner: tuple[int, int]) -> Path:
    """A private file of the kernel's."""
    path.write_text(content)
    path.chmod(0o600)
    os.chown(path, *owner)
    return path


def _start_forwarder(port: int, api_socket: Path, owner: tuple[int, int]) -> None:
    """Listen on loopback at the API server's port (before the kernel starts); relay to worker."""
    listener = socket.socket()
    listener.bind((LOOPBACK, port))
    listener.listen(64)
    if os.fork() == 0:
        try:
            # its own session: the kernel's shutdown waits for the children in its group
            os.setsid()
            isolation.drop_privileges(*owner)
            isolation.die_with_parent()
            bridge.serve(listener, functools.partial(bridge.unix_connection, str(api_socket)))
        finally:
            os._exit(1)
    listener.close()


def _limit() -> None:
    """Bound the kernel's memory, tasks, file sizes and open files; its children inherit them."""
    for kind, value in LIMITS.items():
        resource.setrlimit(kind, (value, value))


def kernel_uid(launcher_pid: int) -> int:
    """The uid of the kernel whose jail was launched as `launcher_pid`, and of all it starts."""
    return KERNEL_UID_BASE + launcher_pid


def serve(path: Path) -> NoReturn:
    """The worker's kernel server at `path`: kernel libraries imported once, each kernel a fork."""
    forget_course()
    forkserver.serve(path, warm, launch)


def forget_course() -> None:
    """Drop what this process imported from `course_only` paths: a forked kernel inherits memory."""
    hidden = course_only()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file and any(Path(file).resolve().is_relative_to(path.resolve()) for path in hidden):
            del sys.modules[name]
            parent, _, child = name.rpartition(".")
            if parent in sys.modules and getattr(sys.modules[parent], child, None) is module:
                delattr(sys.modules[parent], child)
    gc.collect()


def warm() -> None:
    """Import the kernel's libraries once, for each kernel forked here (it reads its env)."""
    importlib.import_module(KERNEL_MODULE).preload()


def launch(request: dict, stdout: int, stderr: int, client: int) -> int:
    """As root: fresh mount, PID and network namespaces, the jailed command as their pid 1.

    Returns its pid as seen here.

    `request` holds the command, its folder and environment, the paths to hide and the API relay's
    socket; the kernel's uid follows from `client`, the pid of the command the kernelspec started.
    """
    isolation.unshare(isolation.CLONE_NEWNS | isolation.CLONE_NEWPID | isolation.CLONE_NEWNET)
    uid = kernel_uid(client)
    return forkserver.fork_and_become(
        lambda: _inside(request, uid), stdout, stderr, request["cwd"], request["env"]
    )


def _inside(request: dict, uid: int) -> NoReturn:
    """Pid 1 of the new namespaces, root, none of the server's files: its own /proc, the jail."""
    try:
        isolation.mount("-t", "proc", "-o", "nosuid,nodev,noexec", "proc", "/proc")
        api_socket = Path(request["api_socket"]) if request.get("api_socket") else None
        _enter([Path(path) for path in request["hide"]], api_socket, list(request["command"]), uid)
    except JailError as error:
        os.write(2, f"jail: {error}\n".encode())
        os._exit(127)


def _enter(hide: list[Path], api_socket: Path | None, command: list[str], uid: int) -> NoReturn:
    """Seal, give the kernel its files and its API server, drop to its uid, run it."""
    owner = (uid, KERNEL_GID)
    allowed = kernel_environment(os.environ)
    os.environ.clear()
    os.environ.update(allowed)
    notebook_folder = os.open(
        ".", os.O_RDONLY | os.O_DIRECTORY
    )  # copied in below; not part of the jail's root
    connection_at = command.index("-f") + 1
    # The connection file and the student's kubeconfig may live under the /tmp about to be covered.
    connection = Path(command[connection_at]).read_text()
    if json.loads(connection).get("transport") != "ipc":
        raise JailError(
            "the jailed kernel has no network: start it with KernelManager.transport = 'ipc'"
        )
    sockets = Path(json.loads(connection)["ip"]).parent.resolve()
    kubeconfig = (
        Path(os.environ["KUBECONFIG"]).read_text() if os.environ.get("KUBECONFIG") else None
    )
    tools = [Path(found).resolve() for tool in TOOLS if (found := shutil.which(tool))]
    _seal(hide, tools, sockets)
    HOME.mkdir(mode=0o700)
    os.chown(HOME, *owner)
    command[connection_at] = str(_give(HOME / "connection.json", connection, owner))
    os.environ.update(
        HOME=str(HOME), IPYTHONDIR=str(HOME / ".ipython"), MPLCONFIGDIR=str(HOME / ".matplotlib")
    )
    if kubeconfig is not None:
        os.environ["KUBECONFIG"] = str(
            _give(JAILED_KUBECONFIG, jailed_kubeconfig(kubeconfig), owner)
        )
    _copy_regular_files(Path(f"/proc/self/fd/{notebook_folder}"), WORK, owner)
    os.close(notebook_folder)
    isolation.loopback_up()
    _limit()
    if api_socket and kubeconfig is not None:
        _start_forwarder(api_address(kubeconfig)[1], api_socket, owner)
    os.chdir(WORK)
    isolation.drop_privileges(*owner)
    isolation.die_with_parent()  # a change of uid forgets the parent-death signal: set it again
    _run(command)


def _run(command: list[str]) -> NoReturn:
    """The grading kernel in this interpreter (libraries loaded in a server's fork); else exec."""
    if command[:4] == [sys.executable, "-P", "-m", KERNEL_MODULE]:
        processes.run_as_main(
            importlib.import_module(KERNEL_MODULE).main, [KERNEL_MODULE, *command[4:]], None
        )
    for number in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(number, signal.SIG_DFL)  # as a new process starts: Python ignores them
    os.execvp(command[0], command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -I -m autograder.grading.kernel.jail", description=__doc__
    )
    parser.add_argument("--hide", type=Path, action="append", default=[])
    parser.add_argument(
        "--api-socket", type=Path, help="the worker's relay to the API server (bridge.relay)"
    )
    parser.add_argument(
        "--server", type=Path, help="ask the worker's kernel server to start the kernel warm"
    )
    parser.add_argument(
        "--serve", type=Path, help=argparse.SUPPRESS
    )  # be that server (forkserver.start)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.serve:
        serve(args.serve)
    request = {
        "command": args.command[1:] if args.command[:1] == ["--"] else args.command,
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "hide": [str(path) for path in args.hide],
        "api_socket": str(args.api_socket) if args.api_socket else None,
    }
    code = forkserver.ask(args.server, request) if args.server else None
    if code is None:
        if args.server:
            logger.warning("jail: no kernel server at %s; this kernel starts cold", args.server)
        code = os.waitstatus_to_exitcode(os.waitpid(launch(request, 1, 2, os.getpid()), 0)[1])
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
