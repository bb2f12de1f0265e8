"""The lesson's data and reference logic: figures as the lesson states them, edge cases handled."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest
from kubernetes import client
from matplotlib.figure import Figure

from autograder.lesson import (
    ecosystem,
    fleet,
    manifests,
    observe,
    platforms,
    scenarios,
    troubleshoot,
)
from autograder.lesson.platforms import (
    CLOUD_NATIVE,
    COMPOSE,
    CONTAINERIZE_FIRST,
    KUBERNETES,
    MATRIX,
    PLATFORMS,
    SWARM,
    Workload,
)


def test_four_scenarios_and_seven_capabilities():
    assert [s.name for s in scenarios.SCENARIOS] == [
        "Scaling",
        "Reliability",
        "Updates",
        "Resource management",
    ]
    assert len(scenarios.CORE_CAPABILITIES) == 7
    assert len(scenarios.WITHOUT_ORCHESTRATION) == 5
    assert [m.year for m in scenarios.HISTORY] == [None, 2014, 2015]


def test_cases_carry_the_lessons_figures():
    labels = {(c.company, f.label) for c in scenarios.CASES for f in c.figures}
    assert labels >= {
        ("Uber", "1,000+"),
        ("Uber", "95%"),
        ("Spotify", "200+"),
        ("Spotify", "3x"),
        ("Spotify", "70%"),
        ("Airbnb", "500+"),
        ("Airbnb", "10+"),
        ("OpenAI", "thousands"),
    }
    assert scenarios.case(" SPOTIFY ").platform == "ML feature platform"


def test_unknown_case_lists_the_known_ones():
    with pytest.raises(KeyError, match="Uber, Spotify, OpenAI, Airbnb"):
        scenarios.case("Netflix")


def test_spike_figures_agree_with_each_other():
    assert scenarios.implied_capacity_per_replica() == 200
    per_server = scenarios.spread(scenarios.SPIKE_EXTRA_CONTAINERS, scenarios.SPIKE_SERVERS)
    assert per_server == [5] * 10 and max(per_server) == scenarios.CRASHED_SERVER_CONTAINERS
    assert scenarios.spread(7, 3) == [3, 2, 2]
    with pytest.raises(ValueError):
        scenarios.spread(5, 0)


def test_spike_profile_goes_from_base_to_peak_and_back():
    loads = [rps for _, rps in scenarios.spike_profile()]
    assert loads[0] == loads[-1] == 100 and max(loads) == 10_000 and len(loads) == 61


def test_plots_are_figures():
    assert isinstance(scenarios.plot_cases(), Figure)
    assert isinstance(scenarios.plot_spike(200, 0.7, replicas=lambda *args: 1), Figure)
    assert isinstance(platforms.plot_matrix(), Figure)


def test_plot_spike_uses_the_function_it_is_given():
    calls = []
    scenarios.plot_spike(200, 1.0, replicas=lambda *args: calls.append(args) or 1)
    assert len(calls) == 61


def test_matrix_is_the_lessons():
    assert list(MATRIX) == [
        "Multi-host",
        "Auto-healing",
        "Load balancing",
        "GPU support",
        "Ecosystem",
        "Learning curve",
        "ML use cases",
        "Cost (managed)",
    ]
    assert MATRIX["GPU support"] == {
        COMPOSE: "Manual",
        SWARM: "Manual",
        KUBERNETES: "Device plugin",
        CLOUD_NATIVE: "Limited",
    }
    assert MATRIX["Cost (managed)"][KUBERNETES] == "Nodes (+ some fees)"
    assert all(set(row) == set(PLATFORMS) for row in MATRIX.values())


def test_no_platform_is_scored_free():
    costs = {p: platforms.SCORES["Cost (managed)"][MATRIX["Cost (managed)"][p]] for p in PLATFORMS}
    assert "Free" not in MATRIX["Cost (managed)"].values() and len(set(costs.values())) == 1


def test_every_rating_has_a_score():
    table = platforms.score_table()
    assert len(table) == 8 and all(len(row) == 4 and all(0 <= s <= 3 for s in row) for row in table)


def test_rating_names_the_valid_choices():
    assert platforms.rating("Learning curve", KUBERNETES) == "Steep"
    with pytest.raises(KeyError, match="Multi-host"):
        platforms.rating("Speed", KUBERNETES)
    with pytest.raises(KeyError, match="Docker Swarm"):
        platforms.rating("Multi-host", "Nomad")


# The decision framework's answers, literally: the reference is kept out of the students' package.
DECISIONS = {
    answers: (
        CONTAINERIZE_FIRST
        if not answers[0]
        else COMPOSE
        if not answers[1]
        else KUBERNETES
        if answers[3] or not answers[2]
        else CLOUD_NATIVE
    )
    for answers in itertools.product([True, False], repeat=4)
}


def recommend(workload: Workload) -> str:
    return DECISIONS[tuple(platforms.framework_answers(workload).values())]


@pytest.mark.parametrize(
    "workload, expected",
    [
        (Workload("prototype", False, 5, 1, 1, 95.0), CONTAINERIZE_FIRST),
        (Workload("low traffic", True, 99, 1, 1, 99.0), COMPOSE),
        (Workload("at 1000 req/s", True, 1000, 1, 2, 99.0), CLOUD_NATIVE),
        (Workload("just under 1000 req/s", True, 999, 9, 2, 99.8), COMPOSE),
        (Workload("ten services", True, 10, 10, 2, 99.0), CLOUD_NATIVE),
        (Workload("three nines", True, 10, 1, 8, 99.9), KUBERNETES),
        (Workload("five engineers", True, 2000, 5, 5, 99.0), KUBERNETES),
        (Workload("two-person team with GPUs", True, 10, 1, 2, 99.0, gpus=True), CLOUD_NATIVE),
        (Workload("four-person team with GPUs", True, 1500, 3, 4, 99.9, gpus=True), CLOUD_NATIVE),
        (Workload("five engineers with GPUs", True, 10, 1, 5, 99.0, gpus=True), KUBERNETES),
        (Workload("small team, multi-cloud", True, 10, 1, 2, 99.0, multi_cloud=True), KUBERNETES),
        (Workload("100 services, small team", True, 5000, 100, 3, 99.0), KUBERNETES),
    ],
)
def test_recommend_reads_the_lessons_thresholds(workload, expected):
    assert recommend(workload) == expected


def test_example_workloads_span_every_outcome():
    assert {recommend(w) for w in platforms.EXAMPLE_WORKLOADS} == {
        CONTAINERIZE_FIRST,
        COMPOSE,
        CLOUD_NATIVE,
        KUBERNETES,
    }


def test_landscape_categories_and_queries():
    assert ecosystem.CATEGORIES == (
        "Core infrastructure",
        "Networking",
        "Storage",
        "Observability",
        "CI/CD",
        "ML-specific",
        "Security",
    )
    assert [p.name for p in ecosystem.projects_in("ml-specific")] == [
        "Kubeflow",
        "KServe",
        "Seldon Core",
        "Argo Workflows",
    ]
    assert ecosystem.find_project("opa").category == "Security"
    assert {p.name for p in ecosystem.projects_for("GitOps")} == {"ArgoCD", "Flux"}
    assert ecosystem.projects_for("quantum") == []


def test_networking_names_the_gateway_api_not_the_retired_ingress_nginx():
    names = [p.name for p in ecosystem.projects_in("networking")]
    assert "Gateway API" in names and not any("nginx" in name.lower() for name in names)


def test_minikube_needs_a_container_runtime_or_a_hypervisor():
    minikube = ecosystem.INSTALL_OPTIONS[0]
    assert any("container runtime" in need and "hypervisor" in need for need in minikube.needs)
    assert not any(need in ("Docker", "virtualization support") for need in minikube.needs)


def test_near_misses_get_suggestions():
    with pytest.raises(KeyError, match="did you mean Prometheus"):
        ecosystem.find_project("Promethius")
    with pytest.raises(KeyError, match="choose one of"):
        ecosystem.projects_in("zzz")


def test_distributions():
    assert set(ecosystem.DISTRIBUTIONS) == {
        "Local development",
        "Production (cloud)",
        "On-premises",
        "ML workloads",
    }
    assert list(ecosystem.distributions("production")) == ["GKE", "EKS", "AKS", "DOKS", "LKE"]
    assert len(ecosystem.distributions()) == 17
    assert "kind" in ecosystem.distributions("local")
    assert [o.name for o in ecosystem.INSTALL_OPTIONS] == [
        "minikube",
        "kind",
        "Docker Desktop",
        "practice cluster",
    ]


def test_table_prints_aligned_and_reads_columns():
    table = observe.Table(("NAME", "STATUS"), (("practice-worker-1", "Ready"), ("gpu", "NotReady")))
    assert str(table).splitlines() == [
        "NAME                STATUS",
        "practice-worker-1   Ready",
        "gpu                 NotReady",
    ]
    assert table.column("STATUS") == ["Ready", "NotReady"]
    assert "<th style='text-align:left'>NAME</th>" in table._repr_html_()


def test_age_is_compact_like_kubectl():
    now = datetime.now(timezone.utc)
    assert observe.age(now - timedelta(seconds=42)) == "42s"
    assert observe.age(now - timedelta(minutes=7, seconds=3)) == "7m"
    assert observe.age(now - timedelta(days=2, hours=1)) == "2d"
    assert observe.age(None) == "<unknown>"


def test_rollout_timeline_backfills_new_replica_sets():
    timeline = observe.RolloutTimeline("ml-api")
    timeline.add(0.0, {"old": 3})
    timeline.add(0.5, {"old": 3, "new": 1})
    timeline.add(1.0, {"old": 2, "new": 1})
    assert timeline.ready == {"old": [3, 3, 2], "new": [0, 1, 1]}
    assert isinstance(timeline.plot(), Figure)


def test_deployment_manifest_labels_and_resources():
    doc = manifests.deployment("gpu-model", replicas=2, limits={"nvidia.com/gpu": "1"}, part="gpu")
    container = doc["spec"]["template"]["spec"]["containers"][0]
    assert doc["metadata"]["labels"] == {"app": "gpu-model", manifests.PART_LABEL: "gpu"}
    assert doc["spec"]["selector"]["matchLabels"] == {"app": "gpu-model"}
    assert container["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    assert "command" not in container and "nodeSelector" not in doc["spec"]["template"]["spec"]


def test_model_fleet_fits_the_practice_cluster():
    cpu, memory = fleet.fleet_requests()
    assert sum(m.replicas for m in fleet.MODEL_FLEET) == 21
    assert cpu == 19.5 and cpu < 3 * 4 + 2 * 8 and memory < 3 * 16 + 2 * 61
    docs = fleet.fleet_manifests()
    assert [d["metadata"]["name"] for d in docs] == [m.name for m in fleet.MODEL_FLEET]
    resources = docs[0]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "500m", "memory": "1Gi"}


def _restarted_pod(ready: bool, last_exit: int, failed_ago: timedelta) -> client.V1Pod:
    now = datetime.now(timezone.utc)
    status = client.V1ContainerStatus(
        name="app",
        image="ml-api:v1",
        image_id="",
        ready=ready,
        restart_count=3,
        state=client.V1ContainerState(running=client.V1ContainerStateRunning(started_at=now)),
        last_state=client.V1ContainerState(
            terminated=client.V1ContainerStateTerminated(
                exit_code=last_exit, finished_at=now - failed_ago
            )
        ),
    )
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="crashy"),
        status=client.V1PodStatus(phase="Running", container_statuses=[status]),
    )


@pytest.mark.parametrize(
    ("ready", "last_exit", "failed_ago", "expected"),
    [
        (False, 3, timedelta(seconds=2), "CrashLoopBackOff"),
        (True, 3, timedelta(seconds=1), "CrashLoopBackOff"),  # the second in which it runs again
        (True, 3, timedelta(minutes=30), "Running"),  # crashed once long ago, healthy since
        (True, 0, timedelta(seconds=1), "Running"),  # restarted after a clean exit
    ],
)
def test_a_container_restarting_after_failures_is_crash_looping_even_while_it_runs(
    ready: bool, last_exit: int, failed_ago: timedelta, expected: str
) -> None:
    assert troubleshoot._status(_restarted_pod(ready, last_exit, failed_ago)) == expected
