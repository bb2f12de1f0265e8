"""Benchmarks that print figures, never pass or fail: cluster, images, kind, grading."""

from __future__ import annotations

import sys
from collections.abc import Callable

from autograder.shared.errors import LabError


def run(target: str, provider_name: str = "practice") -> int:
    """Print one benchmark's figures as `name: value` lines (medians of several runs)."""
    bench: Callable[[], dict[str, float]]
    if target == "cluster" and provider_name == "practice":
        from autograder.bench.cluster import bench_cluster as bench
    elif target == "cluster" and provider_name == "kind":
        from autograder.bench.kind import bench_kind as bench
    elif target == "image":
        from autograder.bench.image import bench_image as bench
    elif target == "hosted":
        from autograder.bench.hosted import bench_hosted as bench
    else:
        raise ValueError(f"no benchmark for {target} on {provider_name}")
    try:
        figures = bench()
    except LabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    width = max(len(name) for name in figures)
    print(f"benchmark {target} ({provider_name}), medians of 3 runs where repeated:")
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value:8.2f}")
    return 0
