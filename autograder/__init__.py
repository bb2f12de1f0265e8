"""Lesson 01 of Kubernetes for ML Infrastructure: the lab, the lesson's checks and the autograder."""

from importlib.resources import files
from pathlib import Path

# The lesson's Kubernetes YAML: the repository's manifests/ folder, shipped as autograder.manifests.
MANIFESTS = Path(str(files("autograder.manifests")))
# The checkout this package runs from: the instructor's course tooling (source/, notebooks/) lives there.
REPO_ROOT = Path(__file__).resolve().parent.parent
