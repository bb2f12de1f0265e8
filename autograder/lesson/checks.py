"""Cluster-state checks for Lesson 01: self-check cells and the grader ask the same questions.

Each check reads the cluster once and returns a `CheckResult`: truthy when the step is done,
otherwise carrying a hint that says what to do next. Checks never write to the cluster, so the
grader can run them with read-only credentials. Checks that judge a past step (a scale-up, a
rollback) read what the cluster itself recorded: the controllers' events and the revision
annotations of the Deployment's ReplicaSets.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client
from kubernetes.utils import parse_quantity

from autograder.lab.workloads import NamespacedPods, history, new_pods, rollout_state
from autograder.shared import k8s
from autograder.shared.waiting import CONVERGING_INTERVAL, poll

SCALING_EVENT = re.compile(
    r"Scaled (?P<way>up|down) replica set (?P<rs>\S+) (?:from (?P<old>\d+) )?to (?P<new>\d+)"
)

LESSON_REQUESTS = {"cpu": "100m", "memory": "128Mi"}
LESSON_LIMITS = {"cpu": "200m", "memory": "256Mi"}
LESSON_PORT = 8080
# Where a stray object lands: the client's default without `namespace=`, and the
# namespaces every cluster has, which a typed `-n` can name (the lab's other namespaces
# may be another piece of work's).
STRAY_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


class LabLike(NamespacedPods, Protocol):
    """What the checks need: clients and the namespace to look in (a `Lab` has them)."""


@dataclass(frozen=True)
class CheckResult:
    """The verdict of one check: truthy when passed; the message says why or what to do."""

    check: str
    passed: bool
    message: str
    pending: bool = False

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.check}: {self.message}"

    __repr__ = __str__

    def assert_passed(self) -> CheckResult:
        """Raise `CheckFailed` (an AssertionError) with the hint unless passed: for hidden tests."""
        if not self.passed:
            raise CheckFailed(self)
        return self


class CheckFailed(AssertionError):
    """A failed check, raised by a test; the grader retries while the result is only pending."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(str(result))
        self.result = result


class _Failed(Exception):
    """Internal: a check stops at the first unmet condition with its hint."""


class _Pending(_Failed):
    """Internal: unmet only as the controllers have not caught up yet; asking again may pass."""


def _check(function: Callable[..., str]) -> Callable[..., CheckResult]:
    """Turn a function that returns a success message or raises _Failed into a check."""

    def run(lab: LabLike, *args: Any, **kwargs: Any) -> CheckResult:
        try:
            return CheckResult(function.__name__, True, function(lab, *args, **kwargs))
        except _Failed as failure:
            return CheckResult(
                function.__name__, False, str(failure), pending=isinstance(failure, _Pending)
            )

    run.__name__ = run.__qualname__ = function.__name__
    run.__doc__ = function.__doc__
    run.__wrapped__ = function  # type: ignore[attr-defined]
    CHECKS[function.__name__] = run
    return run


CHECKS: dict[str, Callable[..., CheckResult]] = {}


def _read(what: str, reader: Callable[..., Any], *args: Any) -> Any:
    """Read one object; missing or forbidden becomes a hint, anything else is a real error."""
    try:
        return reader(*args)
    except client.ApiException as error:
        if error.status == 404:
            raise _Failed(_missing(what, reader, *args)) from None
        if error.status == 403:
            raise _Failed(
                f"not allowed to read {what} in namespace {args[-1]!r}: "
                "are you connected with the lab's kubeconfig?"
            ) from None
        raise


def _missing(what: str, reader: Callable[..., Any], *args: Any) -> str:
    """The hint for a missing object: which namespace it went to instead, and what put it there."""
    *key, namespace = args
    found = next(
        (
            other
            for other in STRAY_NAMESPACES
            if other != namespace and _exists(reader, *key, other)
        ),
        None,
    )
    if found is None:
        return f"{what} does not exist in namespace {namespace!r}; create it first"
    cause = (
        "a Python call without namespace= puts it there, as kubectl does with -n default"
        if found == "default"
        else f"the command or call that made it named namespace {found!r}"
    )
    return (
        f"found {what} in namespace {found!r}; the lab works in {namespace!r}: {cause}. Make it "
        f"again without -n (the lab's kubectl context names {namespace!r}; in Python pass "
        f"namespace=lab.namespace), and remove the stray one: kubectl delete {what} -n {found}"
    )


