"""What the fuzzers feed: every door untrusted bytes come through, with the errors each door
declares. Any other exception — or a crash of the process — is a finding."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from pipeline.formats.clearml import FramesError, frame_masks, load_frames
from pipeline.formats.metadata import MetadataError, parse_image_metadata
from pipeline.formats.video import parse_chunk
from pipeline.io.jsonio import JsonError, parse_json
from pipeline.io.png import PngError
from pipeline.stages.measure import measure_binary, measure_instance

#: Small limits keep each input cheap, so the fuzzer explores rather than allocates.
MAX_PIXELS = 1 << 20
MAX_JSON_BYTES = 1 << 20


def png_target(data: bytes) -> None:
    """Measure a PNG as an instance and as a binary mask, as the Celantur stage does: fused where
    the PNG allows it, else decode + kernels; then the standard path alone."""
    with contextlib.suppress(PngError):
        instance = measure_instance(data, max_pixels=MAX_PIXELS, scale=50)
        measure_binary(data, max_pixels=MAX_PIXELS, scale=50, foreground=instance.foreground)
    with contextlib.suppress(PngError):
        measure_instance(data, max_pixels=MAX_PIXELS, scale=50, fused=False)


def json_target(data: bytes) -> None:
    """Parse bytes as image metadata, as a video chunk and as ClearML frames."""
    with contextlib.suppress(JsonError, MetadataError):
        parse_image_metadata(parse_json(data, max_bytes=MAX_JSON_BYTES))
    with contextlib.suppress(JsonError, MetadataError):
        parse_chunk(data, max_bytes=MAX_JSON_BYTES)
    with contextlib.suppress(JsonError, FramesError):
        frame_masks("fuzz.json", load_frames(data, max_bytes=MAX_JSON_BYTES))


TARGETS: dict[str, Callable[[bytes], None]] = {"png": png_target, "json": json_target}
