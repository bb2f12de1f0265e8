"""autograder.lesson.handson: self-checks of a student's files point at the student's own line."""

from __future__ import annotations

from pathlib import Path

from autograder import MANIFESTS
from autograder.lesson import handson
from autograder.modelserver import SOURCE as MODEL_SERVER

APP = """from flask import Flask, jsonify, request

app = Flask(__name__)
MODEL_VERSION = "v1.0"


@app.route("/predict", methods=["POST"])
def predict():
    return jsonify({"prediction": float(sum(request.get_json()["features"])),
                    "model_version": MODEL_VERSION})


@app.route("/health")
def health():
    return jsonify({"status": "healthy"})
"""


def test_a_working_app_passes_and_the_reference_app_too(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    assert handson.app_answers(tmp_path / "app.py")
    assert handson.app_answers(MODEL_SERVER / "app.py")


def test_an_app_that_crashes_at_import_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        APP.replace('MODEL_VERSION = "v1.0"', "MODEL_VERSION = undefined_name")
    )
    result = handson.app_answers(tmp_path / "app.py")
    assert not result and "line 4 of app.py" in result.message and "NameError" in result.message


def test_a_wrong_version_or_sum_is_named(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    assert (
        "model_version 'v1.0'" in handson.app_answers(tmp_path / "app.py", version="v2.0").message
    )
    (tmp_path / "app.py").write_text(APP.replace("float(sum(", "float(len("))
    assert "sum of the features is 15.0" in handson.app_answers(tmp_path / "app.py").message


def test_dockerfile_problems_point_at_the_line(tmp_path: Path) -> None:
    assert handson.dockerfile_problems(MODEL_SERVER)
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.11-slim\nCOPY . .\nRUN pip install -r requirements.txt\n"
        "raise NotImplementedError()\n"
    )
    assert "line 4" in handson.dockerfile_problems(tmp_path).message
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.11-slim\nCOPY . .\nRUN pip install -r requirements.txt\n"
    )
    assert "CMD" in handson.dockerfile_problems(tmp_path).message


def test_manifest_problems_name_parse_errors_unknown_fields_and_wrong_values(
    tmp_path: Path,
) -> None:
    assert handson.manifest_problems(MANIFESTS / "deployment.yaml")
    text = (MANIFESTS / "deployment.yaml").read_text()
    path = tmp_path / "deployment.yaml"
    path.write_text(text.replace("  replicas: 3", "  replicas: 3\n  raise NotImplementedError()"))
    assert "not valid YAML at line" in handson.manifest_problems(path).message
    path.write_text(text.replace("containerPort: 8080", "containerPorts: 8080"))
    message = handson.manifest_problems(path).message
    assert (
        "no field spec.template.spec.containers[0].ports[0].containerPorts" in message
        and "line" in message
    )
    path.write_text(text.replace("path: /health", "path: /healthz"))
    assert "'/healthz'" in handson.manifest_problems(path).message