def _exists(reader: Callable[..., Any], *args: Any) -> bool:
    """Whether the object can be read; a forbidden namespace (as in grading) counts as not there."""
    try:
        reader(*args)
    except client.ApiException:
        return False
    return True


def _deployment(lab: LabLike, name: str) -> client.V1Deployment:
    return _read(f"deployment/{name}", lab.apps.read_namespaced_deployment, name, lab.namespace)


def _container(deployment: client.V1Deployment) -> client.V1Container:
    """The container named like the Deployment, else the first one (the lesson has one)."""
    containers = deployment.spec.template.spec.containers
    return next((c for c in containers if c.name == deployment.metadata.name), containers[0])


def _require_rolled_out(lab: LabLike, deployment: client.V1Deployment) -> None:
    done, waiting = rollout_state(deployment)
    if done:
        return
    name = deployment.metadata.name
    if blocked := _stuck_new_pods(lab, deployment):
        raise _Failed(
            f"deployment/{name} cannot finish rolling out, and waiting will not help: "
            f"{blocked[0]}; fix the Deployment (`kubectl describe pod` says why) and apply it again"
        )
    raise _Pending(
        f"deployment/{name} is not rolled out yet: {waiting}; "
        "wait for it (wait_for_rollout or `kubectl rollout status`) and check again"
    )


def _stuck_new_pods(lab: LabLike, deployment: client.V1Deployment) -> list[str]:
    """The current revision's pods that will never be Ready as they are; none while catching up."""
    return [
        f"pod {pod.metadata.name} {why}"
        for pod in new_pods(lab, deployment)
        if (why := k8s.stuck(pod))
    ]


def _amount(quantity: str) -> object:
    """A quantity's value (so 0.1 equals 100m); an unreadable one stays as its text."""
    try:
        return parse_quantity(quantity)
    except ValueError:
        return quantity


def quantities_differ(actual: dict[str, str] | None, wanted: dict[str, str]) -> list[str]:
    """Which resources differ between `actual` and `wanted`, comparing amounts, not spellings."""
    actual = actual or {}
    differences = []
    for resource, amount in wanted.items():
        have = actual.get(resource)
        if have is None:
            differences.append(f"{resource} missing (want {amount})")
        elif _amount(have) != _amount(amount):
            differences.append(f"{resource} is {have} (want {amount})")
    return differences


@_check
def deployment_ready(
    lab: LabLike,
    name: str,
    replicas: int = 3,
    image: str | None = "ml-api:v1",
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    port: int | None = LESSON_PORT,
) -> str:
    """The Deployment exists, runs `replicas` ready pods, with the image, resources, port asked."""
    deployment = _deployment(lab, name)
    container = _container(deployment)
    if deployment.spec.replicas != replicas:
        raise _Failed(
            f"deployment/{name} asks for {deployment.spec.replicas} replicas; "
            f"the step asks for {replicas}: set spec.replicas: {replicas}"
        )
    if image is not None and container.image != image:
        raise _Failed(
            f"container {container.name!r} runs image {container.image!r}; "
            f"the step asks for {image!r}"
        )
    resources = container.resources or client.V1ResourceRequirements()
    wrong = quantities_differ(resources.requests, requests or LESSON_REQUESTS) + quantities_differ(
        resources.limits, limits or LESSON_LIMITS
    )
    if wrong:
        raise _Failed(f"container {container.name!r} resources: {'; '.join(wrong)}")
    if port is not None and port not in {p.container_port for p in container.ports or []}:
        raise _Failed(f"container {container.name!r} does not declare containerPort {port}")
    _require_rolled_out(lab, deployment)
    ready = deployment.status.ready_replicas or 0
    if ready != replicas:
        raise _Pending(
            f"{ready} of {replicas} pods are ready; look at `kubectl get pods` "
            "and `kubectl describe pod` for the reason"
        )
    return f"deployment/{name}: {ready}/{replicas} pods ready running {container.image}"


def _service_port(service: client.V1Service, port: int) -> client.V1ServicePort:
    for candidate in service.spec.ports or []:
        if candidate.port == port:
            return candidate
    raise _Failed(
        f"service/{service.metadata.name} does not expose port {port}; "
        f"add a port {port} in spec.ports"
    )


def _target_port(service_port: client.V1ServicePort, container: client.V1Container) -> int | None:
    """The container port a Service port forwards to; named ports are looked up on the container."""
    target = service_port.target_port if service_port.target_port is not None else service_port.port
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    return next((p.container_port for p in container.ports or [] if p.name == target), None)


