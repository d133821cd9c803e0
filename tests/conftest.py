"""Shared fixtures: a local HTTP server on 127.0.0.1 whose routes tests define, and the ../shared data folder."""
import io
import sys
import threading

# The suite loads PyTorch (sentence model, BLIP, YOLO) and TensorFlow in one process. torch loaded after TensorFlow
# can crash, and so does triton's C extension once TensorFlow is loaded; triton only serves CUDA kernels. So torch
# comes first and triton is hidden, as animeml.core.embeddings and animeml.characters.captions do for the steps.
sys.modules.setdefault("triton", None)
import torch  # noqa: E402,F401
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from PIL import Image

from animeml.core.paths import SHARED


@pytest.fixture
def shared():
    if not (SHARED / "data").is_dir():
        pytest.skip(f"{SHARED} (the real data folder) is absent")
    return SHARED


def jpeg_bytes(seed=0, size=(40, 56)):
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


class LocalServer:
    """`routes` maps a path prefix to `handler(request, query) -> (status, headers, body)`; a handler may sleep
    to simulate a slow peer. `hits` counts requests per full path."""

    def __init__(self):
        self.routes, self.hits, self.lock = {}, {}, threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlparse(self.path)
                with server.lock:
                    server.hits[self.path] = server.hits.get(self.path, 0) + 1
                prefix = next((p for p in server.routes if url.path.startswith(p)), None)
                if prefix is None:
                    status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
                else:
                    status, headers, body = server.routes[prefix](self, parse_qs(url.query))
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self, prefix):
        with self.lock:
            return sum(n for path, n in self.hits.items() if path.startswith(prefix))


@pytest.fixture
def server():
    local = LocalServer()
    yield local
    local.httpd.shutdown()
    local.httpd.server_close()
