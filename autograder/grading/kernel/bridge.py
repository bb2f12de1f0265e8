"""The jailed kernel's one way out of its network namespace: a byte relay to the API server.

Outside, the grading worker accepts on a unix socket and connects each client to the API
server's TCP address. Inside the kernel's empty network namespace an unprivileged forwarder
accepts on 127.0.0.1:<the API server's port> and connects each client to that unix socket, so
the student's kubeconfig (and `kubectl port-forward`) work unchanged while etcd, kwok and every
other host port stay out of reach.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)
CHUNK = 65536


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy one direction until its end closes, then pass the close on (TLS and SPDY half-close)."""
    try:
        while data := source.recv(CHUNK):
            target.sendall(data)
    except OSError:
        pass
    finally:
        try:
            target.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _send_at_once(connection: socket.socket) -> None:
    """No Nagle delay on a TCP end.

    A relayed reply written in parts otherwise waits for the peer's delayed ACK, about 40 ms per
    exchange (each kubectl call and API request of a kernel paid it).
    """
    if connection.family in (socket.AF_INET, socket.AF_INET6):
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _splice(client: socket.socket, connect: Callable[[], socket.socket]) -> None:
    """Join one accepted client to a fresh upstream connection, both directions."""
    try:
        upstream = connect()
    except OSError as error:
        logger.warning("cannot reach the API server for a jailed kernel: %s", error)
        client.close()
        return
    for end in (client, upstream):
        _send_at_once(end)
    other = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
    other.start()
    _pump(client, upstream)
    other.join()
    client.close()
    upstream.close()


def serve(listener: socket.socket, connect: Callable[[], socket.socket]) -> None:
    """Accept forever; each client gets its own upstream connection."""
    while True:
        client, _ = listener.accept()
        threading.Thread(target=_splice, args=(client, connect), daemon=True).start()


def relay(path: Path, host: str, port: int) -> threading.Thread:
    """Outside the jail: serve `path` (connectable by any uid) in a thread, relayed to host:port."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    path.chmod(0o666)
    listener.listen(64)
    thread = threading.Thread(
        target=serve,
        args=(listener, lambda: socket.create_connection((host, port))),
        name="apiserver-relay",
        daemon=True,
    )
    thread.start()
    return thread


def unix_connection(path: str) -> socket.socket:
    """Inside the jail: a connection to the worker's relay."""
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
    except OSError:
        connection.close()
        raise
    return connection
