"""A Dockerfile read as the practice cluster runs it.

No Docker, the student's own folder and instructions.

The practice cluster has no image builder: its containers run with the Python this package runs on.
What a Dockerfile decides at run time is honoured: WORKDIR (the container's working folder), COPY
and ADD of the folder's files (what that folder holds), ENV and ARG (its environment), EXPOSE, and
CMD and ENTRYPOINT (what it runs, combined with a pod's command and args as Kubernetes does). USER
is accepted, and the container still runs as its pod's own unprivileged uid, as a runtime with user
namespaces maps it. RUN can only ask for Python packages the cluster already has (`pip install`);
any other build step (apt-get, a compiler...) is refused by name, as is a base image that is not
Python.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import io
import json
import posixpath
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter
from packaging.requirements import InvalidRequirement, Requirement

from autograder.shared.errors import DockerfileMissing, LabError

DOCKERFILE = "Dockerfile"
PYTHON_BASE_DEFAULT_CMD = [
    "python3"
]  # what the python images run when a Dockerfile names no command
SKIPPED = ("__pycache__", "*.pyc", ".ipynb_checkpoints")
# Every instruction Docker knows (and dockerfile-parse's COMMENT): any other
# word starts no valid line.
DOCKER_INSTRUCTIONS = {
    "ADD",
    "ARG",
    "CMD",
    "COMMENT",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
}
UNANSWERED = "raise NotImplementedError()"  # nbgrader's stand-in for an answer not written yet
IGNORED = {
    "COMMENT",
    "LABEL",
    "MAINTAINER",
    "HEALTHCHECK",
    "STOPSIGNAL",
    "ARG",
}  # Kubernetes' probes replace HEALTHCHECK
PIP_PROGRAMS = (
    ["pip", "install"],
    ["pip3", "install"],
    ["python", "-m", "pip", "install"],
    ["python3", "-m", "pip", "install"],
)
SUPPORTED = (
    "FROM python:..., WORKDIR, COPY and ADD of files in your folder, ENV, ARG, EXPOSE, USER, "
    "CMD, ENTRYPOINT, LABEL, HEALTHCHECK (Kubernetes uses its probes instead) and RUN pip install "
    "of packages the cluster already has"
)


class UnsupportedInstruction(LabError):
    """A Dockerfile line the practice cluster cannot honour; the message names it, and options."""


class BuildFailed(LabError):
    """A Dockerfile line Docker fails too (a COPY of a missing file); the message says which."""


@dataclass
class Image:
    """What a container of the image starts with: its files (in WORKDIR), environment, command."""

    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=lambda: list(PYTHON_BASE_DEFAULT_CMD))
    exposed: list[int] = field(default_factory=list)
    user: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # image path -> path in the build folder

    def run_config(self) -> dict:
        """The part a container needs at run time (the files are copied out separately)."""
        config = asdict(self)
        del config["files"]
        return config


def read(context: Path, build_args: dict[str, str] | None = None) -> Image:
    """`docker build CONTEXT` as the practice cluster does it: each Dockerfile line checked."""
    dockerfile = context / DOCKERFILE
    if not dockerfile.is_file():
        raise DockerfileMissing(context)
    text = dockerfile.read_bytes()
    if UNANSWERED.encode() in text:
        raise NotImplementedError(
            f"the Dockerfile still holds the exercise's placeholder ({UNANSWERED}): "
            "write the Dockerfile first, then load the image"
        )
    parser = DockerfileParser(
        fileobj=io.BytesIO(text), env_replace=True, build_args=build_args or {}
    )
    image, stages = Image(), 0
    available = context_files(context)
    for line, state in zip(parser.structure, parser.context_structure):
        instruction, value = line["instruction"], line["value"]
        where = f"Dockerfile line {line['startline'] + 1}: {line['content'].strip()}"
        words = _words(value, state.args, state.envs)
        if instruction == "FROM":
            stages += 1
            _check_base(words, stages, where)
        elif instruction == "WORKDIR":
            image.workdir = posixpath.normpath(
                posixpath.join(image.workdir, words[-1] if words else "/")
            )
        elif instruction == "ENV":
            image.env = dict(state.envs)
        elif instruction in ("COPY", "ADD"):
            _copy(image, instruction, value, words, available, where)
        elif instruction == "RUN":
            _check_run(words, image, context, where)
        elif instruction == "EXPOSE":
            image.exposed += [
                int(word.split("/")[0]) for word in words if word.split("/")[0].isdigit()
            ]
        elif instruction == "USER":
            image.user = words[0] if words else None
        elif instruction in ("CMD", "ENTRYPOINT"):
            command = _command(value)
            if instruction == "CMD":
                image.cmd = command
            else:
                image.entrypoint, image.cmd = command, []
        elif instruction not in DOCKER_INSTRUCTIONS:
            raise BuildFailed(
                f"{where}: unknown instruction {instruction}, as Docker would say: a "
                "Dockerfile's lines start with FROM, WORKDIR, COPY, RUN, ENV, EXPOSE, CMD..."
            )
        elif instruction not in IGNORED:
            raise UnsupportedInstruction(
                f"{where}: the practice cluster cannot honour {instruction}; it "
                f"supports {SUPPORTED}. Remove the line, or use kind (Docker) for it"
            )
    if stages == 0:
        raise BuildFailed(f"{dockerfile} has no FROM line: start it with FROM python:3.11-slim")
    _check_within_workdir(image)
    return image


def context_files(context: Path) -> list[str]:
    """The build folder's files, as paths relative to it (what `COPY . .` takes)."""
    return sorted(
        str(path.relative_to(context))
        for path in context.rglob("*")
        if path.is_file()
        and not path.is_symlink()
        and not any(fnmatch.fnmatch(part, pattern) for part in path.parts for pattern in SKIPPED)
    )


