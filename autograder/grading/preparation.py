"""What a course asks of the practice cluster before its submissions are graded, set in nbgrader_config.py."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from traitlets import Unicode
from traitlets.config import Configurable

from autograder.errors import LabError


class CoursePreparation(Configurable):
    """`c.CoursePreparation.practice_setup = "module:function"`: called with the grader's admin Lab."""

    practice_setup = Unicode("", help="'module:function' called with an admin Lab of the practice cluster "
                             "before grading, e.g. to load the images students deploy").tag(config=True)

    def practice_hook(self) -> Callable[[Any], None] | None:
        """The configured function, or None when the course needs nothing prepared."""
        if not self.practice_setup:
            return None
        module, _, name = self.practice_setup.partition(":")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            raise LabError(f"CoursePreparation.practice_setup = {self.practice_setup!r} in nbgrader_config.py "
                           f"does not name a function: {error}") from None
