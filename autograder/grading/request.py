"""What the class run asks of one grading worker.

Built once from GradingSettings, sent across as JSON.

The worker takes nothing else from its command line and reads no file for its settings: the course's
nbgrader_config.py is read once, by the class run, and travels in the request. Each setting has one
default (in GradingSettings) and one way in.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from traitlets.config import Config

from autograder.grading.settings import GradingSettings
from autograder.shared.errors import LabError

PATHS = ("course", "reader_kubeconfig", "lender_kubeconfig", "submitted_directory")


def plain_config(config: Config) -> dict[str, Any]:
    """The course's settings as plain JSON values, or a message naming the one that cannot cross."""
    try:
        return json.loads(json.dumps(config))
    except TypeError as error:
        raise LabError(
            f"nbgrader_config.py sets a value another process cannot be sent ({error}); "
            "give it as a plain string, number, list or dict"
        ) from None


@dataclass(frozen=True)
class WorkerRequest:
    """One submission to autograde, its identities' kubeconfigs, and how long its cells may take."""

    course: Path
    assignment: str
    student: str
    namespace: str
    reader_kubeconfig: Path
    lender_kubeconfig: Path | None
    submitted_directory: Path
    cell_timeout: int
    patience: float
    jail_hide: tuple[Path, ...]  # empty: the kernel runs unjailed
    course_config: dict[str, Any]  # nbgrader_config.py as the class run read it (plain_config)

    @classmethod
    def of(cls, settings: GradingSettings, **submission: object) -> WorkerRequest:
        """The request for one submission, its timeouts taken from the run's settings."""
        return cls(cell_timeout=settings.cell_timeout, patience=settings.patience, **submission)  # type: ignore[arg-type]

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> WorkerRequest:
        """The request as sent; a missing or unknown field is an error, not a default."""
        given = json.loads(text)
        names = {field.name for field in fields(cls)}
        if set(given) != names:
            raise ValueError(
                f"a worker request has exactly the fields {sorted(names)}; got {sorted(given)}"
            )
        for name in PATHS:
            given[name] = None if given[name] is None else Path(given[name])
        given["jail_hide"] = tuple(Path(path) for path in given["jail_hide"])
        return cls(**given)