def materialize(image: Image, context: Path, target: Path) -> None:
    """Write the image's files into `target`, which stands for its WORKDIR."""
    target.mkdir(parents=True)
    for path, source in image.files.items():
        destination = target / posixpath.relpath(path, image.workdir)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(context / source, destination)


def _words(value: str, args: dict, envs: dict) -> list[str]:
    """An instruction's words after quoting and $VARIABLE substitution, as Docker reads them."""
    return [word for word in WordSplitter(value, args=args, envs=envs).split() if word]


def _command(value: str) -> list[str]:
    """CMD or ENTRYPOINT: the exec form (a JSON list) as written, the shell form through /bin/sh -c
    (which expands its $VARIABLES when the container starts, as with Docker)."""
    if value.lstrip().startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(word, str) for word in parsed):
            return parsed
    return ["/bin/sh", "-c", value.strip()]


def _check_base(words: list[str], stages: int, where: str) -> None:
    """One stage, from a Python image: the cluster's containers run its own Python."""
    if stages > 1:
        raise UnsupportedInstruction(
            f"{where}: the practice cluster builds one stage only (no multi-stage "
            f"builds); it supports {SUPPORTED}"
        )
    base = next((word for word in words if not word.startswith("--")), "")
    if not base.split("/")[-1].startswith("python"):
        raise UnsupportedInstruction(
            f"{where}: the practice cluster runs Python images only; start from "
            "FROM python:3.11-slim (kind, with Docker, runs any base)"
        )


def _copy(
    image: Image, instruction: str, value: str, words: list[str], available: list[str], where: str
) -> None:
    """COPY/ADD SOURCES... DEST: the folder's files the image gets, at their paths in the image."""
    flags = [word for word in words if word.startswith("--")]
    if any(flag.startswith("--from") for flag in flags):
        raise UnsupportedInstruction(
            f"{where}: COPY --from needs a multi-stage build, which the practice "
            f"cluster does not do; it supports {SUPPORTED}"
        )
    paths = [word for word in words if not word.startswith("--")]
    if value.lstrip().startswith("["):
        try:
            paths = [str(path) for path in json.loads(value)]
        except ValueError:
            raise BuildFailed(
                f"{where}: the JSON list is not valid JSON (use double quotes)"
            ) from None
    if len(paths) < 2:
        raise BuildFailed(f"{where}: {instruction} needs a source and a destination")
    *sources, destination = paths
    if instruction == "ADD" and any(
        "://" in source or source.startswith("git@") for source in sources
    ):
        raise UnsupportedInstruction(
            f"{where}: the practice cluster has no network to ADD a URL from; "
            "COPY a file of your folder instead"
        )
    target = posixpath.normpath(posixpath.join(image.workdir, destination))
    into_folder = destination.endswith("/") or target == image.workdir or len(sources) > 1
    for source in sources:
        relative = posixpath.normpath(source.lstrip("/"))
        if relative == ".." or relative.startswith("../"):
            raise BuildFailed(
                f"{where}: {source} is outside the build folder, which Docker refuses too"
            )
        matched = _matching(relative, available)
        if not matched:
            raise BuildFailed(
                f"{where}: {instruction} failed: {source} is not in the build folder "
                f"(it holds {', '.join(available) or 'nothing'})"
            )
        for found, inner in matched:
            if inner is not None:
                image.files[posixpath.join(target, inner)] = found
            else:
                name = posixpath.join(target, posixpath.basename(found)) if into_folder else target
                image.files[name] = found


