"""One namespace per submission.

Quotas, Pod Security, a namespace-scoped identity for the student, the grader's.

The student's kernel gets a kubeconfig whose token belongs to a ServiceAccount bound to a Role in
its own namespace only, so it cannot touch other namespaces or anything cluster-wide. The grader's
checks use a second ServiceAccount that may only get, list and watch, and its worker a third that
may only lend and take back the namespace's extended resources (GPUs). Those two live in the
grader's own namespace, bound by RoleBindings into the student's: a pod can only run as a
ServiceAccount of its own namespace, so no student pod can run as the grader or mount its token.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.utils import parse_quantity

from autograder.practice.catalog import OWN_IMAGES, OWN_IMAGES_LABEL
from autograder.shared import k8s
from autograder.shared.errors import LabError
from autograder.shared.waiting import CONVERGING_INTERVAL, poll

MANAGED_BY = "app.kubernetes.io/managed-by"
GRADER = "k8s-ml-grader"
COURSE_LABEL = "grading.k8s-ml-lab/course"
ASSIGNMENT_LABEL = "grading.k8s-ml-lab/assignment"
STUDENT_ANNOTATION = "grading.k8s-ml-lab/student"
NAMESPACE_LABEL = (
    "grading.k8s-ml-lab/namespace"  # on the grader's accounts: the submission they serve
)
# The grader's accounts for every submission; no student's code may create anything in it.
GRADER_NAMESPACE = GRADER
TOKEN_SECONDS = 2 * 3600

# What a student may do with the objects of the lesson in their own namespace.
EDIT_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
STUDENT_RULES = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "deployments/scale", "deployments/status"],
        "verbs": EDIT_VERBS,
    },
    {
        "apiGroups": ["apps"],
        "resources": ["replicasets", "replicasets/scale"],
        "verbs": ["get", "list", "watch", "delete", "deletecollection"],
    },
    {
        "apiGroups": [""],
        "resources": ["services", "configmaps"],
        "verbs": EDIT_VERBS,
    },
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "delete", "deletecollection"],
    },
    {
        "apiGroups": [""],
        "resources": ["pods/log", "endpoints", "events", "resourcequotas", "limitranges"],
        "verbs": ["get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    },
    # Read-only: `port_forward` waits for the router's routes. kwok runs a PortForward's or an
    # Exec's command on the host, so no kwok object is ever the student's to write.
    {
        "apiGroups": ["kwok.x-k8s.io"],
        "resources": ["portforwards"],
        "verbs": ["get", "list", "watch"],
    },
]
READER_RULES = [
    {
        "apiGroups": ["apps"],
        "resources": ["deployments", "replicasets"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": [""],
        "resources": ["pods", "pods/log", "services", "endpoints", "events"],
        "verbs": ["get", "list", "watch"],
    },
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["get", "list", "watch"],
    },
    # Hidden tests call the deployed model server through `kubectl port-forward`, as students do.
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["get", "create"]},
    {
        "apiGroups": ["kwok.x-k8s.io"],
        "resources": ["portforwards"],
        "verbs": ["get", "list", "watch"],
    },
]
# The worker lends the node capacity the submission's exclusive notebook needs (its extended
# resources, room for its fleet of pods) and takes it back after it (extended.py): it may change
# that one quota, and remove the pods made under it.
LENT_QUOTA = "lent-resources"
LENDER_RULES = [
    {
        "apiGroups": [""],
        "resources": ["resourcequotas"],
        "resourceNames": [LENT_QUOTA],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "delete"]},
]
# Hidden tests compare a student's node readings with the nodes themselves.
NODE_READER_ROLE = "k8s-ml-grader-reader-nodes"
NODE_READER_RULES = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
# The lesson reads nodes and cordons one to simulate a crash: students may read every node and
# patch nodes, and an admission policy lets that patch change nothing but spec.unschedulable.
NODE_ROLE = "k8s-ml-grader-student-nodes"
NODE_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "patch"]}
]
NODE_POLICY = "k8s-ml-grader-cordon-only"
# Metadata a cordon leaves alone; an owner reference would let the garbage
# collector delete the node.
NODE_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
NODE_POLICY_SPEC = {
    "failurePolicy": "Fail",
    "matchConstraints": {
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": ["UPDATE"],
                "resources": ["nodes", "nodes/status"],
            }
        ]
    },
    "matchConditions": [
        {
            "name": "grading-identity",
            "expression": "request.userInfo.username.startsWith('system:serviceaccount:grade-')",
        }
    ],
    "validations": [
        {
            "expression": " && ".join(
                f"object.metadata.?{field} == oldObject.metadata.?{field}"
                for field in NODE_METADATA
            ),
            "message": "a grading identity may only cordon or uncordon nodes: labels, annotations, "
            "owners and finalizers stay as they are",
        },
        {
            "expression": "object.spec.all(k, k == 'unschedulable' || "
            "(k in oldObject.spec && object.spec[k] == oldObject.spec[k])) && "
            "oldObject.spec.all(k, k == 'unschedulable' || k in object.spec)",
            "message": "a grading identity may only cordon or uncordon nodes: no spec field but "
            "unschedulable changes",
        },
    ],
}

# Counts, not CPU or memory: the lesson itself asks for 64 CPUs to show a Pending pod, so a
# compute quota would turn its lesson into an admission error (CPU and memory: see
# COMPUTE_POLICY). Node ports and load balancers are the cluster's (and a cloud's bill): the
# lesson needs one Service's worth.
QUOTA = {
    "services": "10",
    "configmaps": "20",
    "count/deployments.apps": "30",
    "count/replicasets.apps": "100",
    "services.nodeports": "10",
    "services.loadbalancers": "2",
}
# No pod of a submission may take a system priority: the scheduler would evict
# other namespaces' pods for it.
CRITICAL_PRIORITY = {
    "hard": {"pods": "0"},
    "scopeSelector": {
        "matchExpressions": [
            {
                "scopeName": "PriorityClass",
                "operator": "In",
                "values": ["system-node-critical", "system-cluster-critical"],
            }
        ]
    },
}
# Requests only: a default limit would fall below a request the student sets
# and make the pod invalid.
LIMITS = {"type": "Container", "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}
# Pod Security: the lesson's pods pass `baseline` as the lesson writes them (no host namespaces,
# hostPath, privileged or added capabilities), not `restricted` (they set no securityContext).
# Baseline is enforced and warned of when a Deployment is applied; restricted only audited: its
# warnings would fill an honest student's `kubectl apply` output with what the lesson never asks.
POD_SECURITY = {
    f"pod-security.kubernetes.io/{mode}": level
    for mode, level in (("enforce", "baseline"), ("warn", "baseline"), ("audit", "restricted"))
}
# Node resources that are not extended ones: a quota of 0 on these would refuse every pod.
BUILT_IN_RESOURCES = ("cpu", "memory", "pods", "ephemeral-storage")
# Outside the exclusive notebook a submission's pods hold little of the nodes, so that with --jobs 2
# the other submission's exclusive notebook (lesson01's 07: a 19.5-CPU, 63-GiB fleet and the GPU
# pods) finds its room. A pod may ask for what the lesson's largest pod outside 07 asks (06's fitted
# too-big), and the namespace may run POD_ALLOWANCE pods (06 runs 7 at most, 05's rolling update 4
# and the ones terminating): at most 5 CPUs and 10 GiB, which leave the fleet every node it lands
# on, and the GPU pods theirs, on the practice cluster (28 CPUs, 170 GiB). A pod asking more than
# the largest node offers may stay: it never schedules, so it holds nothing (06's 64-CPU demo).
# While the worker lends the exclusive notebook its resources, both limits lift; LENT_PODS holds
# 07's fleet, ml-api and the GPU pods.
POD_CAP = {"cpu": "500m", "memory": "1Gi"}
POD_ALLOWANCE, LENT_PODS = "10", "60"
LENT_ANNOTATION = "grading.k8s-ml-lab/lent"
COMPUTE_POLICY = "k8s-ml-grader-pod-size"
COMPUTE = ("cpu", "memory")


@dataclass(frozen=True)
class Sandbox:
    """A prepared namespace and the three kubeconfigs that reach it."""

    namespace: str
    student_kubeconfig: Path
    reader_kubeconfig: Path
    lender_kubeconfig: Path


@dataclass(frozen=True)
class Account:
    """A ServiceAccount: its own namespace (the student's, or the grader's) and name."""

    namespace: str
    name: str

    def subject(self) -> dict:
        return {"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}


def grader_accounts(namespace: str) -> dict[str, Account]:
    """The grader's reader and lender for the submission in `namespace`, by role."""
    return {role: Account(GRADER_NAMESPACE, f"{namespace}-{role}") for role in ("reader", "lender")}


