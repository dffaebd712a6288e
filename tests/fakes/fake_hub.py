"""FAKE Hugging Face hub: only ``GET /api/models/<repo>/auth-check``, answering like the real one
(200 with access, 401 without or with a wrong token, 403 for a gated repo the token was not granted).
For the workflow's plan step, which runs in a subprocess where respx cannot reach."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    """``with FakeHub(token, granted={'google/gemma-2-9b-it'}) as hub:`` then ``HF_ENDPOINT=hub.url``."""

    def __init__(self, token: str, granted: set[str]):
        self.token, self.granted, self.requests = token, set(granted), []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                hub.requests.append(self.path)
                repo = self.path.removeprefix("/api/models/").removesuffix("/auth-check")
                if self.headers.get("Authorization") != f"Bearer {hub.token}":
                    status = 401
                else:
                    status = 200 if repo in hub.granted else 403
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
