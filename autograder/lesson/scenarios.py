"""Why orchestration: the lesson's four scenarios, Kubernetes' origins, real-world cases as data."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from matplotlib.figure import Figure


@dataclass(frozen=True)
class Scenario:
    """One situation where hand-run containers stop being enough."""

    name: str
    situation: tuple[str, ...]
    questions: tuple[str, ...]
    kubernetes_answer: str


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "Scaling",
        (
            "Traffic jumps from 100 to 10,000 requests/second.",
            "About 50 more containers must be started by hand across 10 servers.",
        ),
        ("Which servers get the new containers?", "What spreads the requests over them?"),
        "Change `replicas`; the scheduler places the pods and a Service balances the traffic.",
    ),
    Scenario(
        "Reliability",
        ("A server dies and takes 5 containers with it.",),
        ("Who notices the failure and restarts the containers?", "What keeps the desired state?"),
        "Controllers compare desired with actual state and recreate lost pods on healthy nodes.",
    ),
    Scenario(
        "Updates",
        ("A new model version has to go live.",),
        ("How is it released without downtime?", "How is it undone when it misbehaves?"),
        "A Deployment rolls pods over a few at a time and keeps old ReplicaSets for a rollback.",
    ),
    Scenario(
        "Resource management",
        ("100 different models need serving.", "Each needs its own mix of CPU, GPU and memory."),
        ("How are the containers packed onto servers without waste?",),
        "Pods declare requests; the scheduler bin-packs them onto nodes that have room.",
    ),
)

WITHOUT_ORCHESTRATION: tuple[str, ...] = (
    "custom scripts to manage containers",
    "people stepping in whenever something fails",
    "load balancers configured by hand",
    "scheduling logic written in-house",
    "capacity planned manually",
)


@dataclass(frozen=True)
class Milestone:
    """A date in Kubernetes' history."""

    year: int | None
    event: str


ORIGIN = {
    "name": "Kubernetes",
    "greek": "κυβερνήτης",
    "meaning": "helmsman or pilot",
    "abbreviation": "K8s",
    "abbreviation_rule": 'the 8 letters "ubernete" between K and s become the digit 8',
}

HISTORY: tuple[Milestone, ...] = (
    Milestone(
        None, "Borg, Google's internal cluster manager, runs Google's workloads for 15+ years"
    ),
    Milestone(2014, "Google open-sources Kubernetes"),
    Milestone(2015, "Kubernetes is donated to the Cloud Native Computing Foundation (CNCF)"),
)

CORE_CAPABILITIES: tuple[tuple[str, str], ...] = (
    ("Automated deployment and scaling", "you declare the desired state and Kubernetes keeps it"),
    ("Self-healing", "failed containers are replaced and rescheduled automatically"),
    ("Service discovery and load balancing", "networking between pods is built in"),
    ("Storage orchestration", "storage systems are mounted for you"),
    (
        "Automated rollouts and rollbacks",
        "new versions replace old pods gradually; a bad one can be undone",
    ),
    ("Secret and configuration management", "sensitive settings are handled securely"),
    ("Resource optimization", "workloads are bin-packed efficiently onto machines"),
)

ML_BENEFITS: dict[str, tuple[str, ...]] = {
    "GPU scheduling": (
        "a pod asks for `nvidia.com/gpu: 1` under resources.limits",
        "the scheduler places it on a node whose device plugin advertises a free GPU",
    ),
    "Scalable model serving": (
        "variable traffic is absorbed",
        "autoscaling from 1 to 100+ replicas",
        "load balancing across model instances",
        "rolling updates for new model versions",
    ),
    "Multi-model management": (
        "100+ different models",
        "each scales independently",
        "resources isolated between models",
        "each model has its own resource needs",
    ),
    "Training job orchestration": (
        "distributed training jobs",
        "automatic retry on failure",
        "priority-based scheduling",
        "preemptible instances to save money",
    ),
    "Reproducibility": (
        "infrastructure as code in YAML manifests",
        "deployments under version control",
        "the same environment in dev, staging and production",
    ),
}


@dataclass(frozen=True)
class Metric:
    """A number the lesson quotes, with the words it uses for it."""

    what: str
    value: float
    unit: str
    label: str


@dataclass(frozen=True)
class Case:
    """A company running ML infrastructure on Kubernetes."""

    company: str
    platform: str
    practices: tuple[str, ...]
    figures: tuple[Metric, ...]
    note: str = ""  # where the lesson's account needs correcting


CASES: tuple[Case, ...] = (
    Case(
        "Uber",
        "Michelangelo ML platform",
        (
            "scales automatically with traffic patterns",
            "schedules GPUs for training",
            "one multi-tenant platform for many teams",
        ),
        (
            Metric("ML models deployed", 1000, "count", "1,000+"),
            Metric("less deployment time", 95, "percent", "95%"),
        ),
        "for most of its history Michelangelo ran on Uber's Mesos-based schedulers (Peloton), not "
        "Kubernetes; Uber moved its compute platform from Mesos to Kubernetes around 2024",
    ),
    Case(
        "Spotify",
        "ML feature platform",
        ("billions of predictions served every day", "autoscaling through peak hours"),
        (
            Metric("Kubernetes clusters worldwide", 200, "count", "200+"),
            Metric("capacity at peak hours", 3, "multiplier", "3x"),
            Metric("lower cost from efficient resource use", 70, "percent", "70%"),
        ),
    ),
    Case(
        "OpenAI",
        "LLM infrastructure",
        (
            "large GPU clusters on Kubernetes",
            "distributed training of GPT models",
            "resources shifted dynamically between research and production",
        ),
        (Metric("inference requests per second", 1000, "count", "thousands"),),
    ),
    Case(
        "Airbnb",
        "search and recommendation",
        (
            "ML models rank search results, set prices and recommend",
            "canary deployments make model updates safe",
        ),
        (
            Metric("microservices on Kubernetes", 500, "count", "500+"),
            Metric("regions served", 10, "count", "10+"),
        ),
    ),
)

