"""A stand-in for the Hugging Face Hub on 127.0.0.1: serves files laid out as `/{repo}/resolve/{revision}/{name}`
with the headers `huggingface_hub` reads (ETag, X-Repo-Commit, Content-Length), for tests that run the real download
code with `HF_ENDPOINT` and reach nothing outside the machine."""
from __future__ import annotations

import hashlib
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _handler(files: dict[str, tuple[str, str]], requests: list[str]):
    """files: URL path -> (local file, commit hash)."""

    class Handler(BaseHTTPRequestHandler):
        def _headers(self) -> str | None:
            requests.append(f"{self.command} {self.path}")
            found = files.get(self.path.split("?")[0])
            if found is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            path, commit = found
            self.send_response(200)
            self.send_header("Content-Length", str(os.path.getsize(path)))
            self.send_header("ETag", f'"{_etag(path)}"')
            self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            return path

        def do_HEAD(self):  # noqa: N802 (http.server's naming)
            self._headers()

        def do_GET(self):  # noqa: N802
            path = self._headers()
            if path is not None:
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        self.wfile.write(block)

        def log_message(self, *args):  # keep the test output clean
            pass

    return Handler


def _etag(path: str) -> str:
    stat = os.stat(path)
    return hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()


@contextmanager
def serve_hub(files: dict[str, tuple[str, str]]):
    """Yield (endpoint URL, list of requests seen) while a local Hub stand-in serves `files`."""
    requests: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files, requests))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", requests
    finally:
        server.shutdown()
        server.server_close()


def hub_path(repo: str, revision: str, name: str) -> str:
    return f"/{repo}/resolve/{revision}/{name}"