def _matching(source: str, available: list[str]) -> list[tuple[str, str | None]]:
    """(file, its path below a copied folder or None for a file named itself) for a COPY source."""
    if source == ".":
        return [(path, path) for path in available]
    named: list[tuple[str, str | None]] = [
        (path, None) for path in available if fnmatch.fnmatchcase(path, source)
    ]
    below: list[tuple[str, str | None]] = [
        (path, path[len(source) + 1 :]) for path in available if path.startswith(source + "/")
    ]
    return named or below


def _check_run(words: list[str], image: Image, context: Path, where: str) -> None:
    """RUN pip install of packages the cluster has is kept; other build steps refused by name."""
    for step in _split_steps(words):
        program = next((prefix for prefix in PIP_PROGRAMS if step[: len(prefix)] == prefix), None)
        if program is None:
            raise UnsupportedInstruction(
                f"{where}: the practice cluster cannot run build steps such as `{' '.join(step)}`; "
                f"it supports {SUPPORTED}. Remove the line, or use kind (Docker) for it"
            )
        missing = [
            name
            for name in _requirements(step[len(program) :], image, context, where)
            if not _installed(name)
        ]
        if missing:
            raise UnsupportedInstruction(
                f"{where}: the practice cluster cannot install packages, and it "
                f"has no {', '.join(missing)}; its containers have flask and numpy "
                "(and what this lab runs on)"
            )


def _split_steps(words: list[str]) -> list[list[str]]:
    """`a && b` as [a, b]."""
    steps: list[list[str]] = [[]]
    for word in words:
        if word in ("&&", ";"):
            steps.append([])
        else:
            steps[-1].append(word)
    return [step for step in steps if step]


def _requirements(arguments: list[str], image: Image, context: Path, where: str) -> list[str]:
    """The package names a `pip install` line asks for, from its arguments and its -r files."""
    names, iterator = [], iter(arguments)
    for argument in iterator:
        if argument in ("-r", "--requirement"):
            names += _requirement_file(next(iterator, ""), image, context, where)
        elif not argument.startswith("-"):
            names.append(_requirement_name(argument, where))
    return names


def _requirement_file(name: str, image: Image, context: Path, where: str) -> list[str]:
    """The names in a requirements file the image holds (COPY it before the RUN, as with Docker)."""
    source = image.files.get(posixpath.normpath(posixpath.join(image.workdir, name)))
    if source is None:
        raise BuildFailed(f"{where}: {name} is not in the image yet: COPY it before this RUN line")
    lines = (context / source).read_text().splitlines()
    return [
        _requirement_name(line, where)
        for line in (text.split("#")[0].strip() for text in lines)
        if line and not line.startswith("-")
    ]


def _requirement_name(text: str, where: str) -> str:
    try:
        return Requirement(text).name
    except InvalidRequirement as error:
        raise BuildFailed(f"{where}: pip cannot read the requirement {text!r}: {error}") from None


def _installed(name: str) -> bool:
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _check_within_workdir(image: Image) -> None:
    """The container keeps only its WORKDIR: a file copied elsewhere would be lost; say so now."""
    outside = sorted(
        path for path in image.files if posixpath.relpath(path, image.workdir).startswith("..")
    )
    if outside:
        raise UnsupportedInstruction(
            f"COPY puts {', '.join(outside)} outside WORKDIR {image.workdir}: the practice "
            "cluster keeps only the files under WORKDIR. Set WORKDIR first (WORKDIR /app), then "
            "COPY into it (COPY app.py .)"
        )
