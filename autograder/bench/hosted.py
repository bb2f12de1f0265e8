"""Hosted image figures for `python -m autograder bench hosted`.

Builds, JupyterLab start, the practice cluster inside.

Notebook 04's run time in JupyterLab in this image is the browser test's own report
(tests/test_browser.py, its image-served variant).
"""

from __future__ import annotations

import statistics
import time

import docker

from autograder.build import hostedimage

BENCH_TAG = "bench-k8s-ml-lab-hosted:latest"


def bench_hosted(runs: int = 3) -> dict[str, float]:
    """Seconds to build cold and cached, from `docker run` to JupyterLab, to a practice cluster."""
    figures: dict[str, float] = {}
    figures["image build, cold: no layer cache (s)"] = hostedimage.build(
        BENCH_TAG, nocache=True
    ).seconds
    figures["image build, cached (s)"] = statistics.median(
        hostedimage.build(BENCH_TAG).seconds for _ in range(runs)
    )
    to_lab, to_cluster, from_nothing = [], [], []
    for _ in range(runs):
        with hostedimage.running(BENCH_TAG) as lab:
            to_lab.append(lab.seconds_to_lab)
            # returns once the cluster the server started in the background is ready
            lab.cluster_up()
            to_cluster.append(time.monotonic() - lab.started_at)
            rights = lab.process_rights()
            lab.exec("python", "-m", "autograder", "cluster", "down", "--provider", "practice")
            from_nothing.append(lab.cluster_up())
    figures["container start to JupyterLab /api/status (s)"] = statistics.median(to_lab)
    figures["container start to a ready practice cluster (s)"] = statistics.median(to_cluster)
    figures["practice cluster up from nothing inside, as the user (s)"] = statistics.median(
        from_nothing
    )
    figures["processes while it ran (count)"] = len(rights)
    figures["of them not the notebook user, uid 1000 (count)"] = sum(
        row["uid"] != hostedimage.NB_UID for row in rights
    )
    figures["of them with an effective or permitted capability (count)"] = sum(
        bool(row["CapEff"] or row["CapPrm"]) for row in rights
    )
    docker.from_env().images.remove(BENCH_TAG)
    return figures
