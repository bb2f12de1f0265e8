"""Traffic on the practice cluster: port-forward through the Service answers from the student's app,
with the version of the image the serving pods run, across a rolling update and an undo."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from kubernetes import client

from autograder import MANIFESTS
from autograder.course import actions
from autograder.lab import images, traffic
from autograder.lab import workloads as w
from autograder.lesson import troubleshoot
from autograder.modelserver import SOURCE
from autograder.practice import catalog, supervise
from autograder.practice.cluster import Practice
from autograder.shared import binaries, kubeconfig, ports
from autograder.shared.provider import Lab

pytestmark = pytest.mark.cluster

# Fixed tags: re-loading them each run replaces their record instead of piling up new ones.
V1, V2 = "t-traffic-ml-api:v1", "t-traffic-ml-api:v2"


@pytest.fixture(scope="module")
def router(practice_cluster: Practice) -> Iterator[None]:
    """Stop the traffic router after these tests if they were the ones that started it."""
    already = supervise.router_pid(practice_cluster.context) is not None
    yield
    if not already:
        supervise.stop_router(practice_cluster.context)


@pytest.fixture
def loaded(lab: Lab, router: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Lab:
    """v1 and v2 of the reference server loaded into the practice cluster from source, no Docker."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    images.load_into_cluster(lab, V1, context=SOURCE, version="v1.0")
    images.load_into_cluster(lab, V2, context=SOURCE, version="v2.0")
    return lab


def deploy(lab: Lab, image: str, wait: bool = True) -> None:
    docs = w.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml")
    docs[0]["spec"]["template"]["spec"]["containers"][0]["image"] = image
    w.apply(lab, docs)
    if wait:
        w.wait_for_rollout(lab, "ml-api", progress=False)


def answer(lab: Lab) -> dict:
    with traffic.port_forward(lab) as forward:
        assert forward.health() == {"status": "healthy"}
        return forward.predict([1, 2, 3, 4, 5])


def test_port_forward_answers_with_the_version_across_update_and_undo(loaded: Lab) -> None:
    lab = loaded
    deploy(lab, V1)
    assert answer(lab) == {"prediction": 15.0, "model_version": "v1.0"}

    actions.set_image(lab, "ml-api", "ml-api", V2)
    w.wait_for_rollout(lab, "ml-api", progress=False)
    assert answer(lab) == {"prediction": 15.0, "model_version": "v2.0"}

    actions.rollback(lab, "ml-api")
    w.wait_for_rollout(lab, "ml-api", progress=False)
    assert answer(lab) == {"prediction": 15.0, "model_version": "v1.0"}


def test_a_port_forward_typed_in_the_background_answers_and_a_missing_one_is_named(
    loaded: Lab,
) -> None:
    """What notebooks 4 and 6 have students type: `timeout 5 kubectl port-forward ... & sleep 1`."""
    deploy(loaded, V1)
    traffic.wait_until_forwardable(loaded)
    port, silent = ports.free_port(), ports.free_port()
    typed = (
        f"timeout 5 {binaries.find('kubectl')} --kubeconfig {loaded.kubeconfig_file} port-forward "
        f"service/ml-api-service {port}:80 >/dev/null 2>&1 & sleep 1"
    )
    subprocess.run(typed, shell=True, check=True, timeout=30)
    assert traffic.health_when_listening(f"http://127.0.0.1:{port}") == {"status": "healthy"}
    hint = traffic.health_when_listening(f"http://127.0.0.1:{silent}", timeout=0.5)
    assert isinstance(hint, str) and "is `kubectl port-forward` running in the background" in hint


def test_a_kernel_that_sees_the_practice_cluster_as_existing_still_waits_for_routes(
    loaded: Lab,
) -> None:
    """A grader's student kernel connects as "existing"; its port-forward must not race routing."""
    as_existing = Lab(
        provider="existing", context=loaded.context, namespace=loaded.namespace, api=loaded.api
    )
    assert catalog.serves_kwok_routes(as_existing)
    deploy(as_existing, V1)
    assert answer(as_existing) == {"prediction": 15.0, "model_version": "v1.0"}