def _identity(
    rbac: client.RbacAuthorizationV1Api,
    core: client.CoreV1Api,
    namespace: str,
    account: Account,
    rules: list[dict],
    labels: dict[str, str],
) -> str:
    """`account` bound to a Role of `rules` in `namespace`; returns a fresh token for it."""
    core.create_namespaced_service_account(
        account.namespace,
        {"metadata": {"name": account.name, "labels": {**labels, NAMESPACE_LABEL: namespace}}},
    )
    rbac.create_namespaced_role(namespace, {"metadata": {"name": account.name}, "rules": rules})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": account.name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": account.name,
            },
            "subjects": [account.subject()],
        },
    )
    request = {"spec": {"audiences": [], "expirationSeconds": TOKEN_SECONDS}}
    return core.create_namespaced_service_account_token(
        account.name, account.namespace, request
    ).status.token


def _kubeconfig(admin: client.ApiClient, namespace: str, user: str, token: str, path: Path) -> Path:
    """Write a kubeconfig with only `token`, for the admin's API server, in `namespace`."""
    settings = admin.configuration
    cluster: dict = {"server": settings.host}
    if settings.ssl_ca_cert:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(settings.ssl_ca_cert).read_bytes()
        ).decode()
    if not settings.verify_ssl:
        cluster["insecure-skip-tls-verify"] = True
    context = f"{user}@{namespace}"
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": "lab", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": context, "context": {"cluster": "lab", "user": user, "namespace": namespace}}
        ],
    }
    path.write_text(yaml.safe_dump(document))
    os.chmod(path, 0o600)
    return path


