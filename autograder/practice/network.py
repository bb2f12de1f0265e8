"""Pod networking: pod IPs from the pod network, relays leading into a container's network."""

from __future__ import annotations

import ipaddress
import socket
import threading
from typing import TYPE_CHECKING

from autograder.practice import container as sandbox

if TYPE_CHECKING:
    from autograder.practice.lifecycle import Container

POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")


class Relay:
    """A loopback port on the runtime's side into one container's network (kwok dials it)."""

    def __init__(self, target: Container) -> None:
        self.target = target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                incoming, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(incoming,), daemon=True).start()

    def _serve(self, incoming: socket.socket) -> None:
        process = self.target.process
        try:
            outgoing = sandbox.connect(process.pid if process else None, self.target.port, 5)
        except OSError:
            incoming.close()
            return
        outgoing.settimeout(None)
        threading.Thread(target=_pump, args=(outgoing, incoming), daemon=True).start()
        _pump(incoming, outgoing)

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, target: socket.socket) -> None:
    """Copy bytes one way until either side closes."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def free_ip(used: set[str]) -> str:
    """A pod IP from the pod network that no live pod holds."""
    for address in POD_NETWORK.hosts():
        text = str(address)
        if text not in used and not text.endswith(".0") and not text.endswith(".1"):
            used.add(text)
            return text
    raise RuntimeError("the practice pod network is full")
