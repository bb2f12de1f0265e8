"""Image figures for `python -m autograder bench image`: base image, cold and warm builds, start."""

from __future__ import annotations

import statistics
import time

import docker

from autograder.build import baseimage
from autograder.lab import images

BENCH_TAG = "bench-ml-api:v1"


def _quiet(_: str) -> None:
    """Benchmarks print their figures only."""


def bench_image(runs: int = 3) -> dict[str, float]:
    """Seconds to get the base image, to build without and with layer cache, to first /health."""
    client = images.docker_client()
    figures: dict[str, float] = {}
    started = time.monotonic()
    baseimage.ensure_python_base(client)
    figures[f"{baseimage.BASE_IMAGE} present, pulled or made (s)"] = time.monotonic() - started
    figures["cold build, no layer cache (s)"] = images.build(
        BENCH_TAG, nocache=True, progress=False
    ).seconds
    figures["warm build, every layer cached (s)"] = statistics.median(
        images.build(BENCH_TAG, progress=False).seconds for _ in range(runs)
    )
    starts = []
    for _ in range(runs):
        started = time.monotonic()
        with images.run_local(BENCH_TAG, port=None):
            starts.append(time.monotonic() - started)
    figures["container start to first healthy answer (s)"] = statistics.median(starts)
    docker.from_env().images.remove(BENCH_TAG)
    return figures
