"""Build and run the hosted JupyterLab image (`binder/Dockerfile`) with the Docker SDK, offline.

The build context is the repository as `.dockerignore` leaves it, sent as a tar made here so that
the practice cluster's binaries cached on this machine can ride along in `binder/prebuilt/`
(the Dockerfile's build stage then skips its Go build) without being written into the checkout.
Its base, `python:3.11-slim`, is pulled or made offline by `autograder.build.baseimage`.

The student image (binder/student.Dockerfile, on the Dockerfile's `lab` stage) is the hosted image
without the answers: its build context holds only what `STUDENT_FILES` names.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docker import DockerClient
from docker.models.containers import Container
from docker.utils.build import exclude_paths

from autograder import REPO_ROOT
from autograder.build import baseimage
from autograder.shared import dockerengine, ports, studentfiles
from autograder.shared.binaries import BIN_DIR_ENV, PRACTICE_BINARIES
from autograder.shared.errors import LabError
from autograder.shared.pins import PIN_OF, cache_dir

logger = logging.getLogger(__name__)

HOSTED_TAG = "k8s-ml-lab-hosted:latest"
STUDENT_TAG = "k8s-ml-lab-student:latest"
LAB_TAG = "k8s-ml-lab-lab:latest"  # the Dockerfile's `lab` stage: the student image's base
LAB_TARGET = "lab"
DOCKERFILE = "binder/Dockerfile"
STUDENT_DOCKERFILE = "binder/student.Dockerfile"
PREBUILT = "binder/prebuilt"
# What a student's server holds: the release in the home, and the runtime (shared/studentfiles.py)
# under lib/, which binder/student.Dockerfile puts on the path.
STUDENT_FILES = (
    ("notebooks/*.ipynb", "home/notebooks"),
    *((pattern, f"lib/{folder}") for pattern, folder in studentfiles.RUNTIME),
)
LAB_PORT = 8888
NB_UID = 1000
# Every process in the container, with the rights the kernel gives it (run inside, as the user).
PROCESS_RIGHTS = r"""
import json, os
rows = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        lines = open(f"/proc/{pid}/status").read().splitlines()
        status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
    except OSError:
        continue
    capabilities = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
    rows.append({"pid": int(pid), "name": status["Name"].strip(),
                 "state": status["State"].split()[0], "uid": int(status["Uid"].split()[1]),
                 "gid": int(status["Gid"].split()[1]),
                 "no_new_privs": status.get("NoNewPrivs", "?").strip(),
                 **{key: int(status[key], 16) for key in capabilities}})
print(json.dumps(rows))
"""

# Run inside the container: every listening TCP socket, with its process's name.
LISTENING = """
import json, psutil
print(json.dumps([[c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name() if c.pid else "?"]
                  for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN]))
"""


class HostedImageError(LabError):
    """The hosted image did not build or its container did not come up; the message says where."""


@dataclass
class HostedBuild:
    """One finished build of the hosted image."""

    tag: str
    image_id: str
    seconds: float
    prebuilt: list[str]  # the binaries taken from this machine's cache instead of built with Go
    log: list[str] = field(repr=False, default_factory=list)

    def summary(self) -> str:
        origin = (
            f"cluster binaries from this machine's cache ({len(self.prebuilt)})"
            if self.prebuilt
            else "cluster binaries built with Go in the build stage"
        )
        return f"{self.tag} ({self.image_id[:19]}) built in {self.seconds:.1f} s; {origin}"


def cached_binaries() -> dict[str, Path]:
    """The practice cluster's binaries this machine holds at their pinned versions.

    In $LAB_BIN_DIR (as the lab takes them), else in its cache; resolved, so the context carries
    files, not links.
    """
    folders = [Path(os.environ[BIN_DIR_ENV])] if os.environ.get(BIN_DIR_ENV) else []
    found = {}
    for name in PRACTICE_BINARIES:
        for path in [folder / name for folder in folders] + [cache_dir(PIN_OF[name]) / name]:
            if path.is_file() and os.access(path, os.X_OK):
                found[name] = path.resolve()
                break
    return found


def build_context(root: Path, prebuilt: dict[str, Path], into: Path) -> Path:
    """A tar of `root` as `.dockerignore` leaves it, plus `prebuilt` binaries in binder/prebuilt."""
    ignore = root / ".dockerignore"
    patterns = (
        [
            line.strip()
            for line in ignore.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]
        if ignore.is_file()
        else []
    )
    with tarfile.open(into, "w") as tar:
        for relative in sorted(exclude_paths(str(root), patterns, dockerfile=DOCKERFILE)):
            tar.add(root / relative, arcname=relative, recursive=False)
        for name, path in prebuilt.items():
            tar.add(path, arcname=f"{PREBUILT}/{name}")
    return into


def student_files(root: Path) -> dict[str, Path]:
    """Every file `STUDENT_FILES` allows, by its path in the student image's build context."""
    return studentfiles.chosen(root, STUDENT_FILES)


def student_context(root: Path, into: Path) -> Path:
    """The student image's whole build context: its Dockerfile and what `STUDENT_FILES` allows."""
    with tarfile.open(into, "w") as tar:
        tar.add(root / STUDENT_DOCKERFILE, arcname="Dockerfile")
        for arcname, path in student_files(root).items():
            tar.add(path, arcname=arcname)
    return into


