"""Choosing a platform: the lesson's comparison matrix, when-to-use lists, decision framework."""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.figure import Figure

COMPOSE = "Docker Compose"
SWARM = "Docker Swarm"
KUBERNETES = "Kubernetes"
CLOUD_NATIVE = "Cloud-Native (ECS/Run)"
CONTAINERIZE_FIRST = "Containerize first"

PLATFORMS: tuple[str, ...] = (COMPOSE, SWARM, KUBERNETES, CLOUD_NATIVE)

MATRIX: dict[str, dict[str, str]] = {
    "Multi-host": {COMPOSE: "No", SWARM: "Yes", KUBERNETES: "Yes", CLOUD_NATIVE: "Yes"},
    "Auto-healing": {COMPOSE: "No", SWARM: "Basic", KUBERNETES: "Advanced", CLOUD_NATIVE: "Yes"},
    "Load balancing": {COMPOSE: "Basic", SWARM: "Yes", KUBERNETES: "Advanced", CLOUD_NATIVE: "Yes"},
    # The lesson printed "Native": the scheduler counts GPUs once a vendor's
    # device plugin advertises them.
    "GPU support": {
        COMPOSE: "Manual",
        SWARM: "Manual",
        KUBERNETES: "Device plugin",
        CLOUD_NATIVE: "Limited",
    },
    "Ecosystem": {
        COMPOSE: "Small",
        SWARM: "Medium",
        KUBERNETES: "Massive",
        CLOUD_NATIVE: "Cloud-specific",
    },
    "Learning curve": {COMPOSE: "Easy", SWARM: "Medium", KUBERNETES: "Steep", CLOUD_NATIVE: "Easy"},
    "ML use cases": {
        COMPOSE: "Dev/test",
        SWARM: "Small prod",
        KUBERNETES: "Enterprise",
        CLOUD_NATIVE: "Simple prod",
    },
    # The lesson printed "Free" for Compose and Swarm and "Free (self-hosted)" for
    # Kubernetes: every platform bills its machines; a managed control plane is free on some
    # clouds, billed hourly on others.
    "Cost (managed)": {
        COMPOSE: "Your hosts",
        SWARM: "Your hosts",
        KUBERNETES: "Nodes (+ some fees)",
        CLOUD_NATIVE: "Pay per use",
    },
}

# How favourable each rating is, 0 (worst for you) to 3 (best): more capability, less effort.
# Cost scores the same everywhere: which bill is lower depends on the load, not on the platform.
SCORES: dict[str, dict[str, int]] = {
    "Multi-host": {"No": 0, "Yes": 3},
    "Auto-healing": {"No": 0, "Basic": 1, "Yes": 2, "Advanced": 3},
    "Load balancing": {"Basic": 1, "Yes": 2, "Advanced": 3},
    "GPU support": {"Manual": 1, "Limited": 2, "Device plugin": 3},
    "Ecosystem": {"Small": 1, "Cloud-specific": 2, "Medium": 2, "Massive": 3},
    "Learning curve": {"Steep": 1, "Medium": 2, "Easy": 3},
    "ML use cases": {"Dev/test": 1, "Small prod": 2, "Simple prod": 2, "Enterprise": 3},
    "Cost (managed)": {"Your hosts": 2, "Nodes (+ some fees)": 2, "Pay per use": 2},
}

# The lesson's "~90% market share" is no measured share of a market; where the figure comes from:
KUBERNETES_SHARE_CLAIM = 0.90
KUBERNETES_SHARE_SOURCE = (
    "the CNCF annual surveys of the cloud-native community (2020: 83% of respondents "
    "ran Kubernetes in production; 2021: 96% used or evaluated it)"
)


@dataclass(frozen=True)
class Profile:
    """What the lesson says about one platform: strengths, limits and where it fits."""

    summary: str
    strengths: tuple[str, ...]
    limitations: tuple[str, ...]
    use_when: tuple[str, ...]


PROFILES: dict[str, Profile] = {
    COMPOSE: Profile(
        "a YAML file of services run together on one Docker host",
        ("simple", "declares replicas and ports in one file"),
        (
            "one host only, it cannot span servers",
            "no self-healing built in",
            "scaling is manual",
            "load balancing is basic",
            "no rolling updates",
        ),
        (
            "development and testing",
            "deployments on a single machine",
            "simple multi-container apps",
            "local ML experiments",
        ),
    ),
    SWARM: Profile(
        "the orchestrator that ships inside Docker Engine",
        ("built into Docker Engine", "simpler than Kubernetes", "orchestrates across hosts"),
        (
            "smaller ecosystem",
            "less community support",
            "fewer advanced features",
            "not the industry standard for ML",
        ),
        ("small production deployments",),
    ),
    CLOUD_NATIVE: Profile(
        "managed container services such as AWS ECS and Google Cloud Run",
        (
            "managed, so less to operate",
            "tightly integrated with its cloud",
            "simpler for basic use cases",
        ),
        (
            "vendor lock-in",
            "limited customization",
            "not portable across clouds",
            "costs more at scale",
        ),
        ("simple production services on one cloud",),
    ),
    KUBERNETES: Profile(
        "the most widely used container orchestrator (about 90% in the CNCF surveys' community)",
        (
            "multi-host, self-healing, rolling updates",
            "GPU scheduling once a device plugin is installed",
            "a massive ecosystem",
        ),
        ("a steep learning curve", "needs people to operate it"),
        (
            "multi-cloud or portability across clouds",
            "complex ML workflows",
            "large scale (100+ services)",
            "full control and customization",
        ),
    ),
}

