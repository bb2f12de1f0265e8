"""`python -m autograder doctor`: what this machine has for each cluster, the fix for a lack."""

from __future__ import annotations

import shutil
import subprocess

from autograder.shared import binaries, kubeconfig
from autograder.shared.dockerengine import unreachable_reason as docker_unreachable_reason
from autograder.shared.pins import PIN_OF

OK, MISSING = "ok", "MISSING"


def _go_version() -> str | None:
    if shutil.which("go") is None:
        return None
    return subprocess.run(
        ["go", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()


def findings() -> list[tuple[str, str, str]]:
    """(item, state, detail or fix) for Docker, Go, every binary and the current context."""
    rows = []
    docker_problem = docker_unreachable_reason()
    rows.append(
        (
            "docker",
            MISSING if docker_problem else OK,
            docker_problem or "the daemon answers (kind can run)",
        )
    )
    go = _go_version()
    rows.append(
        (
            "go",
            OK if go else MISSING,
            go
            or "install Go >= 1.24 so missing binaries can be built (https://go.dev/doc/install)",
        )
    )
    for name in sorted(PIN_OF):
        path = binaries.find(name)
        fix = (
            f"`python -m autograder cluster up` builds it ({PIN_OF[name].name} "
            f"{PIN_OF[name].version})"
            if go
            else "see: conda env create -f environment.yml"
        )
        rows.append((name, OK if path else MISSING, str(path) if path else fix))
    context = kubeconfig.current_context()
    if context is None:
        rows.append(("context", MISSING, "none set; `python -m autograder cluster up` creates one"))
    else:
        answers = kubeconfig.answers(context)
        rows.append(
            (
                "context",
                OK if answers else MISSING,
                f"{context}: "
                + (
                    "answers"
                    if answers
                    else "does not answer; `python -m autograder cluster up` starts the lab's"
                ),
            )
        )
    return rows


def report() -> int:
    """Print the findings as a table; exit 0 even with gaps, since practice needs few of them."""
    rows = findings()
    width = max(len(item) for item, _, _ in rows)
    for item, state, detail in rows:
        print(f"{item:<{width}}  {state:<7}  {detail}")
    return 0