def ensure_node_access(admin: client.ApiClient) -> None:
    """The cluster-wide pieces every grading namespace shares.

    The node roles, the admission policies on nodes and on pods' size, and the grader's namespace
    (no pod ever runs there).
    """
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    policies = client.AdmissionregistrationV1Api(admin)
    labels = {MANAGED_BY: GRADER}
    restricted = {
        f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")
    }
    creations: list[tuple[Any, dict]] = [  # (an API's create_<kind> method, the object)
        (
            core.create_namespace,
            {"metadata": {"name": GRADER_NAMESPACE, "labels": {**labels, **restricted}}},
        ),
        (
            rbac.create_cluster_role,
            {"metadata": {"name": NODE_ROLE, "labels": labels}, "rules": NODE_RULES},
        ),
        (
            rbac.create_cluster_role,
            {"metadata": {"name": NODE_READER_ROLE, "labels": labels}, "rules": NODE_READER_RULES},
        ),
        (
            policies.create_validating_admission_policy,
            {"metadata": {"name": NODE_POLICY, "labels": labels}, "spec": NODE_POLICY_SPEC},
        ),
        (
            policies.create_validating_admission_policy_binding,
            {
                "metadata": {"name": NODE_POLICY, "labels": labels},
                "spec": {"policyName": NODE_POLICY, "validationActions": ["Deny"]},
            },
        ),
        (
            policies.create_validating_admission_policy,
            {
                "metadata": {"name": COMPUTE_POLICY, "labels": labels},
                "spec": compute_policy_spec(largest_node(core.list_node().items)),
            },
        ),
        (
            policies.create_validating_admission_policy_binding,
            {
                "metadata": {"name": COMPUTE_POLICY, "labels": labels},
                "spec": _compute_policy_binding(),
            },
        ),
    ]
    for create, body in creations:
        try:
            create(body)
        except client.ApiException as error:
            if error.status != 409:
                raise
            _replace(create, body)


