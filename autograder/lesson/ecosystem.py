"""The Kubernetes ecosystem: CNCF landscape categories, distributions and local install options."""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Project:
    """A tool the lesson names, where it sits in the landscape and what it does."""

    name: str
    category: str
    role: str


def _projects(category: str, *entries: tuple[str, str]) -> tuple[Project, ...]:
    return tuple(Project(name, category, role) for name, role in entries)


LANDSCAPE: tuple[Project, ...] = (
    *_projects(
        "Core infrastructure",
        ("Kubernetes", "orchestration"),
        ("containerd", "container runtime"),
        ("CRI-O", "container runtime"),
        ("etcd", "distributed key-value store"),
    ),
    *_projects(
        "Networking",
        ("Calico", "CNI plugin"),
        ("Cilium", "CNI plugin"),
        ("Flannel", "CNI plugin"),
        ("Istio", "service mesh"),
        ("Linkerd", "service mesh"),
        # The lesson lists Ingress NGINX: retired in March 2026, Gateway API took over its role.
        ("Gateway API", "traffic routing API, the successor to Ingress"),
        ("Traefik", "ingress and Gateway API controller"),
    ),
    *_projects(
        "Storage",
        ("Rook", "cloud-native storage"),
        ("Longhorn", "cloud-native storage"),
        ("MinIO", "object storage"),
        ("CSI drivers", "cloud storage integration"),
    ),
    *_projects(
        "Observability",
        ("Prometheus", "metrics"),
        ("Grafana", "visualization"),
        ("Jaeger", "distributed tracing"),
        ("Zipkin", "distributed tracing"),
        ("Fluentd", "log aggregation"),
        ("Loki", "log aggregation"),
    ),
    *_projects(
        "CI/CD",
        ("ArgoCD", "GitOps"),
        ("Flux", "GitOps"),
        ("Tekton", "cloud-native CI/CD"),
        ("Spinnaker", "multi-cloud deployment"),
    ),
    *_projects(
        "ML-specific",
        ("Kubeflow", "end-to-end ML platform"),
        ("KServe", "model serving"),
        ("Seldon Core", "ML deployment"),
        ("Argo Workflows", "DAG-based workflows"),
    ),
    *_projects(
        "Security",
        ("Falco", "runtime security"),
        ("OPA", "policy enforcement (Open Policy Agent)"),
        ("cert-manager", "certificate management"),
        ("Vault", "secrets management"),
    ),
)

CATEGORIES: tuple[str, ...] = tuple(dict.fromkeys(p.category for p in LANDSCAPE))

DISTRIBUTIONS: dict[str, dict[str, str]] = {
    "Local development": {
        "minikube": "a single-node cluster for learning",
        "kind": "Kubernetes in Docker: multi-node clusters made of containers",
        "k3s": "a lightweight Kubernetes, good at the edge and on IoT devices",
        "Docker Desktop": "Kubernetes built into Docker Desktop on macOS and Windows",
        "MicroK8s": "a lightweight, minimal Kubernetes",
    },
    "Production (cloud)": {
        "GKE": "Google Kubernetes Engine on Google Cloud",
        "EKS": "Elastic Kubernetes Service on AWS",
        "AKS": "Azure Kubernetes Service on Microsoft Azure",
        "DOKS": "DigitalOcean Kubernetes",
        "LKE": "Linode Kubernetes Engine",
    },
    "On-premises": {
        "OpenShift": "Red Hat's enterprise Kubernetes",
        "Rancher": "management of many clusters",
        "Tanzu": "VMware's Kubernetes platform",
        "Charmed Kubernetes": "Canonical's distribution",
    },
    "ML workloads": {
        "NVIDIA DGX Cloud": "Kubernetes tuned for GPUs",
        "Run:ai": "GPU virtualization on Kubernetes",
        "Determined AI": "an ML training platform on Kubernetes",
    },
}


@dataclass(frozen=True)
class InstallOption:
    """One way to get a local cluster for this lesson."""

    name: str
    needs: tuple[str, ...]
    create: str
    verify: str
    note: str


INSTALL_OPTIONS: tuple[InstallOption, ...] = (
    InstallOption(
        "minikube",
        (
            "a container runtime (Docker, Podman) or a hypervisor (KVM, Hyper-V...)",
            "2 CPUs and 4GB RAM free",
        ),
        "minikube start",
        "kubectl cluster-info && kubectl get nodes",
        "the usual first cluster for beginners",
    ),
    InstallOption(
        "kind",
        ("Docker running", "kubectl"),
        "kind create cluster --name ml-learning",
        "kubectl cluster-info --context kind-ml-learning",
        "faster, and closer to production; what this lab uses when Docker works",
    ),
    InstallOption(
        "Docker Desktop",
        ("Docker Desktop on macOS or Windows",),
        "Settings -> Kubernetes -> Enable Kubernetes -> Apply & Restart",
        "kubectl cluster-info",
        "the easiest on macOS and Windows",
    ),
    InstallOption(
        "practice cluster",
        ("nothing beyond this lab",),
        'lab = connect("practice") in a notebook',
        "kubectl --context kwok-ml-learning get nodes",
        "the real API server, scheduler and controllers with simulated nodes (kwok)",
    ),
)


def projects_in(category: str) -> list[Project]:
    """The landscape's projects in `category` (any capitalisation)."""
    wanted = _match(category, CATEGORIES, "category")
    return [p for p in LANDSCAPE if p.category == wanted]


def find_project(name: str) -> Project:
    """Where a named project sits in the landscape; a near-miss suggests the closest names."""
    return next(
        p for p in LANDSCAPE if p.name == _match(name, [p.name for p in LANDSCAPE], "project")
    )


def projects_for(role: str) -> list[Project]:
    """Projects whose role mentions `role`, for questions like "which tools do tracing?"."""
    needle = role.strip().lower()
    return [p for p in LANDSCAPE if needle in p.role.lower()]


def distributions(kind: str | None = None) -> dict[str, str]:
    """Distributions of one kind (local, cloud, on-premises, ML), or all of them."""
    if kind is None:
        return {name: what for group in DISTRIBUTIONS.values() for name, what in group.items()}
    return dict(DISTRIBUTIONS[_match(kind, list(DISTRIBUTIONS), "kind of distribution")])


def _match(value: str, choices: list[str] | tuple[str, ...], what: str) -> str:
    """`value` as spelled in `choices`, ignoring case; else an error naming the closest choices."""
    lowered = {choice.lower(): choice for choice in choices}
    key = value.strip().lower()
    if key in lowered:
        return lowered[key]
    for choice in choices:
        if key and choice.lower().startswith(key):
            return choice
    close = difflib.get_close_matches(key, lowered, n=3, cutoff=0.5)
    hint = (
        f"did you mean {', '.join(lowered[c] for c in close)}?"
        if close
        else f"choose one of: {', '.join(choices)}"
    )
    raise KeyError(f"unknown {what} {value!r}; {hint}")
