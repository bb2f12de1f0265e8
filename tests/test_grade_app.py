"""`grade` as a traitlets Application: the course's config read once, the command line above it."""

from __future__ import annotations

from pathlib import Path

import pytest

from autograder.grading.classrun.app import GradeApp
from autograder.grading.classrun.course import Course
from autograder.grading.settings import GradingSettings
from autograder.shared.errors import LabError


def course_with(tmp_path: Path, settings: str) -> Path:
    (tmp_path / "nbgrader_config.py").write_text(f"c = get_config()\n{settings}")
    return tmp_path


def initialized(*argv: str) -> GradeApp:
    app = GradeApp()
    app.initialize(list(argv))
    return app


def test_the_command_line_wins_over_the_course_config_and_the_rest_comes_from_it(
    tmp_path: Path,
) -> None:
    course = course_with(
        tmp_path,
        "c.GradingSettings.jobs = 3\nc.GradingSettings.cell_timeout = 50\n"
        "c.CourseDirectory.source_directory = 'masters'\n",
    )
    app = initialized(
        "lesson01",
        "--course",
        str(course),
        "--jobs",
        "2",
        "--student",
        "ann",
        "--student",
        "bo",
        "--regrade",
    )
    settings = GradingSettings(parent=app)
    assert (settings.jobs, settings.cell_timeout, settings.regrade) == (2, 50, True)
    assert (app.assignment, app.students, app.provider) == ("lesson01", ["ann", "bo"], None)
    read = Course(course, config=app.config)
    assert read.source("lesson01") == course / "masters" / "lesson01"
    assert read.config.CourseDirectory.root == str(course)


def test_without_a_setting_anywhere_each_default_is_the_one_in_grading_settings(
    tmp_path: Path,
) -> None:
    settings = GradingSettings(parent=initialized("lesson01", "--course", str(tmp_path)))
    assert (settings.jobs, settings.cell_timeout, settings.patience) == (1, 120, 30.0)


def test_no_assignment_or_two_are_refused_with_what_to_type(tmp_path: Path) -> None:
    for argv in (["--course", str(tmp_path)], ["lesson01", "lesson02", "--course", str(tmp_path)]):
        with pytest.raises(LabError, match="name one assignment to grade"):
            initialized(*argv)
