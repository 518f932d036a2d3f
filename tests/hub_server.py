"""A stand-in for the Hugging Face Hub on 127.0.0.1: serves files laid out as `/{repo}/resolve/{revision}/{name}`
with the headers `huggingface_hub` reads (ETag, X-Repo-Commit, Content-Length), for tests that run the real download
code with `HF_ENDPOINT` and reach nothing outside the machine."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import threading
import urllib.parse
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the test servers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class HubStandIn:
    """A writable Hub stand-in: `create_repo`, `upload_folder` (every file sent inline, as the Hub's "regular"
    upload mode), `snapshot_download` and `hf_hub_download` of models and Spaces, held in memory.

    It does not cover authentication, LFS / Xet transfers (the real Hub stores large files that way; the client
    chooses by the Hub's answer, which here is always "regular"), branches other than the one given, pull requests,
    deletions or the Space's build."""

    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}  # "models/user/name" -> {path: bytes}
        self.commits: dict[str, str] = {}
        self.requests: list[str] = []

    def files(self, repo: str, kind: str = "model") -> dict[str, bytes]:
        return self.repos.get(f"{kind}s/{repo}", {})

    def handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, code: int, body: bytes = b"", headers: dict | None = None, send_body: bool = True):
                self.send_response(code)
                for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                    self.send_header(key, value)
                self.end_headers()
                if send_body and body:
                    self.wfile.write(body)

            def _json(self, value, code: int = 200):
                self._reply(code, json.dumps(value).encode(), {"Content-Type": "application/json"})

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_POST(self):  # noqa: N802
                hub.requests.append(f"POST {self.path}")
                path, body = self.path.split("?")[0], self._body()
                if path == "/api/repos/create":
                    spec = json.loads(body)
                    repo = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
                    hub.repos.setdefault(f"{spec.get('type') or 'model'}s/{repo}", {})
                    return self._json({"url": f"http://{self.headers['Host']}/{repo}", "name": repo})
                if path == "/api/validate-yaml":
                    return self._json({"errors": [], "warnings": []})
                match = re.fullmatch(r"/api/(\w+)/(.+)/(preupload|commit)/([^/]+)", path)
                if not match or f"{match[1]}/{match[2]}" not in hub.repos:
                    return self._json({"error": "Repository not found"}, 404)
                key = f"{match[1]}/{match[2]}"
                if match[3] == "preupload":
                    files = json.loads(body)["files"]
                    return self._json(
                        {
                            "files": [
                                {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                                for f in files
                            ]
                        }
                    )
                for line in body.splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        hub.repos[key][item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                sha = hashlib.sha1(
                    json.dumps(sorted((p, hashlib.sha1(b).hexdigest()) for p, b in hub.repos[key].items())).encode()
                ).hexdigest()
                hub.commits[key] = sha
                return self._json(
                    {
                        "commitUrl": f"http://{self.headers['Host']}/{match[2]}/commit/{sha}",
                        "commitOid": sha,
                        "pullRequestUrl": None,
                    }
                )

            def _get(self, send_body: bool):
                hub.requests.append(f"{self.command} {self.path}")
                path = urllib.parse.unquote(self.path.split("?")[0])
                tree = re.fullmatch(r"/api/(\w+)/(.+?)/tree/([^/]+)(?:/(.*))?", path)
                if tree and f"{tree[1]}/{tree[2]}" in hub.repos:
                    return self._json(
                        [
                            {"type": "file", "path": p, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                            for p, b in sorted(hub.repos[f"{tree[1]}/{tree[2]}"].items())
                            if p.startswith(tree[4] or "")
                        ]
                    )
                info = re.fullmatch(r"/api/(\w+)/(.+?)(?:/revision/([^/]+))?", path)
                if info and f"{info[1]}/{info[2]}" in hub.repos:
                    key = f"{info[1]}/{info[2]}"
                    return self._json(
                        {
                            "id": info[2],
                            "sha": hub.commits.get(key, "0" * 40),
                            "private": False,
                            "siblings": [{"rfilename": p} for p in sorted(hub.repos[key])],
                        }
                    )
                found = re.fullmatch(r"/(?:(spaces|datasets)/)?(.+?)/resolve/([^/]+)/(.+)", path)
                key = f"{found[1] or 'models'}/{found[2]}" if found else ""
                if not found or found[4] not in hub.repos.get(key, {}):
                    return self._reply(404, headers={"X-Error-Code": "EntryNotFound"})
                data = hub.repos[key][found[4]]
                self._reply(
                    200,
                    data,
                    {
                        "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                        "X-Repo-Commit": hub.commits.get(key, "0" * 40),
                        "Content-Type": "application/octet-stream",
                    },
                    send_body,
                )

            def do_GET(self):  # noqa: N802
                self._get(True)

            def do_HEAD(self):  # noqa: N802
                self._get(False)

            def log_message(self, *args):
                pass

        return Handler

    @contextmanager
    def serve(self):
        """Yield the endpoint URL while the stand-in serves on 127.0.0.1."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_port}"
        finally:
            server.shutdown()
            server.server_close()
