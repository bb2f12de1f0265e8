"""One base for every error the lab raises on purpose: catch `LabError` and show its message."""


class LabError(Exception):
    """Something the user can fix; the message says what happened and what to do next."""


class DockerfileMissing(LabError, FileNotFoundError):
    """An image is built from a folder the student has not yet given its Dockerfile."""

    def __init__(self, context: object) -> None:
        super().__init__(f"no Dockerfile in {context}: write one next to app.py first")
