"""Which provider `connect()` picks, from real kubeconfig files (no cluster needed)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from autograder.lab import cluster
from autograder.providers import choice
from autograder.providers.kind import Kind
from autograder.shared import kubeconfig


def write_kubeconfig(
    path: Path, context: str, server: str, namespace: str | None = "team-a"
) -> Path:
    settings = {
        "cluster": context,
        "user": context,
        **({"namespace": namespace} if namespace else {}),
    }
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": context,
                "clusters": [{"name": context, "cluster": {"server": server}}],
                "users": [{"name": context, "user": {"token": "x"}}],
                "contexts": [{"name": context, "context": settings}],
            }
        )
    )
    return path


class _VersionHandler(BaseHTTPRequestHandler):
    """Answers GET /version like an API server, so a context "answers" without a cluster."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "major": "1",
                "minor": "34",
                "gitVersion": "v1.34.0",
                "gitCommit": "x",
                "gitTreeState": "clean",
                "buildDate": "2025-01-01T00:00:00Z",
                "goVersion": "go1.24",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def answering_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _VersionHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv(choice.PROVIDER_ENV, raising=False)
    return tmp_path


def test_unknown_provider_lists_the_valid_ones(no_kubeconfig: Path) -> None:
    with pytest.raises(ValueError, match="practice, kind, existing"):
        choice.choose("minikube")


def test_explicit_argument_beats_the_environment(
    no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(choice.PROVIDER_ENV, "kind")
    assert choice.choose("practice").name == "practice"
    assert choice.choose().name == "kind"


def test_unknown_provider_in_the_environment_is_refused(
    no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(choice.PROVIDER_ENV, "docker-desktop")
    with pytest.raises(ValueError, match="unknown cluster provider 'docker-desktop'"):
        choice.choose()


def test_without_context_kind_comes_before_practice(
    no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: None)
    assert choice.choose().name == "kind"
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: "Docker is down")
    assert choice.choose().name == "practice"


def test_a_context_that_does_not_answer_is_passed_over(
    no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "KUBECONFIG",
        str(write_kubeconfig(no_kubeconfig / "config", "minikube", "https://127.0.0.1:1")),
    )
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: "no Docker")
    assert choice.choose().name == "practice"


def test_the_labs_own_contexts_are_recognised() -> None:
    assert choice.provider_of_context("kwok-ml-learning") == "practice"
    assert choice.provider_of_context("kind-ml-learning") == "kind"
    assert choice.provider_of_context("gke_project_zone_name") == "existing"


def test_a_work_context_that_answers_is_used_only_when_asked_for(
    no_kubeconfig: Path, answering_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = write_kubeconfig(no_kubeconfig / "config", "work-prod", answering_server)
    monkeypatch.setenv("KUBECONFIG", str(work))
    assert kubeconfig.answers("work-prod")
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: "no Docker")
    assert choice.choose().name == "practice"
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: None)
    assert choice.choose().name == "kind"
    assert choice.choose("existing").name == "existing"
    monkeypatch.setenv(choice.PROVIDER_ENV, "existing")
    assert choice.choose().name == "existing"


def test_the_labs_own_context_that_answers_is_reused(
    no_kubeconfig: Path, answering_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Kind, "unusable_reason", lambda self: "no Docker")
    for context, expected in (("kind-ml-learning", "kind"), ("kwok-ml-learning", "practice")):
        own = write_kubeconfig(no_kubeconfig / context, context, answering_server)
        monkeypatch.setenv("KUBECONFIG", str(own))
        assert choice.choose().name == expected


@pytest.mark.parametrize(
    ("named", "expected"),
    [("team-a", "team-a"), ("default", cluster.LAB_NAMESPACE), (None, cluster.LAB_NAMESPACE)],
)
def test_the_namespace_is_never_default_unless_given(
    no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, named: str | None, expected: str
) -> None:
    monkeypatch.setenv(
        "KUBECONFIG",
        str(
            write_kubeconfig(
                no_kubeconfig / "config", "minikube", "https://127.0.0.1:1", namespace=named
            )
        ),
    )
    assert cluster.own_namespace("minikube") == expected
    assert cluster.LAB_NAMESPACE != "default"