def test_every_pod_is_routed_to_the_server_of_its_own_image(loaded: Lab) -> None:
    lab = loaded
    deploy(lab, V2)
    custom = client.CustomObjectsApi(lab.api)
    catalog.wait_routed(lab, "app=ml-api")
    forwards = custom.list_namespaced_custom_object(*catalog.KWOK, lab.namespace, "portforwards")[
        "items"
    ]
    pods = lab.core.list_namespaced_pod(lab.namespace, label_selector="app=ml-api").items
    assert {f["metadata"]["name"] for f in forwards} >= {p.metadata.name for p in pods}
    targets = {f["spec"]["forwards"][0]["target"]["port"] for f in forwards}
    assert len(targets) == len(pods), "each pod has a process of its own"
    assert all(f["spec"]["forwards"][0]["ports"] == [8080] for f in forwards)


def test_the_images_built_from_source_are_the_namespaces_own(loaded: Lab) -> None:
    assert {V1, V2} <= catalog.loaded_images(loaded)
    assert not {V1, V2} & set(catalog.catalog(loaded.core)), (
        "a namespace's build is not the cluster's"
    )


def test_an_image_never_loaded_is_explained(lab: Lab, router: None) -> None:
    deploy(lab, "t-traffic-never-loaded:v9", wait=False)  # its pods never start
    with pytest.raises(catalog.ImageNotLoaded, match=r"never loaded.*ErrImageNeverPull"):
        with traffic.port_forward(lab):
            pass
    assert any("ErrImageNeverPull" in problem for problem in troubleshoot.image_problems(lab))


def test_a_busy_local_port_is_explained(loaded: Lab) -> None:
    deploy(loaded, V1)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ports.PortBusy, match=f"port {port} is already in use"):
            with traffic.port_forward(loaded, local_port=port):
                pass


def test_loading_without_docker_or_source_says_what_to_pass(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(images.ImageMissing, match="pass context="):
        images.load_into_cluster(lab, "t-traffic-nowhere:v1")


@pytest.mark.docker
def test_an_image_built_with_docker_serves_the_app_inside_it(lab: Lab, router: None) -> None:
    tag = "t-traffic-docker-ml-api:v2"
    images.build(tag, SOURCE, "v2.0", progress=False)
    try:
        images.load_into_cluster(lab, tag)
        deploy(lab, tag)
        assert answer(lab) == {"prediction": 15.0, "model_version": "v2.0"}
    finally:
        images.docker_client().images.remove(tag)


@pytest.fixture
def own_cluster() -> Iterator[Lab]:
    """A practice cluster of this test's own, so stopping its router disturbs nobody else."""
    practice = Practice(
        cluster=f"t-traffic-{uuid.uuid4().hex[:6]}", gpu_nodes=False, make_current=False
    )
    practice.up()
    try:
        yield Lab(
            provider="practice",
            context=practice.context,
            namespace="default",
            api=kubeconfig.api_client(practice.context, practice.kubeconfig_file),
        )
    finally:
        supervise.stop_router(practice.context)
        practice.down()


def test_kubectl_logs_shows_the_requests_and_no_model_server_outlives_the_router(
    own_cluster: Lab,
) -> None:
    images.load_into_cluster(own_cluster, V1, context=SOURCE, version="v1.0")
    deploy(own_cluster, V1)
    assert answer(own_cluster)["model_version"] == "v1.0"
    # kubectl picks one of the three pods behind the Service: the request is in that pod's log.
    logs = " ".join(
        own_cluster.core.read_namespaced_pod_log(pod.metadata.name, "default")
        for pod in own_cluster.core.list_namespaced_pod(
            "default", label_selector="app=ml-api"
        ).items
    )
    assert "POST /predict" in logs

    servers = psutil.Process(supervise.router_pid(own_cluster.context)).children()
    assert servers, "the router runs a model server for v1"
    assert supervise.stop_router(own_cluster.context)
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive
