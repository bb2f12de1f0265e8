"""autograder.lesson.checks: pure logic without a cluster, then each check on the practice one."""

from __future__ import annotations

import copy
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kubernetes import client, utils

from autograder import MANIFESTS
from autograder.course import actions
from autograder.grading import sandbox
from autograder.lab import workloads
from autograder.lesson import checks, observe
from autograder.lesson.checks import CheckResult
from autograder.shared import binaries, kubeconfig
from autograder.shared.k8s import REVISION


def test_result_is_truthy_only_when_passed() -> None:
    assert CheckResult("x", True, "ok")
    assert not CheckResult("x", False, "do this")
    assert str(CheckResult("x", False, "do this")) == "FAIL x: do this"


def test_assert_passed_raises_with_the_hint() -> None:
    assert CheckResult("x", True, "ok").assert_passed().passed
    with pytest.raises(AssertionError, match="scale it"):
        CheckResult("x", False, "scale it").assert_passed()


def test_quantities_compare_amounts_not_spellings() -> None:
    assert (
        checks.quantities_differ(
            {"cpu": "0.1", "memory": "128Mi"}, {"cpu": "100m", "memory": "128Mi"}
        )
        == []
    )
    assert checks.quantities_differ({"cpu": "200m"}, {"cpu": "100m", "memory": "128Mi"}) == [
        "cpu is 200m (want 100m)",
        "memory missing (want 128Mi)",
    ]
    assert checks.quantities_differ(None, {"cpu": "1"}) == ["cpu missing (want 1)"]


@pytest.mark.parametrize(
    ("message", "parsed"),
    [
        ("Scaled up replica set ml-api-5d8f9 from 3 to 5", ("up", "ml-api-5d8f9", "3", "5")),
        ("Scaled down replica set ml-api-5d8f9 from 5 to 3", ("down", "ml-api-5d8f9", "5", "3")),
        ("Scaled up replica set ml-api-5d8f9 to 3", ("up", "ml-api-5d8f9", None, "3")),
    ],
)
def test_scaling_event_messages_parse(message: str, parsed: tuple) -> None:
    match = checks.SCALING_EVENT.search(message)
    assert (match["way"], match["rs"], match["old"], match["new"]) == parsed


def test_eventually_waits_only_while_the_cluster_converges() -> None:
    answers = iter(
        [CheckResult("c", False, "1 of 3 ready", pending=True), CheckResult("c", True, "3 of 3")]
    )
    assert checks.eventually(lambda lab: next(answers), None, timeout=5, interval=0)
    calls = []
    settled = checks.eventually(
        lambda lab: calls.append(1) or CheckResult("c", False, "wrong image"),
        None,
        timeout=5,
        interval=0,
    )
    assert not settled and len(calls) == 1


def test_every_check_is_registered_by_name() -> None:
    assert set(checks.CHECKS) == {
        "deployment_ready",
        "service_routes",
        "scaled_to",
        "rolled_out",
        "rolled_back",
        "namespace_clean",
        "changed_with_kubectl",
        "changed_through_api",
    }


# --- against the real practice cluster -------------------------------------------------------


def _lesson_manifests() -> list[dict]:
    return workloads.load_manifests(MANIFESTS / "deployment.yaml", MANIFESTS / "service.yaml")


@pytest.mark.cluster
def test_checks_follow_the_lesson_from_start_to_cleanup(lab) -> None:
    assert "does not exist" in checks.deployment_ready(lab, "ml-api", replicas=3).message
    assert not checks.scaled_to(lab, "ml-api", 5)
    assert checks.namespace_clean(lab, "app=ml-api")
    assert (
        "no record of deployment/ml-api"
        in checks.namespace_clean(lab, "app=ml-api", deployed="ml-api").message
    )

    workloads.apply(lab, _lesson_manifests())
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    checks.eventually(checks.deployment_ready, lab, "ml-api", replicas=3).assert_passed()
    checks.eventually(checks.service_routes, lab, "ml-api-service", "ml-api").assert_passed()
    assert not checks.namespace_clean(lab, "app=ml-api")
    assert not checks.rolled_back(lab, "ml-api", "ml-api:v1", replaced="ml-api:v2")

    actions.scale(lab, "ml-api", 5)
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    checks.scaled_to(lab, "ml-api", 5).assert_passed()
    actions.scale(lab, "ml-api", 3)
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    after = checks.eventually(checks.scaled_to, lab, "ml-api", 5, timeout=10)
    assert after and "was scaled up to 5" in after.message

    actions.set_image(lab, "ml-api", "ml-api", "ml-api:v2")
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    checks.rolled_out(lab, "ml-api", "ml-api:v2", replaced="ml-api:v1").assert_passed()
    assert not checks.rolled_back(lab, "ml-api", "ml-api:v1", replaced="ml-api:v2")

    actions.rollback(lab, "ml-api")
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    checks.rolled_back(lab, "ml-api", "ml-api:v1", replaced="ml-api:v2").assert_passed()
    assert "runs 'ml-api:v1'" in checks.rolled_out(lab, "ml-api", "ml-api:v2").message

    actions.delete_by_label(lab, "app=ml-api")
    checks.eventually(
        checks.namespace_clean, lab, "app=ml-api", deployed="ml-api", timeout=60
    ).assert_passed()