def _ready_pods(lab: LabLike, deployment: client.V1Deployment) -> set[str]:
    pods = lab.core.list_namespaced_pod(
        lab.namespace, label_selector=k8s.selector(deployment.spec.selector.match_labels)
    )
    return {pod.metadata.name for pod in pods.items if k8s.pod_ready(pod)}


def _endpoint_pods(lab: LabLike, service: str) -> set[str]:
    """Pods behind the Service's ready endpoints, read from its EndpointSlices."""
    discovery = client.DiscoveryV1Api(lab.core.api_client)
    slices = discovery.list_namespaced_endpoint_slice(
        lab.namespace, label_selector=f"kubernetes.io/service-name={service}"
    ).items
    return {
        endpoint.target_ref.name
        for endpoint_slice in slices
        for endpoint in endpoint_slice.endpoints or []
        if endpoint.target_ref is not None
        and endpoint.target_ref.kind == "Pod"
        and (endpoint.conditions is None or endpoint.conditions.ready is not False)
    }


@_check
def service_routes(
    lab: LabLike, service: str, deployment: str, port: int = 80, target_port: int = LESSON_PORT
) -> str:
    """The Service selects the Deployment's pods, maps `port` to `target_port`, has endpoints."""
    found = _read(f"service/{service}", lab.core.read_namespaced_service, service, lab.namespace)
    owner = _deployment(lab, deployment)
    selector = found.spec.selector or {}
    labels = owner.spec.template.metadata.labels or {}
    # The pods' labels are what the student reads off the cluster: hints point at them,
    # never quote them.
    look = f"`kubectl get pods --show-labels` or `kubectl describe deployment {deployment}`"
    if not selector:
        raise _Failed(
            f"service/{service} has no selector, so it routes to no pods; select "
            f"deployment/{deployment}'s pods by their labels ({look} shows them)"
        )
    unmatched = {k: v for k, v in selector.items() if labels.get(k) != v}
    if unmatched:
        raise _Failed(
            f"service/{service} selects {selector}, which deployment/{deployment}'s pods do not "
            f"carry ({unmatched} does not match): make the selector match the labels {look} shows"
        )
    service_port = _service_port(found, port)
    forwards_to = _target_port(service_port, _container(owner))
    if forwards_to != target_port:
        raise _Failed(
            f"service/{service} port {port} forwards to {service_port.target_port}; "
            f"set targetPort: {target_port} (the container's port)"
        )
    ready = _ready_pods(lab, owner)
    if not ready:
        raise _Pending(f"deployment/{deployment} has no ready pods for the Service to route to")
    behind = _endpoint_pods(lab, service)
    if behind != ready:
        missing, extra = sorted(ready - behind), sorted(behind - ready)
        raise _Pending(
            f"service/{service} endpoints do not match the ready pods yet "
            f"(missing {missing}, unexpected {extra}); wait a moment and check again"
        )
    return f"service/{service}: port {port} -> {target_port}, {len(behind)} ready pods behind it"


def scaling_events(lab: LabLike, deployment: str) -> list[tuple[str, int, int]]:
    """The deployment controller's recorded scalings: (replica set, from, to), oldest first."""
    events = lab.core.list_namespaced_event(
        lab.namespace,
        field_selector=f"involvedObject.kind=Deployment,involvedObject.name={deployment}",
    ).items
    events.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    scalings = []
    for event in events:
        match = (
            SCALING_EVENT.search(event.message or "")
            if event.reason == "ScalingReplicaSet"
            else None
        )
        if match:
            scalings.append((match["rs"], int(match["old"] or 0), int(match["new"])))
    return scalings


@_check
def scaled_to(lab: LabLike, name: str, replicas: int) -> str:
    """The Deployment runs `replicas` ready pods now, or its controller recorded scaling to them."""
    deployment = _deployment(lab, name)
    if deployment.spec.replicas == replicas:
        _require_rolled_out(lab, deployment)
        ready = deployment.status.ready_replicas or 0
        if ready != replicas:
            raise _Pending(f"deployment/{name} asks for {replicas} replicas but {ready} are ready")
        return f"deployment/{name} runs {ready}/{replicas} ready pods"
    ups = [
        (rs, old, new)
        for rs, old, new in scaling_events(lab, name)
        if new == replicas and new > old
    ]
    if ups:
        rs, old, new = ups[-1]
        return (
            f"deployment/{name} was scaled up to {new} (replica set {rs} from {old}); "
            f"it asks for {deployment.spec.replicas} now"
        )
    raise _Failed(
        f"deployment/{name} asks for {deployment.spec.replicas} replicas and was never scaled "
        f"to {replicas}: run `kubectl scale deployment {name} --replicas={replicas}`"
    )


