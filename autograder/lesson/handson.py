"""Self-checks for a student's app.py, Dockerfile, deployment.yaml: hints at their lines."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from autograder.lab import images, workloads
from autograder.lesson import manifests
from autograder.lesson.checks import LESSON_LIMITS, LESSON_REQUESTS, CheckResult
from autograder.shared.provider import Lab

APP_PROBE = """
import json, sys, traceback, types
path = sys.argv[1]
try:
    # Compiled from the file as it is now: cached bytecode of an app.py rewritten within the same
    # second at the same size (a one-word fix) would pass for the new file.
    module = sys.modules["student_app"] = types.ModuleType("student_app")
    module.__file__ = path
    with open(path, "rb") as source:
        exec(compile(source.read(), path, "exec"), module.__dict__)
    tester = module.app.test_client()
    answers = [tester.post("/predict", json={"features": [1, 2, 3, 4, 5]}),
               tester.post("/predict", json={"features": [2, 4, 6.5]}), tester.get("/health")]
    print(json.dumps({"answers": [[a.status_code, a.get_json(silent=True)] for a in answers]}))
except BaseException as error:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename == path]
    where = frames[-1] if frames else None
    print(json.dumps({"error": f"{type(error).__name__}: {error}",
                      "line": where.lineno if where else None,
                      "code": where.line if where else None}))
"""

DEPLOYMENT_FIELDS = {  # what the lesson's Deployment must say, by path
    "metadata.name": "ml-api",
    "spec.replicas": 3,
    "spec.selector.matchLabels.app": "ml-api",
    "spec.template.metadata.labels.app": "ml-api",
    "spec.template.spec.containers.0.name": "ml-api",
    "spec.template.spec.containers.0.ports.0.containerPort": 8080,
    "spec.template.spec.containers.0.readinessProbe.httpGet.path": "/health",
    "spec.template.spec.containers.0.readinessProbe.httpGet.port": 8080,
    "spec.template.spec.containers.0.resources.requests.cpu": "100m",
    "spec.template.spec.containers.0.resources.requests.memory": "128Mi",
    "spec.template.spec.containers.0.resources.limits.cpu": "200m",
    "spec.template.spec.containers.0.resources.limits.memory": "256Mi",
}


def _line_of(text: str, key: str) -> str:
    """Where `key:` first appears in the student's file, as 'line N: ...' (or nothing)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.match(rf"\s*-?\s*{re.escape(key)}\s*:", line):
            return f" (line {number}: {line.strip()!r})"
    return ""


