"""A real OpenAI-compatible server for the server backend's tests: llama-cpp-python's own
(`python -m llama_cpp.server`, its `server` extra) on a free loopback port, and the tiny stubs
that stand in for a server only where a real one cannot be made to misbehave on demand."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

# llama-cpp-python's `server` extra, by import name
SERVER_MODULES = (
    "fastapi",
    "uvicorn",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
    "yaml",
)


def missing_server_packages() -> list[str]:
    return [m for m in SERVER_MODULES if find_spec(m) is None]


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def _ready(port: int, api_key: str | None) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models")
    if api_key:
        req.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def llama_cpp_server(
    model: str | Path,
    log_dir: Path,
    n_ctx: int = 2048,
    threads: int = 1,
    api_key: str | None = None,
    wait_s: float = 180.0,
):
    """Start `python -m llama_cpp.server` on `model` and a free loopback port; yield a Server
    once /v1/models answers; kill it at the end."""
    port = free_port()
    log = Path(log_dir) / f"llama-server-{port}.log"
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
    ]
    if api_key:
        cmd += ["--api_key", api_key]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Server(proc, port, log)
    try:
        deadline = time.monotonic() + wait_s
        while not _ready(port, api_key):
            if proc.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {proc.returncode}:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"llama_cpp.server did not answer within {wait_s:g} s:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            time.sleep(0.2)
        yield server
    finally:
        server.kill()


def with_bos(model: str | Path, dest: Path) -> Path:
    """A copy of `model` whose tokenizer adds a BOS token (tokenizer.ggml.add_bos_token = true),
    written in place with the gguf package's reader, as gguf_set_metadata does."""
    from gguf import GGUFReader

    out = Path(dest) / (Path(model).stem + "-bos.gguf")
    shutil.copyfile(model, out)
    reader = GGUFReader(out, "r+")
    field = reader.fields["tokenizer.ggml.add_bos_token"]
    field.parts[field.data[0]][0] = True
    reader.data.flush()
    del reader
    return out


@contextlib.contextmanager
def stub_server(handler):
    """A loopback HTTP server whose every request goes to handler(request) -> (status, headers,
    body dict or None); yields (url, the requests seen as (method, path, headers, body))."""
    seen: list[tuple[str, str, dict, object]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self):
            n = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(n)) if n else None
            seen.append((self.command, self.path, dict(self.headers), body))
            status, headers, payload = handler(self.command, self.path, body)
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, *args):  # keep the test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", seen
    finally:
        httpd.shutdown()
        httpd.server_close()