def _wrong_image(lab: LabLike, deployment: client.V1Deployment, current: str, wanted: str) -> str:
    """The hint for a Deployment on another image: a same-image tag never run is likely a typo."""
    name, container = deployment.metadata.name, _container(deployment).name
    hint = f"deployment/{name} runs {current!r}, not {wanted!r}"
    revisions = history(lab, name)
    never_ran = (
        bool(revisions)
        and current in revisions[-1].images
        and not revisions[-1].ready
        and not any(current in revision.images for revision in revisions[:-1])
    )
    if never_ran and current.rsplit(":", 1)[0] == wanted.rsplit(":", 1)[0]:
        hint += (
            f": no pod of it is ready and that tag never ran here before (a typo in {current!r}?)"
        )
    return f"{hint}; set it with `kubectl set image deployment/{name} {container}={wanted}`"


@_check
def rolled_out(lab: LabLike, name: str, image: str, replaced: str | None = None) -> str:
    """Every replica runs `image` after a complete rollout (that replaced `replaced`, if given)."""
    deployment = _deployment(lab, name)
    current = _container(deployment).image
    if current != image:
        raise _Failed(_wrong_image(lab, deployment, current, image))
    _require_rolled_out(lab, deployment)
    revision = k8s.revision(deployment)
    if replaced is not None and not any(
        replaced in r.images and r.number < revision for r in history(lab, name)
    ):
        raise _Failed(
            f"deployment/{name} runs {image!r} but its history shows no earlier revision "
            f"with {replaced!r}: deploy {replaced!r} first, then update"
        )
    return f"deployment/{name} rolled out {image} (revision {revision})"


@_check
def rolled_back(lab: LabLike, name: str, image: str, replaced: str) -> str:
    """The Deployment runs `image` again at a newer revision than the one that ran `replaced`."""
    deployment = _deployment(lab, name)
    current = _container(deployment).image
    revision = k8s.revision(deployment)
    revisions = history(lab, name)
    replaced_at = [r.number for r in revisions if replaced in r.images]
    if not replaced_at:
        shown = {r.number: ",".join(r.images) for r in revisions}
        raise _Failed(
            f"the history of deployment/{name} has no revision with {replaced!r} "
            f"(revisions: {shown}); roll out {replaced!r} before rolling back"
        )
    if current != image:
        raise _Failed(
            f"deployment/{name} runs {current!r}; roll back with "
            f"`kubectl rollout undo deployment/{name}`"
        )
    if revision <= replaced_at[-1]:
        raise _Failed(
            f"deployment/{name} runs {image!r} at revision {revision}, not after the "
            f"{replaced!r} revision {replaced_at[-1]}: roll out {replaced!r}, then undo it"
        )
    _require_rolled_out(lab, deployment)
    return (
        f"deployment/{name} rolled back to {image} (revision {revision}, "
        f"after {replaced} at revision {replaced_at[-1]})"
    )


@_check
def namespace_clean(lab: LabLike, selector: str, deployed: str | None = None) -> str:
    """Nothing labelled `selector` is left (and, if `deployed` is named, it once ran here)."""
    ns = lab.namespace
    left = [
        f"deployment/{d.metadata.name}"
        for d in lab.apps.list_namespaced_deployment(ns, label_selector=selector).items
    ]
    left += [
        f"replicaset/{r.metadata.name}"
        for r in lab.apps.list_namespaced_replica_set(ns, label_selector=selector).items
    ]
    left += [
        f"service/{s.metadata.name}"
        for s in lab.core.list_namespaced_service(ns, label_selector=selector).items
    ]
    left += [
        f"pod/{p.metadata.name}"
        for p in lab.core.list_namespaced_pod(ns, label_selector=selector).items
    ]
    if left:
        shown = ", ".join(left[:6]) + (f" and {len(left) - 6} more" if len(left) > 6 else "")
        # Pods and ReplicaSets without their Deployment are on their way out: the
        # garbage collector follows.
        failure = (
            _Pending if all(item.startswith(("pod/", "replicaset/")) for item in left) else _Failed
        )
        raise failure(
            f"still present with label {selector}: {shown}; delete them with "
            f"`kubectl delete deployment,service -l {selector}` (pods go with their Deployment)"
        )
    if deployed is not None and not scaling_events(lab, deployed):
        raise _Failed(
            f"nothing labelled {selector} is here, but the cluster has no record of "
            f"deployment/{deployed} ever running in namespace {ns!r}: deploy it before cleaning up"
        )
    return f"nothing labelled {selector} is left in namespace {ns!r}"


