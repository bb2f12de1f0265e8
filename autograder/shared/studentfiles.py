"""What a student's machine may hold of this project.

The lab runtime notebooks import, never an answer.

One allowlist for every place a student works: the student image (build/hostedimage.py) and a
classroom's runtime copy (classroom/setup.py). Nothing gets in unnamed: not source/ (the masters and
their hidden tests), not course/ (steps done for the student, the hidden tests' references), not
grading/, build/ or bench/ (the CLI imports them only to grade, build or measure), not the reference
app (modelserver's app.py and Dockerfile) nor the reference manifests.
"""

from __future__ import annotations

from itertools import takewhile
from pathlib import Path

# (glob in the repository, folder under the runtime's root, where `autograder` is importable)
RUNTIME = (
    ("autograder/__init__.py", "autograder"),
    # `python -m autograder cluster up|down|status` and `doctor`: the
    # student's own cluster, by hand.
    ("autograder/__main__.py", "autograder"),
    ("autograder/cli.py", "autograder"),
    ("autograder/doctor.py", "autograder"),
    ("autograder/classroom/layout.py", "autograder/classroom"),
    ("autograder/shared/*.py", "autograder/shared"),
    ("autograder/providers/*.py", "autograder/providers"),
    ("autograder/lab/*.py", "autograder/lab"),
    ("autograder/practice/*.py", "autograder/practice"),
    ("autograder/lesson/*.py", "autograder/lesson"),
    ("autograder/modelserver/__init__.py", "autograder/modelserver"),
    # A classroom's Assignments tab submits through this bounded exchange (classroom/setup.py).
    ("autograder/classroom/__init__.py", "autograder/classroom"),
    ("autograder/classroom/exchange.py", "autograder/classroom"),
    ("manifests/__init__.py", "autograder/manifests"),
    ("manifests/practice/*.yaml", "autograder/manifests/practice"),
)


def chosen(root: Path, allowlist: tuple[tuple[str, str], ...] = RUNTIME) -> dict[str, Path]:
    """Every file of the checkout at `root` the allowlist names, by its path under the target."""
    files: dict[str, Path] = {}
    for pattern, folder in allowlist:
        base = Path(*takewhile(lambda part: "*" not in part, Path(pattern).parent.parts))
        for path in sorted(root.glob(pattern)):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{folder}/{path.relative_to(root / base)}"] = path
    return files
