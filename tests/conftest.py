"""Shared fixtures. MindSpore's execution mode is process-global: tests that care set it explicitly."""
import numpy as np
import pytest

from ms_transfer.context import set_context



@pytest.fixture(params=["graph", "pynative"])
def ms_mode(request):
    """Run the test in both MindSpore execution modes."""
    set_context(request.param, "CPU")
    yield request.param
    set_context("pynative", "CPU")


@pytest.fixture(autouse=True)
def _private_cache_dir(tmp_path_factory, monkeypatch):
    """Downloads and trunk-feature caches go to a fresh folder per test, never to ~/.cache/ms_transfer."""
    import ms_transfer.core.recipe as recipe
    monkeypatch.setattr(recipe, "CACHE_DIR", tmp_path_factory.mktemp("cache"))


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture(scope="session")
def serve_files():
    """Start a loopback HTTP server for ``{path: bytes | callable(handler)}``; returns ``(base_url, hits)``.

    A callable route writes its own response (e.g. a truncated body). No internet needed; servers stop at
    the end of the session.
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    servers = []

    def start(routes):
        hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                hits.append(self.path)
                body = routes.get(self.path)
                if callable(body):
                    body(self)
                elif body is None:
                    self.send_error(404)
                else:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}", hits

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()
