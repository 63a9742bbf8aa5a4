"""Test helpers for the datasets stage: a real HTTP server on 127.0.0.1 serving a folder, with
scripted failures (status codes, truncated bodies) per path, and a request log."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class ServerState:
    """``failures[path]``: list of actions consumed one per request: an int HTTP status to answer
    with, or ``"truncate"`` (send half the body with the full Content-Length, then close).
    ``requests[path]``: how many GETs each path received. ``ranges[path]``: Range headers seen."""

    failures: dict[str, list[int | str]] = field(default_factory=lambda: defaultdict(list))
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    ranges: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    support_range: bool = False


class _Handler(SimpleHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?", 1)[0]
        self.state.requests[path] += 1
        if "Range" in self.headers:
            self.state.ranges[path].append(self.headers["Range"])
        actions = self.state.failures.get(path)
        action = actions.pop(0) if actions else None
        if isinstance(action, int):
            self.send_error(action)
            return
        file = Path(self.translate_path(path))
        if action == "truncate" and file.is_file():
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        if self.state.support_range and "Range" in self.headers and file.is_file():
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            data = file.read_bytes()[start:]
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Range", f"bytes {start}-{start + len(data) - 1}/{start + len(data)}")
            self.end_headers()
            self.wfile.write(data)
            return
        super().do_GET()


@dataclass
class LocalServer:
    root: Path
    base_url: str
    state: ServerState

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"


@contextmanager
def serve_folder(root: Path) -> Iterator[LocalServer]:
    """Serve ``root`` over real HTTP on 127.0.0.1 (an ephemeral port) for the duration of the block."""
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield LocalServer(root, f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