SPIKE_FROM_RPS = 100
SPIKE_TO_RPS = 10_000
SPIKE_EXTRA_CONTAINERS = 50
SPIKE_SERVERS = 10
CRASHED_SERVER_CONTAINERS = 5


def case(company: str) -> Case:
    """The case of `company` (any capitalisation); an unknown name lists the known ones."""
    for known in CASES:
        if known.company.lower() == company.strip().lower():
            return known
    raise KeyError(
        f"no case for {company!r}; the lesson covers: {', '.join(c.company for c in CASES)}"
    )


def plot_cases() -> Figure:
    """The cases' figures side by side, one panel per kind of number, so units never mix."""
    panels = {
        "count": "how many (log scale)",
        "percent": "improvement (%)",
        "multiplier": "times normal",
    }
    counts = {unit: sum(f.unit == unit for c in CASES for f in c.figures) for unit in panels}
    figure = Figure(figsize=(9, 6), layout="constrained")
    axes = figure.subplots(len(panels), 1, height_ratios=list(counts.values()))
    colours = {c.company: f"C{i}" for i, c in enumerate(CASES)}
    for ax, (unit, title) in zip(axes, panels.items()):
        rows = [(c, f) for c in CASES for f in c.figures if f.unit == unit]
        names = [f"{c.company}: {f.what}" for c, f in rows]
        bars = ax.barh(
            names, [f.value for _, f in rows], color=[colours[c.company] for c, _ in rows]
        )
        ax.bar_label(bars, labels=[f.label for _, f in rows], padding=3)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.margins(x=0.35)
        if unit == "count":
            ax.set_xscale("log")
    figure.suptitle("Kubernetes in production ML: the four cases as the lesson claims them")
    return figure


def implied_capacity_per_replica() -> float:
    """The per-container load the lesson implies: 10,000 req/s across its 50 containers."""
    return SPIKE_TO_RPS / SPIKE_EXTRA_CONTAINERS


def spread(replicas: int, servers: int) -> list[int]:
    """Containers per server when `replicas` are dealt out evenly, as a scheduler would."""
    if servers < 1:
        raise ValueError("at least one server is needed")
    base, extra = divmod(replicas, servers)
    return [base + (1 if i < extra else 0) for i in range(servers)]


def spike_profile(
    base: float = SPIKE_FROM_RPS, peak: float = SPIKE_TO_RPS, minutes: int = 60
) -> list[tuple[int, float]]:
    """A traffic curve for one hour: quiet, a five-minute climb to the peak, a plateau, a fall."""
    rise, top, fall, quiet = minutes // 4, minutes // 3, 2 * minutes // 3, 5 * minutes // 6

    def load(minute: int) -> float:
        if minute < rise or minute >= quiet:
            return base
        if minute < top:
            return base + (peak - base) * (minute - rise) / (top - rise)
        if minute < fall:
            return peak
        return peak - (peak - base) * (minute - fall) / (quiet - fall)

    return [(minute, load(minute)) for minute in range(minutes + 1)]


def plot_spike(
    capacity_per_replica: float,
    target_utilization: float,
    replicas: Callable[[float, float, float], int],
    profile: list[tuple[int, float]] | None = None,
) -> Figure:
    """Traffic over time and the replicas a student's `replicas` function asks for, on twin axes."""
    profile = profile or spike_profile()
    minutes = [m for m, _ in profile]
    load = [rps for _, rps in profile]
    needed = [replicas(rps, capacity_per_replica, target_utilization) for rps in load]
    figure = Figure(figsize=(10, 4), layout="constrained")
    traffic = figure.subplots()
    traffic.fill_between(minutes, load, color="C0", alpha=0.25)
    traffic.plot(minutes, load, color="C0", label="requests/second")
    traffic.set_xlabel("minute")
    traffic.set_ylabel("requests/second", color="C0")
    right = traffic.twinx()
    right.step(minutes, needed, where="post", color="C3", label="replicas needed")
    right.set_ylabel("replicas needed", color="C3")
    peak = max(needed)
    right.set_ylim(0, peak * 1.15)
    right.annotate(
        f"{peak} replicas at the peak",
        (minutes[needed.index(peak)], peak),
        xytext=(8, -18),
        textcoords="offset points",
        color="C3",
    )
    traffic.set_title(
        f"A {load[0]:,.0f} -> {max(load):,.0f} req/s spike at "
        f"{capacity_per_replica:,.0f} req/s per replica, {target_utilization:.0%} target load"
    )
    return figure
