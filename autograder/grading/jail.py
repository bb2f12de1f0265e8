"""Start a student's kernel where it cannot reach the grader's secrets or files.

The kernel gets its own mount and PID namespaces (`unshare`): the admin kubeconfigs, kwok's
certificates and the Docker socket are covered, every filesystem is read-only except a fresh
/tmp and the notebook's own folder, and it sees no process but itself. It then runs with no
capabilities (`setpriv`), so it cannot undo any of that. Only the student's namespace-scoped
kubeconfig is left to reach the cluster with. Needs root, util-linux's unshare and setpriv.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from autograder import REPO_ROOT

INSIDE = "LAB_JAIL_INSIDE"
KERNEL_NAME = "lab-jail"
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
PR_SET_PDEATHSIG = 1


def unavailable_reason() -> str | None:
    """None when kernels can be jailed here, else why not."""
    if os.geteuid() != 0:
        return "the grader does not run as root"
    missing = [tool for tool in ("unshare", "setpriv", "mount") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found (install util-linux)"
    trial = subprocess.run(["unshare", "--mount", "--pid", "--fork", "true"], capture_output=True, check=False)
    if trial.returncode != 0:
        return f"unshare is not permitted here: {trial.stderr.decode().strip()}"
    return None


def default_secrets(home: Path = Path.home()) -> list[Path]:
    """Places that hold credentials stronger than the student's own."""
    return [home / ".kube", home / ".kwok", home / ".docker", home / ".config" / "kind",
            Path("/etc/kubernetes"), Path("/var/run/docker.sock"), Path("/run/docker.sock")]


def write_kernelspec(folder: Path, hide: list[Path]) -> Path:
    """A kernelspec named `lab-jail` in `folder`/kernels; put `folder` on JUPYTER_PATH to use it."""
    argv = [sys.executable, "-m", "autograder.grading.jail"]
    for path in hide:
        argv += ["--hide", str(path)]
    argv += ["--", sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = folder / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": argv, "display_name": "Python 3 (grading jail)", "language": "python",
        # SIGINT would reach unshare, not the kernel; ask the kernel itself to interrupt.
        "interrupt_mode": "message",
    }))
    return folder


def _die_with_parent() -> None:
    """Outside the PID namespace nothing would stop the jail if the grading worker were killed."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as table:
        points = [line.split()[4].replace("\\040", " ") for line in table]
    return [p for p in dict.fromkeys(points) if not p.startswith(PSEUDO_FILESYSTEMS)]


def _seal(hide: list[Path], workdir: Path) -> None:
    """Inside fresh namespaces: cover secrets, make everything read-only, keep /tmp and `workdir` writable."""
    for path in hide:
        if path.is_dir():
            _mount("-t", "tmpfs", "-o", "size=4k,mode=000", "hidden", str(path))
        elif path.exists():
            _mount("--bind", "/dev/null", str(path))
    _mount("--bind", str(workdir), str(workdir))
    for point in _mount_points():
        if point != str(workdir):
            _mount("-o", "remount,bind,ro", point)
    # A fresh /tmp would cover what lives below it (a checkout in /tmp, its venv, the notebook's
    # folder): keep a handle on each and mount it back through the handle itself (a path, even
    # canonicalized, would now lead into the new /tmp). Parents first; only `workdir` stays writable.
    keep = sorted({path.resolve() for path in (Path(sys.prefix), REPO_ROOT, workdir)
                   if path.resolve().is_relative_to("/tmp")}, key=lambda path: len(path.parts))
    handles = {path: os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in keep}
    _mount("-t", "tmpfs", "-o", "size=256m,mode=1777", "scratch", "/tmp")
    for path, handle in handles.items():
        path.mkdir(parents=True, exist_ok=True)
        _mount("--no-canonicalize", "--bind", f"/proc/{os.getpid()}/fd/{handle}", str(path))
        if path != workdir.resolve():
            _mount("-o", "remount,bind,ro", str(path))
        os.close(handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.grading.jail", description=__doc__)
    parser.add_argument("--hide", type=Path, action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not os.environ.get(INSIDE):
        os.environ[INSIDE] = "1"
        _die_with_parent()
        os.execvp("unshare", ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
                              "--propagation", "private", sys.executable, "-m", "autograder.grading.jail",
                              *(f"--hide={path}" for path in args.hide), "--", *command])
    workdir = Path.cwd()
    connection_at = command.index("-f") + 1
    # The connection file and the student's kubeconfig may live under the /tmp about to be covered.
    carried = {"connection.json": Path(command[connection_at]).read_text()}
    if os.environ.get("KUBECONFIG"):
        carried["kubeconfig"] = Path(os.environ["KUBECONFIG"]).read_text()
    _seal(args.hide, workdir)
    home = Path("/tmp/home")
    home.mkdir()
    for name, content in carried.items():
        (home / name).write_text(content)
        (home / name).chmod(0o600)
    command[connection_at] = str(home / "connection.json")
    os.environ.update(HOME=str(home), IPYTHONDIR=str(home / ".ipython"), MPLCONFIGDIR=str(home / ".matplotlib"))
    if "kubeconfig" in carried:
        os.environ["KUBECONFIG"] = str(home / "kubeconfig")
    os.chdir(workdir)
    os.execvp("setpriv", ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--no-new-privs", "--", *command])
    return 1


if __name__ == "__main__":
    sys.exit(main())
