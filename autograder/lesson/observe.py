"""What `kubectl get` and `describe` show, as tables and charts a notebook can display."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from kubernetes import client
from kubernetes.utils import parse_quantity
from matplotlib.figure import Figure

from autograder.lab.workloads import (
    history,
    live_pods,
    raise_if_stuck,
    rollout_state,
    watch_deployment,
)
from autograder.lesson.checks import CheckResult
from autograder.shared import k8s
from autograder.shared.provider import Lab

GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class Table:
    """Rows under headers, printed aligned like kubectl and rendered as HTML in Jupyter."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __str__(self) -> str:
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(self.headers, *self.rows)
        ]
        return "\n".join(
            "   ".join(str(cell).ljust(w) for cell, w in zip(line, widths)).rstrip()
            for line in (self.headers, *self.rows)
        )

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{h}</th>" for h in self.headers)
        body = "".join(
            "<tr>" + "".join(f"<td style='text-align:left'>{c}</td>" for c in row) + "</tr>"
            for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def column(self, header: str) -> list[str]:
        """Every value under one header, for checks like "are all pods Running?"."""
        index = self.headers.index(header)
        return [row[index] for row in self.rows]


def age(moment: datetime | None) -> str:
    """kubectl's compact age: 42s, 7m, 3h, 2d."""
    if moment is None:
        return "<unknown>"
    seconds = max(0, int((datetime.now(timezone.utc) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def nodes(lab: Lab) -> Table:
    """`kubectl get nodes` plus each node's allocatable CPU, memory and GPUs."""
    rows = []
    for node in sorted(lab.core.list_node().items, key=lambda n: n.metadata.name):
        labels = node.metadata.labels or {}
        roles = sorted(
            key.split("/", 1)[1] for key in labels if key.startswith("node-role.kubernetes.io/")
        ) or ["<none>"]
        allocatable = node.status.allocatable or {}
        status = "Ready" if k8s.condition_true(node) else "NotReady"
        if node.spec.unschedulable:
            status += ",SchedulingDisabled"
        rows.append(
            (
                node.metadata.name,
                status,
                ",".join(roles),
                age(node.metadata.creation_timestamp),
                node.status.node_info.kubelet_version,
                allocatable.get("cpu", "0"),
                allocatable.get("memory", "0"),
                allocatable.get(GPU, "0"),
            )
        )
    return Table(("NAME", "STATUS", "ROLES", "AGE", "VERSION", "CPU", "MEMORY", "GPU"), tuple(rows))


def pod_status(pod: client.V1Pod) -> str:
    """The STATUS column of `kubectl get pods`: a waiting reason wins over the phase."""
    if pod.metadata.deletion_timestamp is not None:
        return "Terminating"
    for status in pod.status.container_statuses or []:
        waiting = status.state.waiting if status.state else None
        if waiting and waiting.reason:
            return waiting.reason
    return pod.status.phase or "Unknown"


def pods(lab: Lab, selector: str = "") -> Table:
    """`kubectl get pods -o wide` for the notebook's namespace."""
    rows = []
    found = lab.core.list_namespaced_pod(lab.namespace, label_selector=selector).items
    for pod in sorted(found, key=lambda p: p.metadata.name):
        statuses = pod.status.container_statuses or []
        ready = sum(1 for s in statuses if s.ready)
        restarts = sum(s.restart_count or 0 for s in statuses)
        rows.append(
            (
                pod.metadata.name,
                f"{ready}/{len(pod.spec.containers)}",
                pod_status(pod),
                str(restarts),
                age(pod.metadata.creation_timestamp),
                pod.spec.node_name or "<none>",
            )
        )
    return Table(("NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"), tuple(rows))


def deployments(lab: Lab, selector: str = "") -> Table:
    """`kubectl get deployments -o wide`."""
    rows = []
    for d in lab.apps.list_namespaced_deployment(lab.namespace, label_selector=selector).items:
        images = ",".join(c.image for c in d.spec.template.spec.containers)
        rows.append(
            (
                d.metadata.name,
                f"{d.status.ready_replicas or 0}/{d.spec.replicas}",
                str(d.status.updated_replicas or 0),
                str(d.status.available_replicas or 0),
                age(d.metadata.creation_timestamp),
                images,
            )
        )
    return Table(("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "IMAGES"), tuple(rows))


def services(lab: Lab, selector: str = "") -> Table:
    """`kubectl get services`."""
    rows = []
    for s in lab.core.list_namespaced_service(lab.namespace, label_selector=selector).items:
        ingress = (s.status.load_balancer.ingress or []) if s.status.load_balancer else []
        external = ",".join(i.ip or i.hostname for i in ingress) or (
            "<pending>" if s.spec.type == "LoadBalancer" else "<none>"
        )
        ports = ",".join(
            f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}"
            for p in s.spec.ports or []
        )
        rows.append(
            (
                s.metadata.name,
                s.spec.type,
                s.spec.cluster_ip,
                external,
                ports,
                age(s.metadata.creation_timestamp),
            )
        )
    return Table(("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"), tuple(rows))


def events(lab: Lab, kind: str, name: str) -> Table:
    """The Events section of `kubectl describe KIND NAME`, oldest first."""
    found = lab.core.list_namespaced_event(
        lab.namespace, field_selector=f"involvedObject.kind={kind},involvedObject.name={name}"
    ).items
    found.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    rows = tuple(
        (
            e.type,
            e.reason,
            e.source.component
            if e.source and e.source.component
            else (e.reporting_component or ""),
            (e.message or "").strip(),
        )
        for e in found
    )
    return Table(("TYPE", "REASON", "FROM", "MESSAGE"), rows)


def rollout_history(lab: Lab, name: str) -> Table:
    """`kubectl rollout history deployment/NAME`, with each revision's image and ReplicaSet."""
    rows = tuple(
        (str(r.number), ",".join(r.images), r.replica_set, str(r.ready)) for r in history(lab, name)
    )
    return Table(("REVISION", "IMAGES", "REPLICASET", "READY"), rows)


def logs(lab: Lab, pod: str, tail: int = 5) -> str:
    """`kubectl logs POD --tail=N`; a refusal comes back as a sentence instead of a traceback."""
    try:
        text = lab.core.read_namespaced_pod_log(pod, lab.namespace, tail_lines=tail)
    except client.ApiException as error:
        reason = (error.body or error.reason or "").strip()
        return f"(the cluster could not return logs of {pod}: {error.status} {reason[:300]})"
    return text or "(no output yet)"


@dataclass
class RolloutTimeline:
    """Ready pods per ReplicaSet sampled over a rollout, labelled by revision and image."""

    deployment: str
    seconds: list[float] = field(default_factory=list)
    ready: dict[str, list[int]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def add(self, at: float, counts: dict[str, int]) -> None:
        """Record one sample; a ReplicaSet first seen now gets zeros for the earlier samples."""
        for name in counts.keys() - self.ready.keys():
            self.ready[name] = [0] * len(self.seconds)
        self.seconds.append(at)
        for name, series in self.ready.items():
            series.append(counts.get(name, 0))

    def plot(self) -> Figure:
        """Stacked ready pods per ReplicaSet over time: old revisions drain as the new one fills."""
        figure = Figure(figsize=(9, 4), layout="constrained")
        ax = figure.subplots()
        names = sorted(self.ready, key=lambda n: self.labels.get(n, n))
        if self.seconds:
            # Hold the last sample a little, so the final state has a visible width.
            hold = self.seconds + [self.seconds[-1] + max(0.5, 0.1 * self.seconds[-1])]
            ax.stackplot(
                hold,
                *[self.ready[n] + self.ready[n][-1:] for n in names],
                labels=[self.labels.get(n, n) for n in names],
                step="post",
                alpha=0.8,
            )
            ax.legend(loc="lower left")
        ax.set_xlabel("seconds since the update started")
        ax.set_ylabel("ready pods")
        ax.set_title(f"Rolling update of deployment/{self.deployment}: ready pods per ReplicaSet")
        return figure


def watch_rollout(lab: Lab, name: str, timeout: float = 180, live: bool = True) -> RolloutTimeline:
    """Record ready pods per ReplicaSet on each change until the rollout completes; redraw.

    A rollout whose new pods wait on what time does not fix (an image never loaded, a crash loop)
    raises RolloutStuck at once, as wait_for_rollout does, instead of drawing until the timeout.
    """
    timeline = RolloutTimeline(name)
    handle = None
    if live:
        from IPython.display import display

        handle = display(timeline.plot(), display_id=True)
    started = last_drawn = time.monotonic()

    def record(deployment: client.V1Deployment) -> bool:
        nonlocal last_drawn
        sets = k8s.owned_replica_sets(lab.apps, deployment)
        for rs in sets:
            images = ",".join(c.image for c in rs.spec.template.spec.containers)
            timeline.labels[rs.metadata.name] = f"revision {k8s.revision(rs) or '?'}: {images}"
        now = time.monotonic()
        timeline.add(
            now - started, {rs.metadata.name: rs.status.ready_replicas or 0 for rs in sets}
        )
        # The Deployment's status can finish a moment before the old ReplicaSets' own status
        # shows their last pod gone: wait for that too.
        old_ready = sum(
            rs.status.ready_replicas or 0
            for rs in sets
            if k8s.revision(rs) != k8s.revision(deployment)
        )
        done = rollout_state(deployment)[0] and old_ready == 0
        if handle is not None and (done or now - last_drawn > 1):
            handle.update(timeline.plot())
            last_drawn = now
        if not done:
            raise_if_stuck(lab, deployment)
        return done

    watch_deployment(lab, name, record, timeout, resync=0.5)
    return timeline


def _requests(pod: client.V1Pod, resource: str) -> float:
    return float(
        sum(
            parse_quantity((c.resources.requests or {}).get(resource, "0"))
            for c in pod.spec.containers
            if c.resources
        )
    )


def _placed_pods(lab: Lab, selector: str = "") -> dict[str, list[client.V1Pod]]:
    """This namespace's scheduled, live pods grouped by the node they were placed on."""
    placed: dict[str, list[client.V1Pod]] = {}
    for pod in live_pods(lab, selector):
        if pod.spec.node_name:
            placed.setdefault(pod.spec.node_name, []).append(pod)
    return placed


def _allocatable(node: client.V1Node, resource: str) -> float:
    return float(parse_quantity((node.status.allocatable or {}).get(resource, "0")))


def plot_bin_packing(lab: Lab, selector: str = "", group_label: str = "app") -> Figure:
    """Requested CPU and memory per node, stacked by each pod's `group_label`, against capacity."""
    pods_by_node = _placed_pods(lab, selector)
    nodes = sorted(lab.core.list_node().items, key=lambda n: n.metadata.name)
    names = [node.metadata.name for node in nodes]
    groups = sorted(
        {
            (p.metadata.labels or {}).get(group_label, "?")
            for pods_here in pods_by_node.values()
            for p in pods_here
        }
    )
    colours = {group: f"C{i % 10}" for i, group in enumerate(groups)}
    figure = Figure(figsize=(11, 4.5), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, resource, scale, capacity, unit in (
        (axes[0], "cpu", 1, [_allocatable(node, "cpu") for node in nodes], "CPU cores"),
        (
            axes[1],
            "memory",
            2**30,
            [_allocatable(node, "memory") / 2**30 for node in nodes],
            "memory (GiB)",
        ),
    ):
        bottom = [0.0] * len(names)
        for group in groups:
            heights = [
                sum(
                    _requests(p, resource)
                    for p in pods_by_node.get(node, [])
                    if (p.metadata.labels or {}).get(group_label, "?") == group
                )
                / scale
                for node in names
            ]
            ax.bar(names, heights, bottom=bottom, color=colours[group], label=group)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.bar(names, capacity, fill=False, edgecolor="black", linestyle="--", label="allocatable")
        ax.set_ylabel(f"requested {unit}")
        ax.tick_params(axis="x", rotation=30)
    axes[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    figure.suptitle("Bin-packing: what the scheduler placed on each node")
    return figure


def cluster_ready(lab: Lab) -> CheckResult:
    """Self-check for notebook 3: the API answers and every node reports Ready."""
    table = nodes(lab)
    if not table.rows:
        return CheckResult(
            "cluster_ready",
            False,
            "the cluster has no nodes yet: wait a few seconds "
            "and re-run, or recreate it with `python -m autograder cluster up`",
        )
    not_ready = [row[0] for row in table.rows if not row[1].startswith("Ready")]
    if not_ready:
        return CheckResult(
            "cluster_ready",
            False,
            f"nodes not Ready: {', '.join(not_ready)}; "
            "look at their conditions with `kubectl describe node NAME`",
        )
    return CheckResult("cluster_ready", True, f"{len(table.rows)} nodes Ready on {lab.context}")
