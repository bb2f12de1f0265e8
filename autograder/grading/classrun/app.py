"""`python -m autograder grade`: a traitlets Application, configured as nbgrader's own commands are.

nbgrader_config.py in the course directory is read once, here; the command line's aliases and
flags override it. The settings then travel on as objects (GradingSettings, the Course's Config)
and, to the worker, as one JSON request.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets import Bool, Enum, List, TraitError, Unicode, default
from traitlets.config import Application

from autograder.grading import UNISOLATED_FLAG
from autograder.grading.classrun.course import CONFIG_FILE, Course, submit_masters
from autograder.grading.classrun.runner import grade_class, require_isolation, table
from autograder.grading.settings import GradingSettings
from autograder.providers.choice import PROVIDERS
from autograder.shared.errors import LabError

INTERRUPTED = (
    "interrupted: running submissions were stopped and their namespaces removed; the grades "
    "recorded so far are kept. Run the same command again to resume."
)


class GradeApp(Application):
    """Autograde submissions by the cluster state they produce."""

    name = "python -m autograder grade"
    description = (
        "Autograde the submissions of one assignment (e.g. lesson01) by the cluster state each "
        "student's notebooks produce, one namespace and one jailed worker per submission."
    )
    examples = (
        "python -m autograder grade lesson01 --jobs 2\n"
        "python -m autograder grade lesson01 --student alice --regrade\n"
        "python -m autograder grade lesson01 --masters --provider practice"
    )
    # traitlets reads these three per class, as nbgrader's apps declare them
    classes = [GradingSettings]  # noqa: RUF012
    aliases = {  # noqa: RUF012
        "jobs": "GradingSettings.jobs",
        "cell-timeout": "GradingSettings.cell_timeout",
        "patience": "GradingSettings.patience",
        "student": "GradeApp.students",
        "provider": "GradeApp.provider",
        "course": "GradeApp.course",
        "log-level": "Application.log_level",
    }
    flags = {  # noqa: RUF012
        "regrade": (
            {"GradingSettings": {"regrade": True}},
            "grade again submissions already graded",
        ),
        "no-feedback": (
            {"GradingSettings": {"feedback": False}},
            "write no feedback HTML or grades.csv",
        ),
        "masters": (
            {"GradeApp": {"masters": True}},
            "also grade the solved masters, as the student 'solved-masters': a self-test",
        ),
        UNISOLATED_FLAG.removeprefix("--"): (
            {"GradingSettings": {"unisolated": True}},
            "grade even where student kernels cannot be jailed: their code can then read this "
            "machine's cluster credentials",
        ),
    }

    course = Unicode(help="the nbgrader course directory (default: the current folder)").tag(
        config=True
    )
    provider = Enum(
        list(PROVIDERS), default_value=None, allow_none=True, help="the cluster to grade on"
    ).tag(config=True)
    students = List(Unicode(), help="grade only these students (repeat --student)").tag(config=True)
    masters = Bool(False, help="also grade the solved masters").tag(config=True)

    @default("course")
    def _current_folder(self) -> str:
        return os.getcwd()

    def initialize(self, argv: list[str] | None = None) -> None:
        """The command line first (it names the course), then the course's config beneath it."""
        self.parse_command_line(argv)
        if len(self.extra_args) != 1:
            raise LabError(
                "name one assignment to grade, e.g. `python -m autograder grade lesson01`"
            )
        self.assignment = self.extra_args[0]
        self.load_config_file(CONFIG_FILE, path=self.course)

    def start(self) -> int:  # type: ignore[override]
        """Grade the class and print its table; 0 when every submission was graded."""
        course = Course(Path(self.course), config=self.config)
        settings = GradingSettings(parent=self)
        require_isolation(settings)
        students = self.students or None
        if self.masters:
            solved = submit_masters(course.root, self.assignment)
            students = [*students, solved] if students else None
        try:
            outcomes = grade_class(
                course, self.assignment, students, settings, provider=self.provider
            )
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return 130
        print(table(outcomes))
        return 0 if all(o.status == "graded" for o in outcomes) else 2


def main(argv: list[str]) -> int:
    """Run `grade` with `argv` (after the word `grade`); a bad setting is one line, not a trace."""
    app = GradeApp()
    try:
        app.initialize(argv)
        return app.start()
    except TraitError as error:
        raise LabError(f"{error} (see `python -m autograder grade --help`)") from None
