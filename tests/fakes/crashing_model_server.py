"""A FAKE embedded model server that loads, then fails its first computation (fault injection for the launcher).

``--mode segfault``: answers ``GET /v1/models``, then dies by SIGSEGV on the first POST, as a
llama.cpp built for CPU features it cannot use does (ggml's AMX kernels on AMX Xeons);
``--mode http500``: answers every POST with HTTP 500; ``--mode ok``: answers every POST with a
one-token completion. Run: ``python -m tests.fakes.crashing_model_server --port N --mode M``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["segfault", "http500", "ok"], required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if args.mode == "segfault":
                print("ggml_backend_amx_mul_mat: (fake) about to crash", flush=True)
                os.kill(os.getpid(), signal.SIGSEGV)
            if args.mode == "http500":
                self._send(500, {"error": {"message": "fake engine failure"}})
                return
            self._send(200, {"object": "text_completion", "choices": [{"index": 0, "text": ".", "finish_reason": "length"}]})

        def log_message(self, *_: object) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
