"""Local TCP ports: pick a free one, or say who holds a busy one before Docker or kubectl fail."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from contextlib import ExitStack

import requests

from autograder.shared.errors import LabError
from autograder.shared.waiting import poll


class PortBusy(LabError):
    """A local port is taken; the message names the holder when it can and what to do next."""


class NotAnswering(LabError, TimeoutError):
    """A local server did not answer in time, or stopped before it did."""


def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel picks it)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different loopback ports nobody listens on (held together as the kernel picks)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def is_free(port: int) -> bool:
    """Whether a listener could bind `port` on every address, as `docker run -p` and kubectl do."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def require_free(port: int, holder: str | None = None) -> None:
    """Raise PortBusy, in plain words, when `port` is taken; `holder` names who took it if known."""
    if is_free(port):
        return
    who = holder or (
        f"another program (find it with `ss -ltnp 'sport = :{port}'`, "
        "or an earlier port-forward still running in a notebook or terminal)"
    )
    raise PortBusy(
        f"local port {port} is already in use by {who}. Stop it, or pick another port "
        "(pass None to let the lab choose a free one)."
    )


def wait_http(url: str, timeout: float = 30, alive: Callable[[], bool] | None = None) -> float:
    """Poll `url` until it answers 200; returns the seconds waited. `alive()` False stops early."""
    started = time.monotonic()

    def answered() -> bool:
        try:
            return requests.get(url, timeout=1).status_code == 200
        except requests.RequestException:
            if alive is not None and not alive():
                raise NotAnswering(f"{url} stopped before it answered") from None
            return False

    if not poll(answered, bool, timeout, interval=0.1):
        raise NotAnswering(f"{url} did not answer within {timeout:.0f} s")
    return time.monotonic() - started