@dataclass(frozen=True)
class KubectlCommand:
    """A kubectl command the lesson asks for, and the field managers the API server records."""

    usage: str
    writers: tuple[tuple[str, str], ...]  # (manager, operation) pairs the command may record
    subresource: str | None
    field: str  # "replicas" or "image": what the command changes


# What the pinned kubectl (1.34) writes into managedFields, read off the practice cluster: the
# Kubernetes client's calls are recorded as "OpenAPI-Generator" instead. `kubectl apply` is
# client-side by default; `--server-side` records an Apply by "kubectl".
KUBECTL_COMMANDS = {
    "apply": KubectlCommand(
        "kubectl apply -f ml-api/deployment.yaml",
        (("kubectl-client-side-apply", "Update"), ("kubectl", "Apply")),
        None,
        "image",
    ),
    "scale": KubectlCommand(
        "kubectl scale deployment {name} --replicas=N",
        (("kubectl", "Update"),),
        "scale",
        "replicas",
    ),
    "set image": KubectlCommand(
        "kubectl set image deployment/{name} {container}=IMAGE",
        (("kubectl-set", "Update"),),
        None,
        "image",
    ),
    "rollout undo": KubectlCommand(
        "kubectl rollout undo deployment/{name}", (("kubectl", "Update"),), None, "image"
    ),
}


def field_owners(
    deployment: client.V1Deployment, path: tuple[str, ...]
) -> list[client.V1ManagedFieldsEntry]:
    """The managedFields entries that own the field at `path` (fieldsV1 keys such as "f:spec")."""
    owners = []
    for entry in deployment.metadata.managed_fields or []:
        fields: Any = entry.fields_v1 or {}
        for key in path:
            fields = fields.get(key) if isinstance(fields, dict) else None
        if fields is not None:
            owners.append(entry)
    return owners


def _field_path(deployment: client.V1Deployment, field: str) -> tuple[str, ...]:
    if field == "replicas":
        return "f:spec", "f:replicas"
    container = json.dumps({"name": _container(deployment).name}, separators=(",", ":"))
    return "f:spec", "f:template", "f:spec", "f:containers", f"k:{container}", "f:image"


def _managers(owners: list[client.V1ManagedFieldsEntry]) -> str:
    return ", ".join(sorted({entry.manager for entry in owners})) or "nobody"


@_check
def changed_with_kubectl(lab: LabLike, name: str, command: str) -> str:
    """The field `kubectl COMMAND` changes was last written by it (its managedFields entry)."""
    deployment = _deployment(lab, name)
    wanted = KUBECTL_COMMANDS[command]
    owners = field_owners(deployment, _field_path(deployment, wanted.field))
    if any(
        (entry.manager, entry.operation) in wanted.writers
        and entry.subresource == wanted.subresource
        for entry in owners
    ):
        return f"deployment/{name}: its {wanted.field} was last changed by `kubectl {command}`"
    usage = wanted.usage.format(name=name, container=_container(deployment).name)
    raise _Failed(
        f"deployment/{name}'s {wanted.field} was last changed by {_managers(owners)}, not by "
        f"`kubectl {command}`: this step is the command itself; run `{usage}` in a `!kubectl` line"
    )


@_check
def changed_through_api(lab: LabLike, name: str) -> str:
    """The image was last written by a Kubernetes client call, not by a kubectl command."""
    deployment = _deployment(lab, name)
    owners = field_owners(deployment, _field_path(deployment, "image"))
    if any(not entry.manager.startswith("kubectl") for entry in owners):
        return f"deployment/{name}: its image was last changed through the Kubernetes client"
    raise _Failed(
        f"deployment/{name}'s image was last changed by {_managers(owners)}: this step is the "
        "rollback through the API; patch the Deployment's template with "
        "`lab.apps.patch_namespaced_deployment`, not with kubectl"
    )


def eventually(
    check: Callable[..., CheckResult],
    lab: LabLike,
    *args: Any,
    timeout: float = 30,
    interval: float = CONVERGING_INTERVAL,
    **kwargs: Any,
) -> CheckResult:
    """Repeat a check while the cluster is still converging on it, for up to `timeout` seconds."""
    return poll(
        lambda: check(lab, *args, **kwargs),
        lambda result: bool(result) or not result.pending,
        timeout,
        interval,
    )
