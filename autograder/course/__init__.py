"""What only the course and its grader use.

Steps done for the student and the hidden tests' references.

A graded kernel never sees this room (grading/jail.py hides it): nothing here may be imported by the
runtime a notebook needs (lab, lesson), or a submission could earn a point by calling it.
"""
