"""How `python -m autograder grade` grades: traitlets in nbgrader_config.py or command line."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from traitlets import Bool, Float, Integer, Unicode
from traitlets.config import Configurable

from autograder.shared.errors import LabError


class GradingSettings(Configurable):
    """`c.GradingSettings.<name> = ...` in nbgrader_config.py; `grade --jobs/...` overrides."""

    jobs = Integer(1, help="submissions graded at once").tag(config=True)
    cell_timeout = Integer(
        120, help="seconds a cell may run before it is interrupted (then killed)"
    ).tag(config=True)
    patience = Float(30.0, help="seconds a test may wait for the cluster to converge").tag(
        config=True
    )
    regrade = Bool(False, help="grade again submissions already graded").tag(config=True)
    feedback = Bool(True, help="write feedback HTML and grades.csv after the run").tag(config=True)
    feedback_timeout = Float(
        60.0,
        help="seconds one student's feedback may take to render (about 1 s is usual); "
        "past it, it is skipped",
    ).tag(config=True)
    jail = Bool(
        True, help="run student kernels in the jail (isolation required unless `unisolated`)"
    ).tag(config=True)
    unisolated = Bool(
        False,
        help="grade even where kernels cannot be jailed: students can then read this "
        "machine's cluster credentials",
    ).tag(config=True)
    practice_setup = Unicode(
        "",
        help="'module:function' called with an admin Lab of the practice cluster "
        "before grading, e.g. to load the images students deploy",
    ).tag(config=True)

    def practice_hook(self) -> Callable[[Any], None] | None:
        """The configured preparation function, or None when the course needs nothing prepared."""
        if not self.practice_setup:
            return None
        module, _, name = self.practice_setup.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            raise LabError(
                f"GradingSettings.practice_setup = {self.practice_setup!r} in nbgrader_config.py "
                f"does not name a function: {error}"
            ) from None


def default(name: str) -> Any:
    """A setting's default, for code needing it without a configured instance (one place each)."""
    return GradingSettings.class_traits()[name].default_value
