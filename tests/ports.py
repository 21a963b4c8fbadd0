"""A free port on 127.0.0.1 (no Django: tests/postgres.py uses it before the settings exist)."""

import socket


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