def _kubectl(lab, *arguments: str) -> None:
    """The pinned kubectl in the lab's context and namespace, as a notebook's `!kubectl` runs it."""
    pinned = binaries.find("kubectl")
    assert pinned is not None, "kubectl is one of the binaries `make test` provides"
    subprocess.run(
        [str(pinned), "--context", lab.context, "-n", lab.namespace, *arguments],
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.cluster
def test_a_command_step_counts_only_when_kubectl_made_the_change(lab) -> None:
    workloads.apply(lab, _lesson_manifests()[:1])  # the lab's own server-side apply
    refused = checks.changed_with_kubectl(lab, "ml-api", "apply")
    assert not refused and "k8s-ml-lab" in refused.message
    actions.set_image(lab, "ml-api", "ml-api", "ml-api:v2")
    _kubectl(lab, "apply", "-f", str(MANIFESTS / "deployment.yaml"))  # back to v1, by kubectl
    checks.changed_with_kubectl(lab, "ml-api", "apply").assert_passed()
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    actions.scale(lab, "ml-api", 2)  # the Kubernetes client, as the course's own actions use it
    refused = checks.changed_with_kubectl(lab, "ml-api", "scale")
    assert not refused and "OpenAPI-Generator" in refused.message
    assert "run `kubectl scale deployment ml-api --replicas=N`" in refused.message
    _kubectl(lab, "scale", "deployment", "ml-api", "--replicas=3")
    checks.changed_with_kubectl(lab, "ml-api", "scale").assert_passed()

    actions.set_image(lab, "ml-api", "ml-api", "ml-api:v2")
    assert not checks.changed_with_kubectl(lab, "ml-api", "set image")
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    _kubectl(lab, "set", "image", "deployment/ml-api", "ml-api=ml-api:v1")
    checks.changed_with_kubectl(lab, "ml-api", "set image").assert_passed()
    assert not checks.changed_with_kubectl(lab, "ml-api", "rollout undo")
    workloads.wait_for_rollout(lab, "ml-api", progress=False)

    actions.rollback(lab, "ml-api")
    assert not checks.changed_with_kubectl(lab, "ml-api", "rollout undo")
    checks.changed_through_api(lab, "ml-api").assert_passed()
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    _kubectl(lab, "rollout", "undo", "deployment/ml-api")
    checks.changed_with_kubectl(lab, "ml-api", "rollout undo").assert_passed()
    refused = checks.changed_through_api(lab, "ml-api")
    assert not refused and "patch_namespaced_deployment" in refused.message
    assert checks.changed_with_kubectl(lab, "ml-api", "scale"), (
        "an image change leaves the replicas' writer"
    )


@pytest.mark.cluster
def test_wrong_resources_selector_and_port_get_hints(lab) -> None:
    deployment, service = copy.deepcopy(_lesson_manifests())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["memory"] = "512Mi"
    service["spec"]["selector"] = {"app": "ml-api-typo"}
    service["spec"]["ports"][0]["targetPort"] = 80
    # A label only the cluster knows: the student reads the pods' labels;
    # the hint must not quote them.
    deployment["spec"]["template"]["metadata"]["labels"]["team"] = "read-me-off-the-cluster"
    workloads.apply(lab, [deployment, service])
    workloads.wait_for_rollout(lab, "ml-api", progress=False)

    result = checks.deployment_ready(lab, "ml-api", replicas=3)
    assert not result and "memory is 512Mi (want 256Mi)" in result.message
    result = checks.service_routes(lab, "ml-api-service", "ml-api")
    assert not result and "make the selector match" in result.message
    assert "--show-labels" in result.message and "read-me-off" not in result.message
    lab.core.patch_namespaced_service("ml-api-service", lab.namespace, {"spec": {"selector": None}})
    result = checks.service_routes(lab, "ml-api-service", "ml-api")
    assert not result and "has no selector" in result.message
    assert "read-me-off" not in result.message

    lab.core.patch_namespaced_service(
        "ml-api-service", lab.namespace, {"spec": {"selector": {"app": "ml-api"}}}
    )
    result = checks.service_routes(lab, "ml-api-service", "ml-api")
    assert not result and "set targetPort: 8080" in result.message


@pytest.mark.cluster
def test_deployment_created_at_five_is_scaled_but_not_ready_for_three(lab) -> None:
    deployment, _ = copy.deepcopy(_lesson_manifests())
    deployment["spec"]["replicas"] = 5
    workloads.apply(lab, [deployment])
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    assert checks.scaled_to(lab, "ml-api", 5)
    result = checks.deployment_ready(lab, "ml-api", replicas=3)
    assert not result and "asks for 5 replicas" in result.message


@pytest.mark.cluster
def test_a_rollout_that_cannot_finish_fails_at_once_and_its_fix_passes(lab) -> None:
    """No node fits the pod: waiting cannot help, so the check says why now, not later."""
    deployment, _ = copy.deepcopy(_lesson_manifests())
    deployment["spec"]["replicas"] = 1
    resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
    resources["requests"]["cpu"] = resources["limits"]["cpu"] = "64"
    workloads.apply(lab, [deployment])
    result = checks.eventually(checks.scaled_to, lab, "ml-api", 1, timeout=60)
    assert not result and not result.pending
    assert "cannot finish rolling out" in result.message and "Insufficient cpu" in result.message

    resources["requests"]["cpu"], resources["limits"]["cpu"] = "100m", "200m"
    workloads.apply(lab, [deployment])
    checks.eventually(checks.scaled_to, lab, "ml-api", 1, timeout=90).assert_passed()


@pytest.mark.cluster
def test_an_object_created_without_namespace_is_found_in_default_with_a_hint(lab) -> None:
    deployment, service = copy.deepcopy(_lesson_manifests())
    name = f"stray-{uuid.uuid4().hex[:6]}"
    deployment["metadata"]["name"] = service["metadata"]["name"] = name
    utils.create_from_dict(lab.api, deployment)  # the student's mistake: no namespace=
    utils.create_from_dict(lab.api, service)
    try:
        for result, kind in (
            (checks.deployment_ready(lab, name), "deployment"),
            (checks.service_routes(lab, name, name), "service"),
        ):
            assert not result
            assert (
                f"found {kind}/{name} in namespace 'default'; the lab works in {lab.namespace!r}"
                in result.message
            )
            assert (
                "without namespace=" in result.message
                and f"kubectl delete {kind}/{name} -n default" in result.message
            )
    finally:
        lab.apps.delete_namespaced_deployment(name, "default")
        lab.core.delete_namespaced_service(name, "default")
    assert "does not exist in namespace" in checks.deployment_ready(lab, name).message


def _kubectl(lab, *args: str) -> subprocess.CompletedProcess[str]:
    """kubectl as a notebook's `!kubectl` runs it: the lab's kubeconfig, its context's namespace."""
    pinned = binaries.find("kubectl")
    assert pinned is not None and lab.kubeconfig_file is not None
    return subprocess.run(
        [str(pinned), "--kubeconfig", str(lab.kubeconfig_file), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.cluster
def test_a_manifest_typed_into_another_namespace_is_found_there_and_named(
    lab, tmp_path: Path
) -> None:
    deployment, _ = copy.deepcopy(_lesson_manifests())
    name = deployment["metadata"]["name"] = f"typed-{uuid.uuid4().hex[:6]}"
    deployment["spec"]["replicas"] = 0
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(deployment))
    typed = _kubectl(lab, "apply", "-n", "kube-public", "-f", str(tmp_path / "deployment.yaml"))
    assert typed.returncode == 0, typed.stderr
    try:
        result = checks.deployment_ready(lab, name)
        assert not result and not result.pending
        assert result.message.startswith(
            f"found deployment/{name} in namespace 'kube-public'; the lab "
            f"works in {lab.namespace!r}"
        )
        assert "named namespace 'kube-public'" in result.message and "without -n" in result.message
    finally:
        lab.apps.delete_namespaced_deployment(name, "kube-public")


@pytest.mark.cluster
def test_a_mistyped_tag_is_named_and_a_manifest_applied_twice_changes_nothing(lab) -> None:
    manifest = str(MANIFESTS / "deployment.yaml")
    first, again = _kubectl(lab, "apply", "-f", manifest), _kubectl(lab, "apply", "-f", manifest)
    assert first.returncode == again.returncode == 0, first.stderr + again.stderr
    assert "deployment.apps/ml-api unchanged" in again.stdout
    workloads.wait_for_rollout(lab, "ml-api", progress=False)

    typo = _kubectl(lab, "set", "image", "deployment/ml-api", "ml-api=ml-api:v2.0")
    assert typo.returncode == 0, typo.stderr
    result = checks.rolled_out(lab, "ml-api", "ml-api:v2", replaced="ml-api:v1")
    assert not result
    assert (
        "runs 'ml-api:v2.0', not 'ml-api:v2'" in result.message
        and "a typo in 'ml-api:v2.0'" in result.message
    )
    # An earlier revision's image is no typo: rolling back to v1 and asking
    # for v2 says only what runs.
    assert _kubectl(lab, "rollout", "undo", "deployment/ml-api").returncode == 0
    workloads.wait_for_rollout(lab, "ml-api", progress=False)
    result = checks.rolled_out(lab, "ml-api", "ml-api:v2")
    assert "runs 'ml-api:v1', not 'ml-api:v2'" in result.message and "typo" not in result.message


@pytest.mark.cluster
def test_in_grading_the_hint_never_reads_outside_the_submissions_namespace(
    lab, practice_cluster, tmp_path: Path
) -> None:
    """The grader's reader may read only its submission's namespace.

    A missing object's hint says nothing of a namesake in `default` (another piece of work's),
    though at home the same hint finds it there.
    """
    deployment = copy.deepcopy(_lesson_manifests()[0])
    name = deployment["metadata"]["name"] = f"theirs-{uuid.uuid4().hex[:6]}"
    deployment["spec"]["replicas"] = 0
    admin = kubeconfig.api_client(practice_cluster.context)
    client.AppsV1Api(admin).create_namespaced_deployment("default", deployment)
    sandbox.ensure_node_access(admin)
    box = sandbox.create(
        admin,
        f"grade-hint-{uuid.uuid4().hex[:6]}",
        course="hint",
        assignment="x",
        student="s",
        workdir=tmp_path,
    )
    try:
        reader = kubeconfig.api_client(config_file=box.reader_kubeconfig)
        graded = SimpleNamespace(
            apps=client.AppsV1Api(reader), core=client.CoreV1Api(reader), namespace=box.namespace
        )
        assert (
            checks.deployment_ready(graded, name).message
            == f"deployment/{name} does not exist in namespace {box.namespace!r}; create it first"
        )
        at_home = SimpleNamespace(apps=lab.apps, core=lab.core, namespace=box.namespace)
        assert checks.deployment_ready(at_home, name).message.startswith(
            f"found deployment/{name} in namespace 'default'"
        )
    finally:
        sandbox.delete(admin, box.namespace)
        client.AppsV1Api(admin).delete_namespaced_deployment(name, "default")


def _pod(name: str, reason: str | None) -> client.V1Pod:
    waiting = client.V1ContainerStateWaiting(reason=reason, message=f"{reason} says why")
    state = client.V1ContainerState(waiting=waiting if reason else None)
    status = client.V1ContainerStatus(
        name="app", image="ml-api:v9", image_id="", ready=False, restart_count=0, state=state
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        status=client.V1PodStatus(container_statuses=[status]),
    )


def test_a_rollout_is_stuck_only_on_reasons_that_waiting_does_not_fix() -> None:
    assert workloads.stuck_reason([_pod("a", "ContainerCreating"), _pod("b", None)]) is None
    assert (
        workloads.stuck_reason([_pod("a", "ContainerCreating"), _pod("b", "ErrImagePull")]) is None
    )
    reason = workloads.stuck_reason([_pod("a", None), _pod("b", "CrashLoopBackOff")])
    assert reason == "pod b is in CrashLoopBackOff (CrashLoopBackOff says why)"


def _undone_lab() -> tuple[SimpleNamespace, client.V1Deployment]:
    """Right after `kubectl rollout undo` to v1, before the controller saw it: v2.0's pods stuck."""
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(
            name="ml-api", namespace="ns", uid="d", generation=4, annotations={REVISION: "3"}
        ),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": "ml-api"}),
            template=client.V1PodTemplateSpec(),
        ),
        status=client.V1DeploymentStatus(observed_generation=3),
    )
    owner = [client.V1OwnerReference(api_version="apps/v1", kind="Deployment", name="", uid="d")]
    sets = [
        SimpleNamespace(  # what a ReplicaSet shows of itself here
            metadata=client.V1ObjectMeta(
                annotations={REVISION: number},
                labels={"app": "ml-api", "pod-template-hash": template},
                owner_references=owner,
            )
        )
        for number, template in (("2", "v1hash"), ("3", "typohash"))
    ]

    def pods(namespace: str, label_selector: str) -> SimpleNamespace:
        stuck = [_pod("typo", "ErrImageNeverPull")] if "typohash" in label_selector else []
        return SimpleNamespace(items=stuck)

    lab = SimpleNamespace(
        namespace="ns",
        apps=SimpleNamespace(
            list_namespaced_replica_set=lambda *a, **k: SimpleNamespace(items=sets)
        ),
        core=SimpleNamespace(list_namespaced_pod=pods),
        sets=sets,
    )
    return lab, deployment


