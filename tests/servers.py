"""Real servers on 127.0.0.1 for tests: an S3 API (moto in server mode) that counts requests.

The server is moto's own WSGI application behind werkzeug's threaded HTTP server, on a free port,
started and stopped by the fixture; clients reach it over TCP like any S3 endpoint (s3fs,
boto3, dask workers in other processes). A thin WSGI wrapper records each request's method and
path, so a test can say "the second training run made no GET for feature parts".

Use from a test module:

    from servers import s3_server, s3_store_url  # noqa: F401  (pytest fixtures)

    def test_x(s3_store_url, s3_server):
        url = s3_store_url("x.zarr")           # s3://<fresh bucket>/x.zarr, env already set
        ...
        assert s3_server.count("GET", f"{s3_server.bucket_of(url)}/x.zarr/streams/") == 0

API (kept stable; other tests import it):
- `S3Server.endpoint_url`, `.env` (AWS_* variables incl. AWS_ENDPOINT_URL), `.storage_options`
  (s3fs keyword arguments: endpoint_url, key, secret), `.make_bucket(name=None) -> name`,
  `.requests(method=None, prefix="")` -> [(method, "bucket/key")], `.count(method, prefix)`,
  `.reset_counts()`.
- fixtures: `s3_server` (one server per test session), `s3_env` (the server's AWS_* variables
  set in os.environ for one test, fsspec's cached filesystems cleared), `s3_store_url` (a factory
  of store URLs in a fresh bucket, with `s3_env` applied).
"""

from __future__ import annotations

import logging
import socket
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest

ACCESS_KEY = "affect-test-key"
SECRET_KEY = "affect-test-secret"
REGION = "us-east-1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _CountingApp:
    """WSGI middleware: remember (method, bucket/key) of every request, then pass it on."""

    def __init__(self, app) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []

    def __call__(self, environ, start_response):
        path = urllib.parse.unquote(environ.get("PATH_INFO", "")).lstrip("/")
        with self.lock:
            self.log.append((environ.get("REQUEST_METHOD", ""), path))
        return self.app(environ, start_response)


class S3Server:
    """moto's S3 API served over HTTP on 127.0.0.1:<free port>, in a thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host, self.port = host, port or free_port(host)
        self._server = None
        self._thread: threading.Thread | None = None
        self._app: _CountingApp | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point boto3/s3fs (and dask workers) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    @property
    def storage_options(self) -> dict[str, str]:
        """The same settings as s3fs keyword arguments (fsspec `storage_options`)."""
        return {"endpoint_url": self.endpoint_url, "key": ACCESS_KEY, "secret": SECRET_KEY}

    def start(self) -> S3Server:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self._app = _CountingApp(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self.host, self.port, self._app, threaded=True,
                                   request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"moto-s3:{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name=REGION)

    def make_bucket(self, name: str | None = None) -> str:
        name = name or f"affect-{uuid.uuid4().hex[:10]}"
        self.client().create_bucket(Bucket=name)
        return name

    @staticmethod
    def bucket_of(url: str) -> str:
        return url.split("://", 1)[-1].split("/", 1)[0]

    def requests(self, method: str | None = None, prefix: str = "") -> list[tuple[str, str]]:
        """Requests served so far, as (method, "bucket/key"), filtered by method and prefix."""
        assert self._app is not None, "server not started"
        with self._app.lock:
            log = list(self._app.log)
        return [(m, p) for m, p in log
                if (method is None or m == method) and p.startswith(prefix)]

    def count(self, method: str | None = None, prefix: str = "") -> int:
        return len(self.requests(method, prefix))

    def reset_counts(self) -> None:
        assert self._app is not None, "server not started"
        with self._app.lock:
            self._app.log.clear()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def clear_fsspec_instances() -> None:
    """Forget cached s3fs instances, so new credentials/endpoints take effect."""
    try:
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
    except ImportError:
        pass


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AFFECT_STORAGE_OPTIONS", raising=False)  # no --storage-option leaks
    clear_fsspec_instances()
    yield s3_server.env
    clear_fsspec_instances()


@pytest.fixture
def s3_store_url(s3_server: S3Server, s3_env) -> Callable[[str], str]:
    """A factory: `s3_store_url("name.zarr")` -> "s3://<fresh bucket>/name.zarr"."""
    bucket = s3_server.make_bucket()

    def make(name: str = "store.zarr") -> str:
        return f"s3://{bucket}/{name}"

    return make
