"""Lesson 01 of Kubernetes for ML Infrastructure: the lab, the lesson's checks, the autograder."""

from importlib.resources import files
from pathlib import Path

# The lesson's Kubernetes YAML: the repository's manifests/ folder, shipped as autograder.manifests.
try:
    MANIFESTS = Path(str(files("autograder.manifests")))
except ModuleNotFoundError:
    # Imported from a checkout that shadows the installed package
    # (`python -m autograder` run in the repository after a non-editable install, as in
    # the hosted image's home): manifests/ is beside it.
    MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
# The checkout this package runs from: the instructor's course tooling
# (source/, notebooks/) lives there.
REPO_ROOT = Path(__file__).resolve().parent.parent
# Set in a graded kernel whose grader builds the images it records (kind: the kernel has no Docker).
IMAGE_BUILDER_ENV = "LAB_IMAGE_BUILDER"
