"""A real CloudEvents sink on loopback: parses each request with the CloudEvents SDK, can hold or refuse."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cloudevents.core.bindings.http import HTTPMessage, from_http_event


class Sink:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.attempts = 0
        self.refuse = 0  # answer 503 to this many requests (after any hold)
        self.hold = threading.Event()
        self.hold.set()  # set: answer at once; cleared: requests wait until it is set again
        self.held = 0
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink._lock:
                    sink.attempts += 1
                    waiting = not sink.hold.is_set()
                    sink.held += waiting
                sink.hold.wait(120)
                with sink._lock:
                    refused = sink.refuse > 0
                    sink.refuse -= refused
                    if not refused:
                        sink.events.append(from_http_event(HTTPMessage(dict(self.headers.items()), body)))
                code = 503 if refused else 202
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps({"accepted": not refused}).encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Sink":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    def of_type(self, type_: str, subject: str | None = None) -> list[Any]:
        with self._lock:
            return [e for e in self.events if e.get_type() == type_ and subject in (None, e.get_subject())]
