"""Shared fixtures.

Fixture groups:

* generated Celantur trees (session-scoped, one per encoding): ``celantur_tree``;
* a real S3 API: ``s3_endpoint`` (moto's server on 127.0.0.1, session) and ``s3_bucket``
  (reset server, fresh bucket, storage options);
* running the pipeline: ``run_cli`` (the CLI's ``main`` in-process, returns exit code and output
  folder) — in-process ``sync`` scheduler unless a test asks for a cluster;
The independent reference (Pillow decode, per-colour brute force, SPEC tables written out) is the
module ``tests/reference.py``, importable from tests as ``reference``.
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.sampledata.celantur import SampleTree, make_celantur_tree

# Keep tests independent of any cluster the developer's shell points at.
os.environ.pop("DASK_SCHEDULER_ADDRESS", None)


@pytest.fixture(scope="session", params=["v26", "legacy", "legacy-red"])
def celantur_tree(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> SampleTree:
    """A generated Celantur output tree (12 images, nested folders, all quirks) per encoding."""
    root = tmp_path_factory.mktemp(f"tree-{request.param}")
    return make_celantur_tree(root / "in", seed=7, images=12, encoding=request.param)


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., tuple[int, Any]]:
    """Run ``mask-pipeline celantur SRC OUT ARGS...`` in-process; returns (exit code, OUT), OUT
    as given (a Path for local folders, the URL string otherwise).

    ``scheduler=None`` leaves the option out (the embedded LocalCluster)."""

    def run(
        source: Path | str,
        *args: str,
        output: Path | str | None = None,
        scheduler: str | None = "sync",
    ) -> tuple[int, Any]:
        out = output or tmp_path / "out"
        argv = ["celantur", str(source), str(out), "--no-progress", *args]
        if scheduler is not None:
            argv += ["--scheduler", scheduler]
        return main(argv), out

    return run


# --- a real S3 API: moto's server on 127.0.0.1 ------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, for the whole session; real AWS configuration
    is scrubbed from the environment and replaced by dummy credentials."""
    from moto.server import ThreadedMotoServer

    for name in [n for n in os.environ if n.startswith("AWS_")]:
        os.environ.pop(name)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing-key-id",
        AWS_SECRET_ACCESS_KEY="testing-secret",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """A fresh bucket (the server is reset first); yields (``s3://bucket``, storage options)."""
    import s3fs

    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset", method="POST"))
    options: dict[str, Any] = {"endpoint_url": s3_endpoint}
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir("test-bucket")
    yield "s3://test-bucket", options
    s3fs.S3FileSystem.clear_instance_cache()
