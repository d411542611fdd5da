"""What the fuzzers feed: every door untrusted bytes come through, with the errors each door
declares. Any other exception — or a crash of the process — is a finding.

* ``png``: a mask, measured as the Celantur stage does (fused / row-streamed, then decoded).
* ``metadata``: Celantur image metadata, parsed under the JSON caps and interpreted.
* ``chunk``: a video metadata chunk *and its file name* (the first line of the input): named,
  parsed and turned into the chunk's table rows as the chunk stage does.
* ``frames``: a ClearML frames document (JSON or JSON Lines): its mask references, resolved
  and turned into output paths.
* ``jobfile``: a TOML job file, read into run options.
* ``json``: the same bytes through every JSON door at once (kept for its corpus).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable

from pipeline.config import OptionError
from pipeline.formats.celantur import classify_name
from pipeline.formats.clearml import (
    FramesError,
    frame_masks,
    load_frames,
    redact_uri,
    resolve_uri,
    safe_relative_path,
)
from pipeline.formats.metadata import MetadataError, parse_image_metadata, resolve_size_order
from pipeline.formats.video import parse_chunk
from pipeline.io.jsonio import JsonError, parse_json
from pipeline.io.png import PngError
from pipeline.io.storage import InputFile
from pipeline.jobs import load_job
from pipeline.stages.common import ErrorLog
from pipeline.stages.measure import measure_binary, measure_instance
from pipeline.stages.plan import VideoChunk

# The chunk stage's row builders are pure functions of a parsed chunk: the fuzzer calls them
# as the stage does, since values no column can hold fail exactly there.
from pipeline.stages.video import _check_chunk, _tables

#: Small limits keep each input cheap, so the fuzzer explores rather than allocates.
MAX_PIXELS = 1 << 20
MAX_JSON_BYTES = 1 << 20


def png_target(data: bytes) -> None:
    """Measure a PNG as an instance and as a binary mask, as the Celantur stage does: fused or
    row-streamed where the PNG allows it, then decode + whole-image kernels."""
    with contextlib.suppress(PngError):
        instance = measure_instance(data, max_pixels=MAX_PIXELS, scale=50)
        measure_binary(data, max_pixels=MAX_PIXELS, scale=50, foreground=instance.foreground)
    with contextlib.suppress(PngError):
        measure_instance(data, max_pixels=MAX_PIXELS, scale=50, fused=False)


def metadata_target(data: bytes) -> None:
    """Image metadata, parsed under the caps, interpreted, its size order resolved."""
    with contextlib.suppress(JsonError, MetadataError):
        document = parse_json(data, max_bytes=MAX_JSON_BYTES, bounded=True)
        metadata = parse_image_metadata(document)
        boxes = [d.bbox for d in metadata.detections if d.bbox is not None]
        if metadata.size is not None:
            resolve_size_order(metadata.size, boxes, (640, 480))


def chunk_target(data: bytes) -> None:
    """A chunk file name (first line, any bytes) and its content, through the chunk stage's
    naming, parsing and row building."""
    raw_name, _, content = data.partition(b"\n")
    file = InputFile.listed(os.fsdecode(raw_name.replace(b"/", b"_")) or "x", len(content), "")
    named = classify_name(file.name)
    if named is None or named.kind != "video_metadata" or named.video is None:
        named = classify_name("fuzz-0-99.json")
    assert named is not None and named.video is not None and named.chunk_start is not None
    chunk = VideoChunk(file, named.video, named.chunk_start, named.chunk_end or 0)
    if not chunk.numbered:
        return  # the stage refuses the name before reading (bad_chunk_name)
    with contextlib.suppress(JsonError, MetadataError):
        parsed = parse_chunk(content, max_bytes=MAX_JSON_BYTES)
        _check_chunk(chunk, parsed, ErrorLog())
        _tables([(chunk, parsed)], parsed.detections)


def frames_target(data: bytes) -> None:
    """A ClearML frames document: mask references, resolved URIs, output paths."""
    with contextlib.suppress(JsonError, FramesError):
        parsed = frame_masks("fuzz.json", load_frames(data, max_bytes=MAX_JSON_BYTES))
        for ref in parsed.masks:
            resolved = resolve_uri(ref.uri, (("s3://a/", "memory://b/"),), "s3://bucket/frames")
            safe_relative_path(resolved)
            redact_uri(resolved)


def jobfile_target(data: bytes) -> None:
    """A job file's bytes, read as the CLI's ``job`` command reads one."""
    with tempfile.NamedTemporaryFile(suffix=".toml") as handle:
        handle.write(data)
        handle.flush()
        with contextlib.suppress(OptionError):
            load_job(handle.name)


def json_target(data: bytes) -> None:
    """Parse bytes as image metadata, as a video chunk and as ClearML frames."""
    metadata_target(data)
    chunk_target(b"fuzz-0-99.json\n" + data)
    frames_target(data)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "png": png_target,
    "metadata": metadata_target,
    "chunk": chunk_target,
    "frames": frames_target,
    "jobfile": jobfile_target,
    "json": json_target,
}