def test_a_rollback_is_never_stuck_on_the_pods_it_leaves() -> None:
    lab, deployment = _undone_lab()
    assert workloads.new_pods(lab, deployment) == []
    workloads.raise_if_stuck(lab, deployment)
    # The controller catches up: the v1 ReplicaSet becomes revision 4, and so does the Deployment.
    lab.sets[0].metadata.annotations[REVISION] = deployment.metadata.annotations[REVISION] = "4"
    deployment.status.observed_generation = 4
    assert workloads.new_pods(lab, deployment) == []
    workloads.raise_if_stuck(lab, deployment)
    # Had the rollout been the typo's own, its pods are what it waits on.
    deployment.metadata.annotations[REVISION] = "3"
    with pytest.raises(workloads.RolloutStuck, match="pod typo is in ErrImageNeverPull"):
        workloads.raise_if_stuck(lab, deployment)


ROLLOUT_WAITS = {  # every wait on a rollout a notebook calls, with a timeout past a cell's
    "wait_for_rollout": lambda lab: workloads.wait_for_rollout(
        lab, "ml-api", timeout=300, progress=False
    ),
    "watch_rollout": lambda lab: observe.watch_rollout(lab, "ml-api", timeout=300, live=False),
}


@pytest.mark.cluster
@pytest.mark.parametrize("wait", ROLLOUT_WAITS.values(), ids=ROLLOUT_WAITS.keys())
def test_waiting_for_a_rollout_of_an_image_never_loaded_ends_at_once_naming_it(lab, wait) -> None:
    missing = _lesson_manifests()[0]
    missing["spec"]["template"]["spec"]["containers"][0]["image"] = "ml-api:never-built"
    workloads.apply(lab, [missing])
    with pytest.raises(workloads.RolloutStuck, match=r"ml-api-.* is in ErrImageNeverPull"):
        wait(lab)


@pytest.mark.cluster
@pytest.mark.parametrize("wait", ROLLOUT_WAITS.values(), ids=ROLLOUT_WAITS.keys())
def test_waiting_for_a_rollout_of_a_deployment_never_applied_ends_at_once_naming_it(
    lab, wait
) -> None:
    with pytest.raises(workloads.DeploymentMissing, match=r"deployment/ml-api is not in namespace"):
        wait(lab)
