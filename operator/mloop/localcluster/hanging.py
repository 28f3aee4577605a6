"""A server that hangs: it accepts TCP connections and never answers. Tests and benchmarks point a model server's
shadow at it to show that a stuck target costs the callers nothing."""

from __future__ import annotations

import socket
import threading


class HangingServer:
    """Listens on a free loopback port and holds every connection open, silent, until closed."""

    def __init__(self, backlog: int = 1024) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:  # closed
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()

    def __enter__(self) -> HangingServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
