"""Hosted image figures for `python -m autograder bench hosted`: builds, JupyterLab start, the practice cluster inside.

A browser benchmark (notebook 04 run in JupyterLab) plugs in as `browser_run`: a callable given the
running `HostedLab` (its `url` and `token`) that returns the seconds the notebook took; its figure
is printed with the others.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import docker

from autograder.build import hostedimage

BENCH_TAG = "bench-k8s-ml-lab-hosted:latest"
BrowserRun = Callable[[hostedimage.HostedLab], float]


def bench_hosted(runs: int = 3, browser_run: BrowserRun | None = None) -> dict[str, float]:
    """Seconds to build cold and cached, from `docker run` to JupyterLab and to a ready practice cluster."""
    figures: dict[str, float] = {}
    figures["image build, cold: no layer cache (s)"] = hostedimage.build(BENCH_TAG, nocache=True).seconds
    figures["image build, cached (s)"] = statistics.median(
        hostedimage.build(BENCH_TAG).seconds for _ in range(runs))
    to_lab, cluster_up, to_cluster = [], [], []
    for _ in range(runs):
        started = time.monotonic()
        with hostedimage.running(BENCH_TAG) as lab:
            to_lab.append(lab.seconds_to_lab)
            cluster_up.append(lab.cluster_up())
            to_cluster.append(time.monotonic() - started)
            rights = lab.process_rights()
            if browser_run is not None and len(to_lab) == 1:
                figures["notebook 04 run in the browser (s)"] = browser_run(lab)
    figures["container start to JupyterLab /api/status (s)"] = statistics.median(to_lab)
    figures["practice cluster up inside, as the user (s)"] = statistics.median(cluster_up)
    figures["container start to a ready practice cluster (s)"] = statistics.median(to_cluster)
    figures["processes while it ran (count)"] = len(rights)
    figures["of them not the notebook user, uid 1000 (count)"] = sum(row["uid"] != hostedimage.NB_UID for row in rights)
    figures["of them with an effective or permitted capability (count)"] = sum(
        bool(row["CapEff"] or row["CapPrm"]) for row in rights)
    docker.from_env().images.remove(BENCH_TAG)
    return figures
