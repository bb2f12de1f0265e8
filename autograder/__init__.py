"""Lesson 01 of Kubernetes for ML Infrastructure: the lab, the checks and the autograder."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = REPO_ROOT / "manifests"