def go_proxy() -> str:
    """The Go module proxy this machine uses, for a build stage that has to build with Go."""
    if os.environ.get("GOPROXY"):
        return os.environ["GOPROXY"]
    go = shutil.which("go")
    if go:
        done = subprocess.run([go, "env", "GOPROXY"], capture_output=True, text=True, check=False)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return "https://proxy.golang.org,direct"


def build(
    tag: str = HOSTED_TAG,
    *,
    nocache: bool = False,
    use_cached_binaries: bool = True,
    root: Path = REPO_ROOT,
    student: bool = False,
) -> HostedBuild:
    """`docker build -f binder/Dockerfile -t TAG .` through the SDK, logging each step as it starts.

    With `student`: the Dockerfile's `lab` stage (binaries and server settings) as LAB_TAG, then
    binder/student.Dockerfile on it, from a context holding only what `STUDENT_FILES` allows.
    """
    if not (root / DOCKERFILE).is_file():
        raise HostedImageError(
            f"no {DOCKERFILE} under {root}: build the hosted image from a checkout"
        )
    client = dockerengine.client()
    baseimage.ensure_python_base(client)
    prebuilt = cached_binaries() if use_cached_binaries else {}
    buildargs = {
        name: os.environ[name] for name in dockerengine.PROXY_VARIABLES if os.environ.get(name)
    }
    buildargs["GOPROXY"] = go_proxy()
    origin = (
        f"{', '.join(prebuilt)} from {cache_dir(PIN_OF['kubectl']).parent}"
        if prebuilt
        else "built with Go in the build stage (several minutes)"
    )
    logger.info("building %s from %s; cluster binaries: %s", tag, root / DOCKERFILE, origin)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hosted-context-") as scratch:
        context = build_context(root, prebuilt, Path(scratch) / "context.tar")
        built = _build_stage(
            client,
            context,
            LAB_TAG if student else tag,
            dockerfile=DOCKERFILE,
            buildargs=buildargs,
            nocache=nocache,
            target=LAB_TARGET if student else None,
        )
        log = built.log
        if student:
            context = student_context(root, Path(scratch) / "student.tar")
            built = _build_stage(
                client, context, tag, buildargs={"LAB_IMAGE": LAB_TAG}, nocache=nocache
            )
            log += built.log
    return HostedBuild(
        tag=tag,
        image_id=built.image_id,
        seconds=time.monotonic() - started,
        prebuilt=sorted(prebuilt),
        log=log,
    )


def _build_stage(
    client: DockerClient, context: Path, tag: str, **options: Any
) -> dockerengine.BuildOutput:
    """One `docker build` of the tar `context`, each step logged as it starts (a Go build's too)."""
    return dockerengine.build(
        client, context, tag, failure=HostedImageError, progress=False, echo=True, **options
    )


@dataclass
class HostedLab:
    """A running container of the hosted image: its JupyterLab URL and token, commands run in it."""

    container: Container
    url: str
    token: str
    started_at: float  # time.monotonic() just before `docker run`
    seconds_to_lab: float

    def exec(self, *command: str) -> str:
        """Run `command` in the container as its (notebook) user; its output, or an error."""
        code, output = self.container.exec_run(list(command), demux=False)
        text = output.decode(errors="replace")
        if code != 0:
            raise HostedImageError(
                f"{' '.join(command)} failed in the container (exit {code}):\n{text[-3000:]}"
            )
        return text

    def python(self, code: str) -> str:
        return self.exec("python", "-c", code)

    def process_rights(self) -> list[dict]:
        """Every process in the container with its uid, gid, capability sets and no_new_privs."""
        return json.loads(self.python(PROCESS_RIGHTS))

    def listening(self) -> list[tuple[str, int, str]]:
        """Every TCP socket listening in the container: its address, port and process."""
        return [tuple(row) for row in json.loads(self.python(LISTENING))]

    def cluster_up(self) -> float:
        """`python -m autograder cluster up --provider practice` inside, as the user; seconds."""
        started = time.monotonic()
        self.exec("python", "-m", "autograder", "cluster", "up", "--provider", "practice")
        return time.monotonic() - started


@contextmanager
def running(
    tag: str = HOSTED_TAG,
    *,
    timeout: float = 90,
    environment: dict[str, str] | None = None,
    **run_options: object,
) -> Iterator[HostedLab]:
    """`docker run -p 127.0.0.1:PORT:8888 TAG` until the block ends; yields once JupyterLab answers.

    The container keeps its own command, user and rights unless `run_options` say otherwise; it is
    ready once /api/status answers. A browser test opens `url` with `token` to drive a notebook.
    """
    client = dockerengine.client()
    token = secrets.token_hex(16)
    port = ports.free_port()
    started = time.monotonic()
    container = client.containers.run(
        tag,
        detach=True,
        environment={**(environment or {}), "JUPYTER_TOKEN": token},
        ports={f"{LAB_PORT}/tcp": ("127.0.0.1", port)},
        **run_options,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        try:
            ports.wait_http(
                f"{url}/api/status?token={token}", timeout, alive=lambda: _running(container)
            )
        except ports.NotAnswering as error:
            logs = container.logs(tail=30).decode(errors="replace")
            raise HostedImageError(
                f"JupyterLab in {tag} did not answer ({error}); its last output:\n{logs}"
            ) from None
        yield HostedLab(
            container=container,
            url=url,
            token=token,
            started_at=started,
            seconds_to_lab=time.monotonic() - started,
        )
    finally:
        container.remove(force=True)


def _running(container: Container) -> bool:
    container.reload()
    return container.status in ("created", "running")
