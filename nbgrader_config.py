"""nbgrader settings: the repository root is the course directory; no exchange is used."""

from pathlib import Path

c = get_config()  # noqa: F821 - nbgrader injects get_config when it loads this file

c.CourseDirectory.root = str(Path(__file__).resolve().parent)
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"
c.CourseDirectory.course_id = "k8s-ml-lesson01"