def unlent_quota(extended: Iterable[str]) -> dict[str, str]:
    """The lent quota outside the exclusive notebook: POD_ALLOWANCE pods, no `extended` resource."""
    return {"pods": POD_ALLOWANCE, **{f"requests.{resource}": "0" for resource in extended}}


def lent_quota(grant: dict[str, str]) -> dict[str, str]:
    """The lent quota while the exclusive notebook runs: its pod fleet, the extended resources."""
    return {"pods": LENT_PODS, **grant}


def largest_node(nodes: list[client.V1Node]) -> dict[str, float]:
    """The most CPU cores and memory bytes one node offers: a pod asking more is never scheduled."""
    return {
        resource: max(
            (
                float(parse_quantity((node.status.allocatable or {}).get(resource, "0")))
                for node in nodes
            ),
            default=0.0,
        )
        for resource in COMPUTE
    }


def compute_policy_spec(largest: dict[str, float]) -> dict:
    """COMPUTE_POLICY: outside a lending a grading pod asks at most POD_CAP, or over `largest`."""
    cap = {resource: float(parse_quantity(POD_CAP[resource])) for resource in COMPUTE}
    variables = [
        {
            "name": "containers",
            "expression": "object.spec.containers + object.spec.?initContainers.orValue([])",
        }
    ]
    for (
        resource
    ) in COMPUTE:  # init containers added, not maxed: an upper bound of what the pod holds
        each = f"c.?resources.?requests[?'{resource}'].orValue('0')"
        variables += [
            {
                "name": f"{resource}Containers",
                "expression": (
                    f"variables.containers.map(c, quantity({each}).asApproximateFloat()).sum()"
                ),
            },
            {
                "name": f"{resource}Pod",
                "expression": "quantity(object.spec.?resources.?requests"
                f"[?'{resource}'].orValue('0')).asApproximateFloat()",
            },
            {
                "name": resource,
                "expression": f"variables.{resource}Pod > variables.{resource}Containers ? "
                f"variables.{resource}Pod : variables.{resource}Containers",
            },
        ]
    variables += [
        {
            "name": "lent",
            "expression": (
                f"params.metadata.?annotations[?'{LENT_ANNOTATION}'].orValue('') == 'true'"
            ),
        },
        {
            "name": "unschedulable",
            "expression": " || ".join(f"variables.{r} > {largest[r]!r}" for r in COMPUTE),
        },
        # A millicore and a byte are the smallest steps: the margins only
        # absorb floating-point sums.
        {
            "name": "small",
            "expression": f"variables.cpu <= {cap['cpu'] + 1e-6!r} && "
            f"variables.memory <= {cap['memory'] + 0.5!r}",
        },
    ]
    return {
        "failurePolicy": "Fail",
        "paramKind": {"apiVersion": "v1", "kind": "ResourceQuota"},
        "matchConstraints": {
            "resourceRules": [
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE"],
                    "resources": ["pods"],
                },
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["UPDATE"],
                    "resources": ["pods/resize"],
                },
            ]
        },
        "variables": variables,
        "validations": [
            {
                "expression": "variables.lent || variables.unschedulable || variables.small",
                "messageExpression": (
                    f"'outside notebook 07 a grading pod may ask for at most {POD_CAP['cpu']} "
                    f"CPU and {POD_CAP['memory']} memory, its containers together (most of "
                    "the lesson asks 100m and 128Mi); this one asks ' + "
                    "string(variables.cpu) + ' CPU and ' + string(int(variables.memory / "
                    "1048576.0)) + 'Mi: lower its resources.requests'"
                ),
                "reason": "Forbidden",
            }
        ],
    }


