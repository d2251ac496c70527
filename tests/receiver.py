"""A real HTTP receiver for webhook tests: it keeps each POST and answers as told."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """An HTTP server on a free local port: it keeps each request, and answers `status` after `delay`."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        received = self.received = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, dict(self.headers), json.loads(body)))
                time.sleep(outer.delay)
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.status, self.delay = status, delay
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notifying(project) -> None:
    """The project's sandbox stage posts its events to the webhook named by TEST_WEBHOOK."""
    with open(project.root / "deploy.toml", "a") as f:
        f.write('\n[stages.sandbox.notify]\nwebhook = "env:TEST_WEBHOOK"\n')
