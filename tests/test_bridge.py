"""The jailed kernel's relay to the API server: bytes both ways, and no delay on its TCP ends."""

from __future__ import annotations

import socket
import threading

from autograder.grading.kernel import bridge


class RecordingListener(socket.socket):
    """A listener that keeps every connection it accepts, for the test to inspect."""

    accepted: list[socket.socket]

    def accept(self) -> tuple[socket.socket, object]:
        connection, address = super().accept()
        self.accepted.append(connection)
        return connection, address


def _sends_at_once(connection: socket.socket) -> bool:
    return bool(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def test_a_relayed_exchange_passes_both_ways_and_its_tcp_ends_do_not_wait_to_send() -> None:
    with socket.create_server(("127.0.0.1", 0)) as api_server, RecordingListener() as listener:
        upstreams: list[socket.socket] = []

        def connect() -> socket.socket:
            upstreams.append(socket.create_connection(api_server.getsockname()))
            return upstreams[-1]

        listener.accepted = []
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        threading.Thread(target=bridge.serve, args=(listener, connect), daemon=True).start()
        with socket.create_connection(listener.getsockname(), timeout=10) as kubectl:
            kubectl.sendall(b"GET /version")
            served, _ = api_server.accept()
            with served:
                assert served.recv(64) == b"GET /version"
                served.sendall(b"HTTP/1.1 200 OK\r\n")
                reply = b""
                while len(reply) < len(b"HTTP/1.1 200 OK\r\n"):
                    reply += kubectl.recv(64)
                # Mid-exchange, while the relay holds both connections open: Nagle's algorithm would
                # hold the reply's next part until the client's delayed ACK (~40 ms).
                assert len(listener.accepted) == len(upstreams) == 1
                assert _sends_at_once(listener.accepted[0]) and _sends_at_once(upstreams[0])
                served.sendall(b"\r\n{}")
                served.shutdown(socket.SHUT_WR)
                while part := kubectl.recv(64):
                    reply += part
        assert reply == b"HTTP/1.1 200 OK\r\n\r\n{}"
