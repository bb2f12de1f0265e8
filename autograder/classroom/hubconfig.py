"""The hub's settings for a classroom: read by the jupyterhub_config.py `classroom up` writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autograder.classroom.layout import Classroom


def configure(c: Any, root: Path, proxy: Path) -> None:
    """PAM log-ins for the class's Unix users, the classroom spawner, state in the hub's folder."""
    room = Classroom.load(root)
    c.JupyterHub.bind_url = room.url
    c.JupyterHub.hub_ip = "127.0.0.1"
    c.JupyterHub.hub_port = room.hub_port
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{room.proxy_api_port}"
    c.JupyterHub.db_url = f"sqlite:///{room.hub / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(room.hub / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(room.hub / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.command = [str(proxy)]
    c.ConfigurableHTTPProxy.pid_file = str(room.hub / "proxy.pid")
    c.JupyterHub.authenticator_class = "pam"
    c.PAMAuthenticator.open_sessions = False  # no login session manager on a class server
    c.Authenticator.allowed_users = {room.instructor, *room.students}
    c.Authenticator.admin_users = {room.instructor}
    c.JupyterHub.spawner_class = "autograder.classroom.spawner.ClassroomSpawner"
    c.ClassroomSpawner.classroom_root = str(room.root)
    c.Spawner.default_url = "/lab"
    # A busy machine starts JupyterLab slowly: the hub waits, and the page shows its progress
    # meanwhile.
    c.Spawner.start_timeout = 180
    c.Spawner.http_timeout = 180
