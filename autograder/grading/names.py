"""Names the grader derives from student IDs: DNS-1123 namespaces that never collide."""

from __future__ import annotations

import hashlib
import re

LEDGER_DIR = ".grading"  # in the course root: the grader's own records, readable by root only
MAX_LABEL = 63
MAX_ID = 64
STUDENT_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_ID - 1}}}")
_INVALID = re.compile(r"[^a-z0-9]+")


def digest(*parts: str, length: int = 8) -> str:
    """A short stable hash of `parts`: the same inputs give the same name on every run."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def namespace_for(student_id: str, assignment: str, course: str) -> str:
    """`grade-<student slug>-<hash>`: a valid namespace name, one per (course, assignment, ID)."""
    suffix = digest(course, assignment, student_id)
    room = MAX_LABEL - len("grade--") - len(suffix)
    slug = _INVALID.sub("-", student_id.lower())[:room].strip("-") or "student"
    return f"grade-{slug}-{suffix}"


def check_student_id(student_id: str) -> str | None:
    """None when the ID is safe as a folder name and as an nbgrader pattern, else why not."""
    if not STUDENT_ID.fullmatch(student_id):
        return (
            f"student ID '{printable(student_id)}' is refused as a folder name: use 1-{MAX_ID} "
            "letters, digits, '.', '_' or '-', starting with a letter or digit (no spaces, glob "
            "characters or path separators)"
        )
    return None


def folder_name(raw: bytes) -> str:
    """A folder name listed as bytes, as a str keeping non-UTF-8 bytes (failing the ID check)."""
    return raw.decode("utf-8", "surrogateescape")


def printable(name: str) -> str:
    """A name for logs and tables: non-UTF-8 bytes shown as escapes, never an encoding error."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