def _compute_policy_binding() -> dict:
    """COMPUTE_POLICY on every grading namespace's pods, with its lent quota as the parameter."""
    return {
        "policyName": COMPUTE_POLICY,
        "validationActions": ["Deny"],
        "paramRef": {"name": LENT_QUOTA, "parameterNotFoundAction": "Deny"},
        "matchResources": {
            "namespaceSelector": {"matchExpressions": [{"key": COURSE_LABEL, "operator": "Exists"}]}
        },
    }


def _replace(create: Any, body: dict) -> None:
    """An earlier grader's role or policy may be laxer: this one's rules replace it."""
    api, kind, name = (
        create.__self__,
        create.__name__.removeprefix("create_"),
        body["metadata"]["name"],
    )
    current = getattr(api, f"read_{kind}")(name).metadata.resource_version
    getattr(api, f"replace_{kind}")(
        name, {**body, "metadata": {**body["metadata"], "resourceVersion": current}}
    )


def create(
    admin: client.ApiClient,
    namespace: str,
    *,
    course: str,
    assignment: str,
    student: str,
    workdir: Path,
) -> Sandbox:
    """Make the namespace: quotas, limits, Pod Security, 3 identities; kubeconfigs in `workdir`."""
    core, rbac = client.CoreV1Api(admin), client.RbacAuthorizationV1Api(admin)
    labels = {MANAGED_BY: GRADER, COURSE_LABEL: course, ASSIGNMENT_LABEL: assignment}
    # On the practice cluster its pods run only the images the submission
    # built (catalog.OWN_IMAGES).
    core.create_namespace(
        {
            "metadata": {
                "name": namespace,
                "labels": {**labels, **POD_SECURITY, OWN_IMAGES_LABEL: OWN_IMAGES},
                "annotations": {STUDENT_ANNOTATION: student},
            }
        }
    )
    core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "grading"}, "spec": {"hard": QUOTA}}
    )
    core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": "no-system-priority"}, "spec": CRITICAL_PRIORITY}
    )
    core.create_namespaced_resource_quota(
        namespace,
        {
            "metadata": {"name": LENT_QUOTA},
            "spec": {"hard": unlent_quota(extended_resources(core.list_node().items))},
        },
    )
    core.create_namespaced_limit_range(
        namespace, {"metadata": {"name": "grading"}, "spec": {"limits": [LIMITS]}}
    )
    _wait_for_default_service_account(core, namespace)
    k8s.wait_for(
        core.list_namespaced_resource_quota,
        namespace,
        until=lambda quotas: all(map(enforced, quotas)),
        timeout=30,
        what=f"the quotas of namespace {namespace}",
    )
    _wait_for_pod_size_policy(core, namespace)
    grader = grader_accounts(namespace)
    tokens = {
        user: _identity(rbac, core, namespace, account, rules, labels)
        for user, account, rules in [
            ("student", Account(namespace, "student"), STUDENT_RULES),
            ("grader-reader", grader["reader"], READER_RULES),
            ("grader-lender", grader["lender"], LENDER_RULES),
        ]
    }
    for binding, role, account in node_bindings(namespace):
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": binding, "labels": labels},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [account.subject()],
            }
        )
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfigs = {
        user: _kubeconfig(admin, namespace, user, token, workdir / f"{user}.kubeconfig")
        for user, token in tokens.items()
    }
    return Sandbox(
        namespace=namespace,
        student_kubeconfig=kubeconfigs["student"],
        reader_kubeconfig=kubeconfigs["grader-reader"],
        lender_kubeconfig=kubeconfigs["grader-lender"],
    )


