"""The hosted JupyterLab image on a real Docker engine.

Its packages, JupyterLab, and the practice cluster started inside by the notebook user without
privileges or capabilities.
"""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest
import requests
import yaml

from autograder import REPO_ROOT
from autograder.build import hostedimage
from autograder.lab import images
from autograder.shared.binaries import PRACTICE_BINARIES
from autograder.shared.pins import ETCD_VERSION, KUBERNETES_VERSION, KWOK_VERSION

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# conda-forge names of Python packages whose pip names differ.
CONDA_TO_PIP = {"python-kubernetes": "kubernetes", "docker-py": "docker"}
# environment.yml entries that are not Python packages: the interpreter, pip, and the cluster
# binaries the image builds at the lab's own pins instead (checked by version below).
NOT_FROM_PIP = {"python", "pip", "kind", "kubernetes-client", "kubernetes-server", "etcd", "go"}
DEPLOY_AND_PREDICT = """
import json
import subprocess
from autograder.lab import connect
from autograder.lab.traffic import port_forward
from autograder.course.steps import deploy_first_app
lab = connect("practice", namespace="hosted-check")
deploy_first_app(lab)
ready = lab.apps.read_namespaced_deployment("ml-api", lab.namespace).status.ready_replicas
listed = subprocess.run(["kubectl", "get", "pods", "-o", "name"],
                        capture_output=True, text=True, check=True)
with port_forward(lab) as forward:
    print(json.dumps({"ready": ready, "kubectl get pods": len(listed.stdout.split()),
                      "answer": forward.predict([1, 2, 3, 4, 5])}))
"""
# /proc/PID/status truncates names to 15 characters.
CONTROL_PLANE = {"kube-apiserver", "kube-controller", "kube-scheduler", "etcd", "kwok-controller"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def environment_pins() -> dict[str, str]:
    """environment.yml's pinned Python packages, by pip name; an unpinned one fails here."""
    pins, unpinned = {}, []
    for entry in yaml.safe_load((REPO_ROOT / "environment.yml").read_text())["dependencies"]:
        if not isinstance(entry, str):
            continue  # the pip: section (the project itself)
        name, _, version = entry.partition("==")
        if name.split("=")[0] in NOT_FROM_PIP:
            continue
        if not version:
            unpinned.append(entry)
        pins[normalized(CONDA_TO_PIP.get(name, name))] = version
    assert not unpinned, f"environment.yml: pin these as name==version: {unpinned}"
    return pins


def requirement_pins() -> dict[str, str]:
    lines = (REPO_ROOT / "binder" / "requirements.txt").read_text().splitlines()
    return {
        normalized(name): version
        for name, version in (
            line.split("==") for line in lines if line.strip() and not line.startswith("#")
        )
    }


@pytest.fixture(scope="module")
def image() -> hostedimage.HostedBuild:
    """The hosted image as `make hosted-image` built it (every layer cached then: seconds)."""
    return hostedimage.build()


def in_image(image: hostedimage.HostedBuild, *command: str, **options: str) -> str:
    return (
        images.docker_client()
        .containers.run(image.tag, list(command), remove=True, **options)
        .decode()
    )


def test_the_build_context_leaves_out_what_dockerignore_names_and_carries_cached_binaries(
    tmp_path: Path,
) -> None:
    fake = tmp_path / "kwok"
    fake.write_bytes(b"#!/bin/sh\n")
    with tarfile.open(
        hostedimage.build_context(REPO_ROOT, {"kwok": fake}, tmp_path / "context.tar")
    ) as tar:
        names = set(tar.getnames())
    assert {
        "binder/Dockerfile",
        "binder/prebuilt/README.md",
        "binder/prebuilt/kwok",
        "environment.yml",
        "autograder/shared/gobuild.py",
        "notebooks/04-first-deployment.ipynb",
    } <= names
    assert not [
        name for name in names if name.split("/")[0] in (".git", ".venv") or "__pycache__" in name
    ]


def test_environment_yml_and_the_image_requirements_pin_the_same_versions() -> None:
    assert environment_pins() == requirement_pins()


def test_the_image_installs_the_packages_environment_yml_pins(
    image: hostedimage.HostedBuild,
) -> None:
    installed = {
        normalized(row["name"]): row["version"]
        for row in json.loads(in_image(image, "python", "-m", "pip", "list", "--format=json"))
    }
    assert {name: installed.get(name) for name in environment_pins()} == environment_pins()
    assert "k8s-ml-lesson01" in installed, "the project is installed as a package"
    assert in_image(image, "ls", "binder/prebuilt").split() == ["README.md"], (
        "binaries only once, in PATH"
    )
    python = yaml.safe_load((REPO_ROOT / "environment.yml").read_text())["dependencies"][0]
    assert (
        in_image(
            image,
            "python",
            "-c",
            "import sys; print(f'python={sys.version_info[0]}.{sys.version_info[1]}')",
        ).strip()
        == python
    )
    # A notebook's kernel (working in notebooks/) imports the installed package, not the checkout's.
    assert "-packages/autograder/" in in_image(
        image,
        "python",
        "-c",
        "import autograder; print(autograder.__file__)",
        working_dir="/home/jovyan/notebooks",
    )
    assert re.match(r"\d+\.", in_image(image, "jupyterhub-singleuser", "--version"))


def test_the_image_carries_the_practice_binaries_at_the_pinned_versions(
    image: hostedimage.HostedBuild,
) -> None:
    listed = in_image(
        image,
        "python",
        "-c",
        "from autograder.shared import binaries; "
        f"print(*(binaries.find(name) for name in {PRACTICE_BINARIES!r}))",
    ).split()
    assert listed == [f"/opt/k8s-ml-lab/bin/{name}" for name in PRACTICE_BINARIES]
    assert f"v{KUBERNETES_VERSION}" in in_image(image, "kubectl", "version", "--client")
    assert f"v{KUBERNETES_VERSION}" in in_image(image, "kube-apiserver", "--version")
    assert ETCD_VERSION in in_image(image, "etcd", "--version")
    assert KWOK_VERSION in in_image(image, "kwokctl", "--version")


def test_jupyterlab_answers_as_the_notebook_user_and_opens_on_the_notebooks(
    image: hostedimage.HostedBuild,
) -> None:
    with hostedimage.running(image.tag) as lab:
        status = requests.get(f"{lab.url}/api/status", params={"token": lab.token}, timeout=10)
        assert status.status_code == 200 and "started" in status.json()
        home = requests.get(
            f"{lab.url}/", params={"token": lab.token}, allow_redirects=False, timeout=10
        )
        assert home.headers["Location"].split("?")[0].endswith("/lab/tree/notebooks")
        listing = requests.get(
            f"{lab.url}/api/contents/notebooks", params={"token": lab.token}, timeout=10
        ).json()
        assert "04-first-deployment.ipynb" in {item["name"] for item in listing["content"]}
        server = [row for row in lab.process_rights() if row["pid"] == 1]
        assert server and server[0]["uid"] == hostedimage.NB_UID and server[0]["CapEff"] == 0


def test_binders_own_command_serves_jupyterlab_too(image: hostedimage.HostedBuild) -> None:
    """Binder and repo2docker start `jupyter notebook --ip 0.0.0.0 --port 8888`, not the CMD."""
    with hostedimage.running(
        image.tag, command=["jupyter", "notebook", "--ip", "0.0.0.0", "--port", "8888"]
    ) as lab:
        assert (
            requests.get(f"{lab.url}/lab", params={"token": lab.token}, timeout=10).status_code
            == 200
        )


@pytest.mark.parametrize(
    "rights",
    [{}, {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges"]}],
    ids=["docker-defaults", "all-capabilities-dropped"],
)
def test_practice_cluster_serves_the_model_server_run_by_the_unprivileged_user(
    image: hostedimage.HostedBuild, rights: dict
) -> None:
    with hostedimage.running(image.tag, **rights) as lab:
        seconds = lab.cluster_up()
        output = lab.python(DEPLOY_AND_PREDICT)
        result = json.loads(
            next(line for line in reversed(output.splitlines()) if line.startswith("{"))
        )
        assert result == {
            "ready": 3,
            "kubectl get pods": 3,
            "answer": {"prediction": 15.0, "model_version": "v1.0"},
        }
        processes = lab.process_rights()
        sockets = lab.listening()
        at_start = lab.exec("cat", "/home/jovyan/.cache/k8s-ml-lab/practice-at-start.log")
        lab.exec("python", "-m", "autograder", "cluster", "down", "--provider", "practice")
        after_down = lab.process_rights()
    assert "Practice cluster" in at_start, (
        "the Jupyter server started the practice cluster in the background"
    )
    print(f"practice cluster up in {seconds:.1f} s; processes while it ran:")
    for row in processes:
        print(
            f"  {row['name']:<16} uid {row['uid']} CapEff {row['CapEff']:#x} CapPrm "
            f"{row['CapPrm']:#x} CapBnd {row['CapBnd']:#x} NoNewPrivs {row['no_new_privs']}"
        )
    assert {row["name"] for row in processes} >= CONTROL_PLANE
    # A hub's other servers share its pod network: only JupyterLab (behind its token) may face it.
    exposed = [
        row
        for row in sockets
        if row[0] not in ("127.0.0.1", "::1") and row[1] != hostedimage.LAB_PORT
    ]
    assert len(sockets) > len(CONTROL_PLANE) and not exposed, (
        f"listening beyond loopback: {exposed}"
    )
    assert {row["uid"] for row in processes} == {hostedimage.NB_UID}
    assert all(row["CapEff"] == row["CapPrm"] == row["CapAmb"] == 0 for row in processes)
    if rights:
        assert all(row["CapBnd"] == 0 and row["no_new_privs"] == "1" for row in processes)
    assert not [row for row in after_down if row["state"] == "Z"], (
        "PID 1 (tini) reaps the cluster's processes"
    )
    assert not CONTROL_PLANE & {row["name"] for row in after_down}
