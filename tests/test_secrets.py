"""Credentials and signed URLs never appear in logs, ``_run.json``, error messages or tables.

Runs against moto's S3 server with recognisable dummy credentials, given as
``--storage-option key=... secret=... token=...`` and through ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, with bad inputs present so errors are written, and with a permanent
failure (a missing bucket) in-process and on a local Dask cluster. Every output object is
downloaded and scanned (Parquet decoded to text, ``_run.json``, ``_ledger/``), with the CLI's
stdout and stderr. ClearML runs read masks through presigned-looking URLs, one that fails and one
that is served: neither the signature nor the access key in the query string may be written.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import fsspec
import pyarrow.parquet as pq
import pytest
from storage_helpers import upload_tree

from pipeline.cli import main
from pipeline.sampledata.celantur import make_celantur_tree
from pipeline.sampledata.video import make_video_fleet

OPTION_KEY = "AKIAMASKPIPELINEOPTION"
OPTION_SECRET = "sEcReT-mask-pipeline-option"
OPTION_TOKEN = "tOkEn-mask-pipeline-option"
ENV_KEY = "AKIAMASKPIPELINETEST"
ENV_SECRET = "sEcReT-mask-pipeline-test"
SECRETS = (OPTION_KEY, OPTION_SECRET, OPTION_TOKEN, ENV_KEY, ENV_SECRET)
SIGNATURE = "abcdef0123456789" * 4
CREDENTIAL = "AKIAPRESIGNEDCREDENTIAL"


def _leaks(texts: dict[str, str], secrets: Iterable[str]) -> dict[str, list[str]]:
    """Per text, the secrets found in it."""
    found = {name: [s for s in secrets if s in text] for name, text in texts.items()}
    return {name: hits for name, hits in found.items() if hits}


def _object_texts(url: str, storage: dict[str, Any]) -> dict[str, str]:
    """Every object under ``url`` as text: raw bytes, and Parquet rows decoded; and the objects'
    names (``scaled/`` names derive from input URIs)."""
    fs, root = fsspec.core.url_to_fs(url, **storage)
    fs.invalidate_cache()
    paths = fs.find(root)
    texts = {"object names": "\n".join(paths)}
    for path in paths:
        data = fs.cat_file(path)
        text = data.decode("latin-1")
        if path.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(data))
            text += json.dumps(table.to_pylist(), default=str) + str(table.schema.metadata)
        texts[path] = text
    assert texts, f"nothing written under {url}"
    return texts


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Images, one video (with its corrupt chunk) and bad files, so errors/ has rows."""
    root = tmp_path_factory.mktemp("secrets") / "in"
    make_celantur_tree(root / "images", seed=13, images=4, write_images=False)
    make_video_fleet(root / "videos", seed=13, videos=1, frames_per_video=1100)
    (root / "bad").mkdir()
    (root / "bad" / "broken_ins_maks.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "bad" / "broken.json").write_bytes(b'{"detections": [')
    return root


def _cli(*args: str) -> tuple[int, str]:
    """``mask-pipeline ARGS`` in a subprocess whose environment holds the dummy credentials;
    returns the exit code and stdout + stderr."""
    env = {k: v for k, v in os.environ.items() if k != "MASK_PIPELINE_STORAGE_OPTIONS"}
    env.update(AWS_ACCESS_KEY_ID=ENV_KEY, AWS_SECRET_ACCESS_KEY=ENV_SECRET)
    argv = [sys.executable, "-m", "pipeline", *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)
    return done.returncode, done.stdout + done.stderr


def _options(endpoint: str, credentials: bool) -> list[str]:
    pairs = [f"endpoint_url={endpoint}"]
    if credentials:
        pairs += [f"key={OPTION_KEY}", f"secret={OPTION_SECRET}", f"token={OPTION_TOKEN}"]
    return [arg for pair in pairs for arg in ("--storage-option", pair)]


@pytest.mark.parametrize("credentials", ["options", "environment"])
def test_credentials_reach_no_output_object_and_no_log(
    credentials: str, tree: Path, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    bucket, storage = s3_bucket
    upload_tree(tree, f"{bucket}/in", storage)
    endpoint = storage["endpoint_url"]
    options = _options(endpoint, credentials == "options")
    code, log = _cli("celantur", f"{bucket}/in", f"{bucket}/out", "--scheduler", "sync",
                     "--no-progress", "--mask-scale", "50", *options)  # fmt: skip
    assert code == 3, log[-3000:]
    texts = _object_texts(f"{bucket}/out", storage)
    record = json.loads(texts["test-bucket/out/_run.json"])
    recorded = {"endpoint_url": "***"}
    if credentials == "options":
        recorded.update(key="***", secret="***", token="***")
    assert record["options"]["storage_options"] == recorded
    assert any(path.startswith("test-bucket/out/_ledger/") for path in texts)
    assert any("broken_ins_maks.png" in text for path, text in texts.items() if "errors/" in path)
    texts["CLI stdout and stderr"] = log

    code, log = _cli("summary", f"{bucket}/out", *options)
    assert code == 0, log[-3000:]
    texts["summary stdout and stderr"] = log
    assert _leaks(texts, SECRETS) == {}


@pytest.mark.parametrize(
    ("where", "scheduler"),
    [
        ("input", ("--scheduler", "sync")),
        ("output", ("--scheduler", "sync")),
        ("output", ("--workers", "1")),  # a local Dask cluster: workers log failed tasks
    ],
)
def test_a_missing_bucket_fails_without_printing_credentials(
    where: str, scheduler: tuple[str, str], tree: Path, s3_bucket: tuple[str, dict[str, Any]]
) -> None:
    bucket, storage = s3_bucket
    upload_tree(tree, f"{bucket}/in", storage)
    source = "s3://no-such-bucket/in" if where == "input" else f"{bucket}/in"
    output = "s3://no-such-bucket/out" if where == "output" else f"{bucket}/out"
    endpoint = storage["endpoint_url"]
    options = _options(endpoint, True)
    code, log = _cli("celantur", source, output, *scheduler, "--no-progress", *options)
    assert code == 1, log[-3000:]
    assert "no-such-bucket" in log or "bucket does not exist" in log
    assert _leaks({"CLI stdout and stderr": log}, SECRETS) == {}, log[-6000:]


# ---------------------------------------------------------------------------------------------
# ClearML masks behind presigned URLs
# ---------------------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _presigned_looking(base: str) -> str:
    return (
        f"{base}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        f"&X-Amz-Credential={CREDENTIAL}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
        f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
        f"&X-Amz-Signature={SIGNATURE}"
    )


def _run_clearml(
    tmp_path: Path, uris: list[str], capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, Path, str]:
    frames = [
        {"id": f"frame-{i}", "context_id": "ctx", "timestamp": i,
         "sources": [{"id": "front", "uri": "https://example.invalid/image.jpg",
                      "content_type": "image/jpeg", "width": 32, "height": 24,
                      "masks": [{"id": "mask", "uri": uri, "content_type": "image/png"}]}]}
        for i, uri in enumerate(uris)
    ]  # fmt: skip
    document = tmp_path / "frames.json"
    document.write_text(json.dumps(frames))
    out = tmp_path / "out"
    code = main(["clearml", str(document), str(out), "--scheduler", "sync", "--no-progress",
                 *args])  # fmt: skip
    captured = capsys.readouterr()
    return code, out, captured.out + captured.err


def test_a_failing_presigned_mask_url_leaves_no_signature_in_its_error_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = _presigned_looking(f"https://127.0.0.1:{_closed_port()}/bucket/masks/frame-0.png")
    code, out, log = _run_clearml(tmp_path, [uri], capsys, "--mask-scale", "50")
    assert code == 3
    errors = pq.read_table(out / "errors").to_pylist()
    assert len(errors) == 1 and errors[0]["stage"] == "read"
    assert "masks/frame-0.png" in errors[0]["message"], "the message must still name the mask"
    texts = {f"errors/ row {k}": str(v) for k, v in errors[0].items()}
    texts.update(_object_texts(str(out), {}), **{"CLI output": log})
    assert _leaks(texts, (SIGNATURE, CREDENTIAL)) == {}


@pytest.mark.parametrize("scaled", [False, True])
def test_a_served_presigned_mask_url_leaves_no_signature_in_any_table(
    scaled: bool,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    s3_bucket: tuple[str, dict[str, Any]],
) -> None:
    """A mask served by moto through a real presigned GET URL (signed with the dummy
    credentials): its rows are written, and (with ``--mask-scale``) its rescaled copy, without
    the URL's query string in any table or object name."""
    import boto3
    import numpy as np
    from botocore.config import Config
    from PIL import Image

    bucket, storage = s3_bucket
    buffer = io.BytesIO()
    mask = np.zeros((24, 32), dtype=np.uint8)
    mask[4:12, 8:20] = 255
    Image.fromarray(mask).save(buffer, format="PNG")
    fs, _ = fsspec.core.url_to_fs(bucket, **storage)
    fs.pipe_file("test-bucket/masks/frame-0.png", buffer.getvalue())
    client = boto3.client(
        "s3", endpoint_url=storage["endpoint_url"], region_name="us-east-1",
        aws_access_key_id=ENV_KEY, aws_secret_access_key=ENV_SECRET,
        config=Config(signature_version="s3v4"),
    )  # fmt: skip
    uri = client.generate_presigned_url(
        "get_object", Params={"Bucket": "test-bucket", "Key": "masks/frame-0.png"}, ExpiresIn=600
    )
    signature = uri.split("X-Amz-Signature=")[1].split("&")[0]
    assert ENV_KEY in uri and len(signature) == 64

    code, out, log = _run_clearml(tmp_path, [uri], capsys, *(("--mask-scale", "50") * scaled))
    assert code == 0, log
    alpha = pq.read_table(out / "alpha").to_pylist()
    assert [(r["frame_id"], r["opaque_pixels"]) for r in alpha] == [("frame-0", 8 * 12)]
    texts = _object_texts(str(out), {})
    texts["CLI output"] = log
    assert _leaks(texts, (signature, ENV_KEY, ENV_SECRET)) == {}