def enforced(quota: client.V1ResourceQuota) -> bool:
    """Whether admission enforces the quota's spec: it judges by the status the controller sets."""
    status = (quota.status.hard if quota.status else None) or {}
    return all(
        key in status and parse_quantity(status[key]) == parse_quantity(value)
        for key, value in (quota.spec.hard or {}).items()
    )


def extended_resources(nodes: list[client.V1Node]) -> list[str]:
    """Extended resources (nvidia.com/gpu...) nodes offer: scarce, never a submission's to keep."""
    advertised = {name for node in nodes for name in (node.status.allocatable or {})}
    return sorted(
        name
        for name in advertised
        if name not in BUILT_IN_RESOURCES
        and not name.startswith(("hugepages-", "attachable-volumes-"))
    )


def node_bindings(namespace: str) -> list[tuple[str, str, Account]]:
    """(binding, cluster role, service account) for a submission's cluster-wide node access."""
    return [
        (namespace, NODE_ROLE, Account(namespace, "student")),
        (f"{namespace}-reader", NODE_READER_ROLE, grader_accounts(namespace)["reader"]),
    ]


def _wait_for_pod_size_policy(core: client.CoreV1Api, namespace: str, timeout: float = 30) -> None:
    """An admission policy judges pods a moment after it is made: wait till it refuses a big one."""
    # A millicore more than the cap: any node that fits the cap fits it, so
    # only the policy refuses it.
    past_cap = str(parse_quantity(POD_CAP["cpu"]) + Decimal("0.001"))
    too_large = {
        "metadata": {"name": "pod-size-probe"},
        "spec": {
            "containers": [
                {
                    "name": "probe",
                    "image": "ml-api:v1",
                    "resources": {"requests": {"cpu": past_cap}},
                }
            ]
        },
    }

    def refused() -> bool:
        try:
            core.create_namespaced_pod(namespace, too_large, dry_run="All")
        except client.ApiException as error:
            return COMPUTE_POLICY in (error.body or "")
        return False

    if not poll(refused, bool, timeout, CONVERGING_INTERVAL):
        raise LabError(
            f"the admission policy {COMPUTE_POLICY} did not judge the pods of {namespace} within "
            f"{timeout:.0f} s: run `grade` again, or check `kubectl get validatingadmissionpolicy "
            f"{COMPUTE_POLICY}`"
        )


def _wait_for_default_service_account(
    core: client.CoreV1Api, namespace: str, timeout: float = 30
) -> None:
    """Pods are refused until the namespace's default ServiceAccount exists."""
    k8s.wait_for(
        core.list_namespaced_service_account,
        namespace,
        field_selector="metadata.name=default",
        until=bool,
        timeout=timeout,
        what=f"the default ServiceAccount of namespace {namespace}",
    )


def delete(admin: client.ApiClient, namespace: str, wait: float = 120) -> bool:
    """Delete the namespace and all in it, finalizers too; True once gone within `wait` seconds."""
    core = client.CoreV1Api(admin)
    rbac = client.RbacAuthorizationV1Api(admin)
    removals = [
        (rbac.delete_cluster_role_binding, binding) for binding, _, _ in node_bindings(namespace)
    ]
    removals += [
        (lambda name: core.delete_namespaced_service_account(name, GRADER_NAMESPACE), account.name)
        for account in grader_accounts(namespace).values()
    ]
    # The namespace first, so that no controller may create pods in it any more; then its pods at
    # once: a submission's long grace period must not hold nodes' CPU for the next one.
    removals.append(
        (lambda name: core.delete_namespace(name, propagation_policy="Background"), namespace)
    )
    removals.append(
        (
            lambda name: core.delete_collection_namespaced_pod(name, grace_period_seconds=0),
            namespace,
        )
    )
    for remove, name in removals:
        try:
            remove(name)
        except client.ApiException as error:
            if error.status != 404:
                raise

    def gone(found: list[client.V1Namespace]) -> bool:
        """On every change of the namespace: strip what would hold it; done once it is deleted."""
        if found:
            _drop_finalizers(admin, namespace)
            if found[0].metadata.finalizers:
                _patch_away(lambda body: core.patch_namespace(namespace, body))
        return not found

    this = f"metadata.name={namespace}"
    if wait <= 0:
        return gone(core.list_namespace(field_selector=this).items)
    try:
        return k8s.wait_for(
            core.list_namespace,
            field_selector=this,
            until=gone,
            timeout=wait,
            what=f"the deletion of namespace {namespace}",
        )
    except k8s.WaitTimeout:
        return False