USE_KUBERNETES_WHEN: dict[str, tuple[str, ...]] = {
    "Scale requirements": (
        "serving 1000+ requests/second",
        "scaling from 1 to 100+ instances",
        "traffic that varies",
    ),
    "High availability": ("99.9%+ uptime", "automatic failover is critical", "several regions"),
    "Complex infrastructure": ("10+ microservices", "many ML models", "training and serving mixed"),
    "Team size": (
        "5+ engineers able to learn Kubernetes",
        "a dedicated infrastructure team",
        "an organisation committed to cloud-native",
    ),
    "Multi-cloud or portability": (
        "several clouds",
        "avoiding vendor lock-in",
        "on-premises plus cloud",
    ),
    "Resource optimization": (
        "expensive GPUs that must be scheduled well",
        "variable workloads",
        "a multi-tenant platform",
    ),
}

AVOID_KUBERNETES_WHEN: dict[str, tuple[str, ...]] = {
    "Simple applications": (
        "one model with low traffic (<100 req/s)",
        "no need to scale",
        "prototypes and experiments",
    ),
    "Small teams": (
        "a team of 1-2 people",
        "no time to learn Kubernetes",
        "little capacity to operate it",
    ),
    "Cloud-native alternatives suffice": (
        "AWS Lambda for simple inference",
        "Google Cloud Run for containerized apps",
        "SageMaker for managed ML",
    ),
    "Serverless works": (
        "event-driven workloads",
        "intermittent use",
        "cold starts are acceptable",
    ),
    "Development and testing": (
        "Docker Compose is simpler",
        "local development environments",
        "individual experiments",
    ),
}


def rating(feature: str, platform: str) -> str:
    """The lesson's rating of `platform` on `feature`; an unknown name lists the valid ones."""
    if feature not in MATRIX:
        raise KeyError(f"unknown feature {feature!r}; choose one of: {', '.join(MATRIX)}")
    if platform not in PLATFORMS:
        raise KeyError(f"unknown platform {platform!r}; choose one of: {', '.join(PLATFORMS)}")
    return MATRIX[feature][platform]


def score_table() -> list[list[int]]:
    """The matrix as numbers, one row per feature and one column per platform."""
    return [[SCORES[feature][MATRIX[feature][p]] for p in PLATFORMS] for feature in MATRIX]


def plot_matrix() -> Figure:
    """The comparison matrix as a heatmap: colour shows how good a rating is, text the lesson's."""
    figure = Figure(figsize=(9, 5.5), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(score_table(), cmap="RdYlGn", vmin=0, vmax=3, aspect="auto")
    ax.set_xticks(range(len(PLATFORMS)), PLATFORMS)
    ax.set_yticks(range(len(MATRIX)), list(MATRIX))
    ax.tick_params(top=True, bottom=False, labeltop=True, labelbottom=False)
    for row, feature in enumerate(MATRIX):
        for column, platform in enumerate(PLATFORMS):
            ax.text(column, row, MATRIX[feature][platform], ha="center", va="center", fontsize=9)
    bar = figure.colorbar(image, ax=ax, ticks=[0, 1, 2, 3])
    bar.ax.set_yticklabels(["worst", "", "", "best"])
    ax.set_title("Kubernetes vs. alternatives (green = better for you)")
    return figure


@dataclass(frozen=True)
class Workload:
    """A team's situation in the lesson's own terms, to turn into the framework's answers."""

    name: str
    containerized: bool
    peak_requests_per_second: float
    services: int
    engineers: int
    uptime_percent: float
    multi_cloud: bool = False
    gpus: bool = False


TEAM_THAT_CAN_RUN_KUBERNETES = (
    5  # the lesson: "5+ engineers who can learn K8s"; "1-2 person team" is a don't
)


def framework_answers(workload: Workload) -> dict[str, bool]:
    """The four yes/no answers for a workload, read off the lesson's use/avoid thresholds."""
    large = workload.peak_requests_per_second >= 1000 or workload.services >= 10
    critical = workload.uptime_percent >= 99.9
    can_run_it = workload.engineers >= TEAM_THAT_CAN_RUN_KUBERNETES
    # GPUs alone do not send a small team to Kubernetes: a managed service
    # with GPUs suits it better.
    gpus_need_kubernetes = workload.gpus and can_run_it
    return {
        "containerized": workload.containerized,
        "multi_host": large or critical or workload.multi_cloud or workload.gpus,
        "simple_and_cloud_native_ok": not can_run_it and workload.services < 100,
        "multi_cloud_or_advanced": workload.multi_cloud
        or gpus_need_kubernetes
        or workload.services >= 100,
    }


EXAMPLE_WORKLOADS: tuple[Workload, ...] = (
    Workload("notebook prototype", False, 5, 1, 1, 95.0),
    Workload("single model, low traffic", True, 50, 2, 1, 99.0),
    Workload("two-person startup API", True, 1500, 3, 2, 99.9),
    Workload("GPU inference for a growing team", True, 3000, 8, 6, 99.9, gpus=True),
    Workload("multi-cloud recommendation platform", True, 20_000, 60, 25, 99.95, multi_cloud=True),
    Workload("platform team with 500+ microservices", True, 50_000, 500, 120, 99.99),
)
