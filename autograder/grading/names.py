"""Names the grader derives from student IDs: DNS-1123 namespaces that never collide."""

from __future__ import annotations

import hashlib
import re

MAX_LABEL = 63
_INVALID = re.compile(r"[^a-z0-9]+")


def digest(*parts: str, length: int = 8) -> str:
    """A short stable hash of `parts`: the same inputs give the same name on every run."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def namespace_for(student_id: str, assignment: str, course: str) -> str:
    """`grade-<student slug>-<hash>`: a valid namespace name, distinct for every (course, assignment, ID)."""
    suffix = digest(course, assignment, student_id)
    room = MAX_LABEL - len("grade--") - len(suffix)
    slug = _INVALID.sub("-", student_id.lower())[:room].strip("-") or "student"
    return f"grade-{slug}-{suffix}"


def check_student_id(student_id: str) -> str | None:
    """None when nbgrader can use the ID as a folder name, else why not."""
    if not student_id or student_id.strip() != student_id:
        return f"student ID {student_id!r} is empty or has leading/trailing spaces"
    if student_id in {".", ".."} or "/" in student_id or "\0" in student_id or student_id.startswith("."):
        return f"student ID {student_id!r} cannot be a folder name under submitted/"
    return None
