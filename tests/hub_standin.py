"""A local stand-in for the Hugging Face hub, on 127.0.0.1, for the weight-fetching tests.

It serves files from a folder laid out as ``{root}/{org}/{repo}/{filename}`` with the protocol
``huggingface_hub.hf_hub_download`` speaks (``huggingface_hub`` 2.4, ``file_download.get_hf_file_metadata``):

- ``HEAD`` and ``GET`` on ``/{org}/{repo}/resolve/{revision}/{filename}`` (``constants.HUGGINGFACE_CO_URL_TEMPLATE``);
- headers ``X-Repo-Commit`` (the 40-hex commit the cache files the snapshot under), ``X-Linked-Etag`` and
  ``ETag`` (the file's sha256, as the hub gives for LFS files), ``X-Linked-Size`` and ``Content-Length``;
- a missing file answers 404 with ``X-Error-Code: EntryNotFound`` (raised as ``EntryNotFoundError``, which
  timm and open_clip catch to fall back from ``.safetensors`` to ``.bin``), a missing repo 404 with
  ``X-Error-Code: RepoNotFound``.

Clients reach it through ``HF_ENDPOINT=http://127.0.0.1:{port}`` (read when ``huggingface_hub`` is imported,
so set it in a subprocess's environment). ``requests`` lists every (method, path) served.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class HubStandIn:
    """``with HubStandIn(root) as hub: ... hub.endpoint ...``: serves ``root`` until the block ends."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                standin._answer(self, body=False)

            def do_GET(self):
                standin._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def commit_of(self, repo_id: str) -> str:
        """The repo's commit hash: sha1 over its file names and contents (stable while the files are)."""
        digest = hashlib.sha1()
        for path in sorted((self.root / repo_id).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(self.root / repo_id)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        self.requests.append((handler.command, handler.path))
        parts = unquote(handler.path.split("?", 1)[0]).strip("/").split("/")
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(handler, 404, "RepoNotFound")
        repo_id, filename = "/".join(parts[:2]), "/".join(parts[4:])
        if not (self.root / repo_id).is_dir():
            return self._error(handler, 404, "RepoNotFound")
        path = self.root / repo_id / filename
        if not path.is_file():
            return self._error(handler, 404, "EntryNotFound")
        data = path.read_bytes()
        handler.send_response(200)
        etag = f'"{_sha256(path)}"'
        for key, value in (
            ("X-Repo-Commit", self.commit_of(repo_id)),
            ("X-Linked-Etag", etag),
            ("ETag", etag),
            ("X-Linked-Size", str(len(data))),
            ("Content-Length", str(len(data))),
            ("Content-Type", "application/octet-stream"),
        ):
            handler.send_header(key, value)
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler: BaseHTTPRequestHandler, status: int, code: str) -> None:
        message = f"{code}: {handler.path}".encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", code)
        handler.send_header("Content-Length", str(len(message)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(message)

    def __enter__(self) -> "HubStandIn":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