def app_answers(path: Path | str, version: str = "v1.0") -> CheckResult:
    """Import the student's app.py in a fresh Python, call it with Flask's test client (step 1)."""
    path = Path(path).resolve()
    if not path.is_file():
        return CheckResult(
            "app_answers", False, f"no {path.name} in {path.parent}: run the %%writefile cell first"
        )
    done = subprocess.run(
        [sys.executable, "-c", APP_PROBE, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if not lines:
        return CheckResult(
            "app_answers", False, f"importing {path.name} stopped Python: {done.stderr[-300:]}"
        )
    found = json.loads(lines[-1])
    if "error" in found:
        where = (
            f"line {found['line']} of {path.name} ({found['code']!r})"
            if found["line"]
            else path.name
        )
        return CheckResult("app_answers", False, f"{where} raised {found['error']}")
    (status1, first), (status2, second), (status3, healthy) = found["answers"]
    wanted = [(first, 15.0, status1), (second, 12.5, status2)]
    for answer, total, status in wanted:
        if status != 200 or not isinstance(answer, dict):
            return CheckResult(
                "app_answers",
                False,
                f"POST /predict answered HTTP {status} {answer!r}: "
                "return jsonify({...}) from predict()",
            )
        if answer.get("prediction") != total:
            return CheckResult(
                "app_answers",
                False,
                f"/predict answered prediction {answer.get('prediction')!r} "
                f"where the sum of the features is {total}",
            )
        if answer.get("model_version") != version:
            return CheckResult(
                "app_answers",
                False,
                f"/predict says model_version {answer.get('model_version')!r}; "
                f"this step's app is {version!r}",
            )
    if status3 != 200 or healthy != {"status": "healthy"}:
        return CheckResult(
            "app_answers",
            False,
            f"GET /health answered HTTP {status3} {healthy!r}; "
            'it should answer {"status": "healthy"}',
        )
    return CheckResult(
        "app_answers",
        True,
        f"{path.name} answers /predict and /health as the contract says ({version})",
    )


def dockerfile_problems(folder: Path | str) -> CheckResult:
    """Read the student's Dockerfile as the lesson's build needs: base, app, deps, port, command."""
    dockerfile = Path(folder) / "Dockerfile"
    if not dockerfile.is_file():
        return CheckResult(
            "dockerfile", False, f"no Dockerfile in {folder}: run the %%writefile cell first"
        )
    text = dockerfile.read_text()
    instructions = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split(maxsplit=1)
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() not in {
            "FROM",
            "WORKDIR",
            "COPY",
            "ADD",
            "RUN",
            "ENV",
            "ARG",
            "EXPOSE",
            "CMD",
            "ENTRYPOINT",
            "USER",
            "LABEL",
            "HEALTHCHECK",
        }:
            return CheckResult(
                "dockerfile",
                False,
                f"line {number}: {line.strip()!r} is not a Dockerfile "
                "instruction (FROM, WORKDIR, COPY, RUN, EXPOSE, CMD, ...)",
            )
        instructions.append((words[0].upper(), words[1] if len(words) > 1 else "", number))
    kinds = [kind for kind, _, _ in instructions]
    if not kinds or kinds[0] not in ("FROM", "ARG"):
        return CheckResult(
            "dockerfile",
            False,
            "a Dockerfile starts with FROM: the base image, e.g. FROM python:3.11-slim",
        )
    copied = " ".join(rest for kind, rest, _ in instructions if kind in ("COPY", "ADD"))
    for needed in ("requirements.txt", "app.py"):
        if needed not in copied and "." not in copied.split():
            return CheckResult("dockerfile", False, f"nothing COPYs {needed} into the image")
    if not any(kind == "RUN" and "requirements.txt" in rest for kind, rest, _ in instructions):
        return CheckResult(
            "dockerfile",
            False,
            "install the app's dependencies: RUN pip install -r requirements.txt",
        )
    if not any(
        kind in ("CMD", "ENTRYPOINT") and "app.py" in rest for kind, rest, _ in instructions
    ):
        return CheckResult(
            "dockerfile", False, 'say how the container starts: CMD ["python", "app.py"]'
        )
    return CheckResult(
        "dockerfile", True, f"{dockerfile} has a base, the app, its dependencies and a command"
    )


def _unknown_fields(value: Any, model: str, path: str = "") -> list[str]:
    """Keys the Kubernetes API does not know under `model` (strict `kubectl apply` rejects them)."""
    if model.lower().startswith("list[") and isinstance(value, list):
        return [
            u
            for i, item in enumerate(value)
            for u in _unknown_fields(item, model[5:-1], f"{path}[{i}]")
        ]
    cls = getattr(client, model, None) if model.startswith("V1") else None
    if cls is None or not isinstance(value, dict):
        return []
    by_json = {json_key: cls.openapi_types[attr] for attr, json_key in cls.attribute_map.items()}
    unknown = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in by_json:
            unknown.append(where)
        else:
            unknown += _unknown_fields(item, by_json[key], where)
    return unknown


def _at(document: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        elif isinstance(document, dict) and part in document:
            document = document[part]
        else:
            return None
    return document


def manifest_problems(path: Path | str, image: str = "ml-api:v1") -> CheckResult:
    """Check the student's deployment.yaml before applying: YAML, known fields, lesson values."""
    path = Path(path)
    if not path.is_file():
        return CheckResult(
            "manifest", False, f"no {path.name} in {path.parent}: run the %%writefile cell first"
        )
    text = path.read_text()
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark
        line = text.splitlines()[mark.line] if mark and mark.line < len(text.splitlines()) else ""
        return CheckResult(
            "manifest",
            False,
            f"{path.name} is not valid YAML at line {mark.line + 1 if mark else '?'} "
            f"({line.strip()!r}): {error.problem}; check the indentation (spaces, no tabs)",
        )
    deployments = [
        doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "Deployment"
    ]
    if not deployments:
        return CheckResult("manifest", False, f"{path.name} has no document with kind: Deployment")
    deployment = deployments[0]
    if deployment.get("apiVersion") != "apps/v1":
        return CheckResult(
            "manifest",
            False,
            f"apiVersion is {deployment.get('apiVersion')!r}{_line_of(text, 'apiVersion')}; "
            "Deployments are apps/v1",
        )
    unknown = _unknown_fields(deployment, "V1Deployment")
    if unknown:
        field = unknown[0]
        return CheckResult(
            "manifest",
            False,
            f"the API has no field {field}{_line_of(text, field.split('.')[-1].split('[')[0])}: "
            "check its spelling and indentation",
        )
    for field, wanted in {
        **DEPLOYMENT_FIELDS,
        "spec.template.spec.containers.0.image": image,
    }.items():
        found = _at(deployment, field)
        if found != wanted:
            key = field.split(".")[-1]
            return CheckResult(
                "manifest",
                False,
                f"{field} is {found!r}{_line_of(text, key)}; the lesson's "
                f"Deployment says {wanted!r}",
            )
    return CheckResult(
        "manifest", True, f"{path.name} parses and describes the lesson's Deployment of {image}"
    )


def answer_matches(answer: Any, total: float, version: str) -> CheckResult:
    """The model server's answer through the Service, compared with what the step expects."""
    if not isinstance(answer, dict):
        return CheckResult(
            "answer",
            False,
            f"expected the JSON answer of /predict as a dict, got {answer!r}: "
            "return response.json()",
        )
    if answer.get("prediction") != total or answer.get("model_version") != version:
        return CheckResult(
            "answer",
            False,
            f"the Service answered {answer}; expected prediction {total} from "
            f"model_version {version!r}: is the right image running behind it?",
        )
    return CheckResult("answer", True, f"the Service answered {answer}")


def redeploy_first_deployment(lab: Lab, work: Path) -> str:
    """Notebook 4's Deployment and Service again, for a notebook 5 in a namespace without them.

    The student's folder where it passes its self-checks, the lesson's ml-api:v1 and manifest where
    not.
    """
    said = []
    if images.can_load(lab) and dockerfile_problems(work):
        images.load_into_cluster(lab, "ml-api:v1", context=work)
        said.append(f"your {work}/Dockerfile built as ml-api:v1")
    else:
        said.append("the lesson's ml-api:v1 (your Dockerfile is not finished)")
    manifest = work / "deployment.yaml"
    if manifest_problems(manifest):
        documents = workloads.load_manifests(manifest)
        said.append(f"your {manifest} applied")
    else:
        documents = [
            manifests.deployment(
                "ml-api", replicas=3, requests=LESSON_REQUESTS, limits=LESSON_LIMITS
            )
        ]
        said.append("the lesson's Deployment (your deployment.yaml is not finished)")
    workloads.apply(lab, [*documents, manifests.service("ml-api-service", "ml-api")])
    return "; ".join(said)
