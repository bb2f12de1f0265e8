"""The hub's spawner: every server runs confined (roles.py), started as root, become its user."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jupyterhub.spawner import LocalProcessSpawner
from traitlets import Unicode

from autograder.classroom import roles
from autograder.classroom.layout import DEFAULT_ROOT, Classroom

SERVER = str(roles.SCRIPTS / "jupyterhub-singleuser")


class ClassroomSpawner(LocalProcessSpawner):
    """LocalProcessSpawner whose servers cannot reach the hub's checkout, others' homes, masters."""

    classroom_root = Unicode(str(DEFAULT_ROOT), help="the folder `classroom up` made").tag(
        config=True
    )

    async def start(self) -> tuple[str, int]:
        room = Classroom.load(Path(self.classroom_root))
        self.cmd = roles.confined(room, self.user.name, [SERVER])
        self.environment = roles.environment(room, self.user.name)
        return await super().start()

    def make_preexec_fn(self, name: str) -> Callable[[], None] | None:
        """None: the server becomes its user inside confine.py, once its filesystem is made."""
        return None
