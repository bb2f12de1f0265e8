"""Shared fixtures: a real practice cluster for the session, and a fresh namespace per test."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from autograder.lab import Lab, connect
from autograder.lab.practice import Practice


@pytest.fixture(scope="session")
def practice_cluster() -> Practice:
    """The practice cluster, created once (or reused) for the whole test session."""
    os.environ["LAB_CLUSTER"] = "practice"
    practice = Practice()
    practice.up()
    return practice


@pytest.fixture
def lab(practice_cluster: Practice, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A Lab on the practice cluster in a namespace of its own, deleted after the test."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    namespace = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    lab = connect("practice", namespace=namespace)
    yield lab
    lab.core.delete_namespace(namespace)
