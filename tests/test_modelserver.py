"""The reference model server's contract, through Flask's test client (pure logic, no network)."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import uuid

import docker
import pytest
from flask.testing import FlaskClient

from autograder.lab import images
from autograder.modelserver import SOURCE
from autograder.shared import ports


def client_for(version: str | None, monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    """A fresh copy of app.py, imported with MODEL_VERSION as the image would set it."""
    if version is None:
        monkeypatch.delenv("MODEL_VERSION", raising=False)
    else:
        monkeypatch.setenv("MODEL_VERSION", version)
    spec = importlib.util.spec_from_file_location("modelserver_app", SOURCE / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app.test_client()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> FlaskClient:
    return client_for(None, monkeypatch)


def test_predict_sums_the_features_as_the_lesson_shows(server: FlaskClient) -> None:
    answer = server.post("/predict", json={"features": [1, 2, 3, 4, 5]})
    assert answer.status_code == 200
    assert answer.get_json() == {"prediction": 15.0, "model_version": "v1.0"}
    assert isinstance(answer.get_json()["prediction"], float)


def test_the_version_comes_from_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    answer = client_for("v2.0", monkeypatch).post("/predict", json={"features": [1, 2, 3]})
    assert answer.get_json() == {"prediction": 6.0, "model_version": "v2.0"}


def test_health(server: FlaskClient) -> None:
    answer = server.get("/health")
    assert answer.status_code == 200
    assert answer.get_json() == {"status": "healthy"}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"features": "1,2,3"},
        {"features": []},
        {"features": [1, "two", 3]},
        {"features": [1, None]},
        {"features": [True, False]},
        {"features": [[1, 2], [3]]},
        {"features": [10**400]},
        {"features": [1e308, 1e308]},
        [1, 2, 3],
    ],
)
def test_bad_features_answer_400_with_a_json_reason(server: FlaskClient, body: object) -> None:
    answer = server.post("/predict", json=body)
    assert answer.status_code == 400
    assert "error" in answer.get_json()


@pytest.mark.parametrize(
    "data, content_type",
    [
        ("{not json", "application/json"),
        ('{"features": [1, 2]}', "text/plain"),
        ("", "application/json"),
        ('{"features": [NaN]}', "application/json"),
    ],
)
def test_malformed_requests_answer_400_not_500(
    server: FlaskClient, data: str, content_type: str
) -> None:
    answer = server.post("/predict", data=data, content_type=content_type)
    assert answer.status_code == 400
    assert "error" in answer.get_json()


def test_wrong_method_and_path_answer_json(server: FlaskClient) -> None:
    assert server.get("/predict").status_code == 405
    missing = server.get("/nope")
    assert missing.status_code == 404
    assert "error" in missing.get_json()


def test_requirements_and_dockerfile_follow_the_lesson() -> None:
    assert (SOURCE / "requirements.txt").read_text().split() == ["flask==3.0.0", "numpy==1.26.0"]
    dockerfile = (SOURCE / "Dockerfile").read_text()
    for line in (
        "FROM python:3.11-slim",
        "WORKDIR /app",
        "RUN pip install --no-cache-dir -r requirements.txt",
        "COPY app.py .",
        "EXPOSE 8080",
        'CMD ["python", "app.py"]',
        "ARG MODEL_VERSION=v1.0",
    ):
        assert line in dockerfile


def test_sigterm_stops_the_server_at_once_with_exit_code_0() -> None:
    port = ports.free_port()
    server = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=SOURCE,
        env={**os.environ, "PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        ports.wait_http(f"http://127.0.0.1:{port}/health", 30, alive=lambda: server.poll() is None)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=3) == 0
        assert b"SIGTERM received" in server.stdout.read()
    finally:
        server.kill()
        server.wait()


@pytest.mark.docker
def test_docker_stop_returns_well_before_the_grace_period() -> None:
    tag = f"t-ml-api-stop-{uuid.uuid4().hex[:6]}:v1"
    images.build(tag, SOURCE, progress=False)
    try:
        with images.run_local(tag, port=None) as server:
            container = docker.from_env().containers.get(server.container_name)
            container.stop(timeout=120)
            container.reload()
            # Docker's SIGKILL after the grace period exits 137: 0 is the
            # server's own end at SIGTERM.
            assert container.attrs["State"]["ExitCode"] == 0, "the server ignored SIGTERM"
    finally:
        docker.from_env().images.remove(tag, force=True)
