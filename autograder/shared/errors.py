"""One base for every error the lab raises on purpose: catch `LabError` and show its message."""


class LabError(Exception):
    """Something the user can fix; the message says what happened and what to do next."""
