"""A Dockerfile as the practice cluster reads it: what it honours, each refusal naming the line."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from kubernetes import client

from autograder.modelserver import SOURCE
from autograder.practice import catalog, dockerfile


def folder(tmp_path: Path, text: str, **files: str) -> Path:
    """A build folder with this Dockerfile and files (app.py by default)."""
    for name, content in {"app.py": "print('hi')\n", **files}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    (tmp_path / "Dockerfile").write_text(text)
    return tmp_path


def test_the_lessons_dockerfile_gives_its_workdir_files_version_and_command() -> None:
    image = dockerfile.read(SOURCE, {"MODEL_VERSION": "v2.0"})
    assert image.workdir == "/app" and image.cmd == ["python", "app.py"] and image.entrypoint == []
    assert image.files == {"/app/requirements.txt": "requirements.txt", "/app/app.py": "app.py"}
    assert image.env == {"MODEL_VERSION": "v2.0"} and image.exposed == [8080]
    assert dockerfile.read(SOURCE).env == {"MODEL_VERSION": "v1.0"}, (
        "the ARG's default without a build arg"
    )


def test_shell_form_entrypoint_cmd_env_and_user_are_kept(tmp_path: Path) -> None:
    context = folder(
        tmp_path,
        'FROM python:3.12\nWORKDIR /srv\nWORKDIR api\nENV GREETING="hello there" N=1\n'
        'COPY src/ ./src/\nUSER 1000\nENTRYPOINT ["python"]\nCMD ["src/serve.py"]\n',
        **{"src/serve.py": "", "src/util/helpers.py": ""},
    )
    image = dockerfile.read(context)
    assert image.workdir == "/srv/api" and image.env == {"GREETING": "hello there", "N": "1"}
    assert image.entrypoint == ["python"] and image.cmd == ["src/serve.py"] and image.user == "1000"
    assert image.files == {
        "/srv/api/src/serve.py": "src/serve.py",
        "/srv/api/src/util/helpers.py": "src/util/helpers.py",
    }
    (context / "Dockerfile").write_text(
        "FROM python:3.11-slim\nWORKDIR /app\nCOPY . .\nCMD python app.py --port $PORT\n"
    )
    image = dockerfile.read(context)
    assert image.cmd == ["/bin/sh", "-c", "python app.py --port $PORT"]
    target = tmp_path / "built"
    dockerfile.materialize(image, context, target)
    assert (target / "src" / "util" / "helpers.py").is_file() and (target / "app.py").is_file()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("FROM python:3.11\nRUN apt-get update && apt-get install -y curl\n", "`apt-get update`"),
        ("FROM node:20\n", "FROM node:20: the practice cluster runs Python images only"),
        (
            "FROM python:3.11\nVOLUME /data\n",
            "VOLUME /data: the practice cluster cannot honour VOLUME",
        ),
        ("FROM python:3.11 AS build\nFROM python:3.11-slim\n", "multi-stage"),
        ("FROM python:3.11\nWORKDIR /app\nCOPY --from=build /x .\n", "COPY --from"),
        ("FROM python:3.11\nADD https://example.com/model.pkl .\n", "no network to ADD a URL"),
        ("FROM python:3.11\nWORKDIR /app\nRUN pip install torch\n", "it has no torch"),
        ("FROM python:3.11\nCOPY app.py /opt/\nWORKDIR /app\n", "/opt/app.py outside WORKDIR /app"),
    ],
)
def test_what_the_practice_cluster_cannot_honour_is_refused_by_name(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(dockerfile.UnsupportedInstruction, match="practice cluster") as refused:
        dockerfile.read(folder(tmp_path, text))
    assert named in str(refused.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "FROM python:3.11\nWORKDIR /app\nCOPY srever.py .\n",
            "srever.py is not in the build folder",
        ),
        ("FROM python:3.11\nWORKDIR /app\nCOPY ../secret .\n", "outside the build folder"),
        (
            "FROM python:3.11\nWORKDIR /app\nRUN pip install -r requirements.txt\n",
            "COPY it before this RUN",
        ),
        ("WORKDIR /app\n", "no FROM line"),
        ("FROM python:3.11\nCOPY ['app.py', '.']\n", "not valid JSON"),
    ],
)
def test_what_docker_would_refuse_too_says_which_line(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(dockerfile.BuildFailed, match=named):
        dockerfile.read(folder(tmp_path, text))


def test_an_unknown_instruction_and_an_unanswered_exercise_are_named(tmp_path: Path) -> None:
    with pytest.raises(
        dockerfile.BuildFailed, match=r"line 2: FORM python:3\.11: unknown instruction FORM"
    ):
        dockerfile.read(folder(tmp_path, "# the base\nFORM python:3.11\n"))
    with pytest.raises(NotImplementedError, match="placeholder"):
        dockerfile.read(folder(tmp_path, "# YOUR CODE HERE\nraise NotImplementedError()\n"))


def test_pip_install_of_packages_the_cluster_has_is_kept(tmp_path: Path) -> None:
    context = folder(
        tmp_path,
        "FROM python:3.11\nWORKDIR /app\nCOPY requirements.txt .\n"
        "RUN pip install --no-cache-dir -r requirements.txt && pip install numpy\n",
        **{"requirements.txt": "flask==3.0.0  # the lesson's pin\n"},
    )
    assert dockerfile.read(context).workdir == "/app"


@pytest.mark.parametrize("name", ["../../../etc/shadow", "/etc/shadow", "a/../../b"])
def test_a_record_written_by_hand_cannot_name_a_file_outside_its_folder(name: str) -> None:
    record = client.V1ConfigMap(
        data={catalog.FILES_KEY: json.dumps({"f0": name})},
        binary_data={"f0": base64.b64encode(b"x").decode()},
    )
    with pytest.raises(ValueError, match="may not hold"):
        catalog.record_files(record)