KWOK_KINDS = (
    "portforwards",
    "logs",
)  # kwok.x-k8s.io/v1alpha1, present on the practice cluster only


def _finalizable(admin: client.ApiClient) -> list[tuple]:
    """(list, patch) pairs for what the student's Role may create or patch, and pods."""
    core, apps, custom = (
        client.CoreV1Api(admin),
        client.AppsV1Api(admin),
        client.CustomObjectsApi(admin),
    )
    kinds = [
        (core.list_namespaced_config_map, core.patch_namespaced_config_map),
        (core.list_namespaced_service, core.patch_namespaced_service),
        (core.list_namespaced_pod, core.patch_namespaced_pod),
        (apps.list_namespaced_deployment, apps.patch_namespaced_deployment),
        (apps.list_namespaced_replica_set, apps.patch_namespaced_replica_set),
    ]
    for plural in KWOK_KINDS:
        kinds.append(
            (
                lambda ns, p=plural: custom.list_namespaced_custom_object(
                    "kwok.x-k8s.io", "v1alpha1", ns, p
                ),
                lambda name, ns, body, p=plural: custom.patch_namespaced_custom_object(
                    "kwok.x-k8s.io", "v1alpha1", ns, p, name, body
                ),
            )
        )
    return kinds


def _drop_finalizers(admin: client.ApiClient, namespace: str) -> None:
    """A finalizer a submission set would keep its object, and so its namespace, alive for ever."""
    for list_objects, patch in _finalizable(admin):
        try:
            found = list_objects(namespace)
        except client.ApiException as error:
            if error.status == 404:  # no such resource on this cluster
                continue
            raise
        items = found["items"] if isinstance(found, dict) else [o.to_dict() for o in found.items]
        for item in items:
            if item["metadata"].get("finalizers"):
                _patch_away(
                    lambda body, name=item["metadata"]["name"], patch=patch: patch(
                        name, namespace, body
                    )
                )


def _patch_away(patch) -> None:
    """Remove metadata.finalizers with `patch(body)`; an object already gone is fine."""
    try:
        patch({"metadata": {"finalizers": None}})
    except client.ApiException as error:
        if error.status != 404:
            raise


def course_selector(course: str, assignment: str | None = None) -> str:
    """The labels of everything the grader made on the cluster for this course (and assignment)."""
    selector = f"{MANAGED_BY}={GRADER},{COURSE_LABEL}={course}"
    return f"{selector},{ASSIGNMENT_LABEL}={assignment}" if assignment else selector


def leftovers(admin: client.ApiClient, course: str, assignment: str | None = None) -> list[str]:
    """Namespaces an earlier, interrupted run of this course left behind.

    Their node bindings and the grader's accounts count with them.
    """
    core, selector = client.CoreV1Api(admin), course_selector(course, assignment)
    namespaces = {ns.metadata.name for ns in core.list_namespace(label_selector=selector).items}
    bindings = {
        b.metadata.name
        for b in client.RbacAuthorizationV1Api(admin)
        .list_cluster_role_binding(label_selector=selector)
        .items
    }
    accounts = {
        account.metadata.labels[NAMESPACE_LABEL]
        for account in core.list_namespaced_service_account(
            GRADER_NAMESPACE, label_selector=selector
        ).items
    }
    return sorted(namespaces | bindings | accounts)
