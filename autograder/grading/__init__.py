"""Grade nbgrader submissions by the cluster state each student produced, one namespace per submission."""

from autograder.grading.runner import GradingError, Settings, grade_class, submit_masters, table

__all__ = ["GradingError", "Settings", "grade_class", "submit_masters", "table"]
