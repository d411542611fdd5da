"""What the fuzzers feed: every door untrusted bytes come through, with the errors each door
declares. Any other exception — or a crash of the process — is a finding."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from pipeline.formats.clearml import FramesError, frame_masks, load_frames
from pipeline.formats.metadata import MetadataError, parse_image_metadata
from pipeline.formats.video import parse_chunk
from pipeline.io.jsonio import JsonError, parse_json
from pipeline.io.png import PngError, decode_png
from pipeline.kernels.masks import to_rgb8
from pipeline.kernels.segments import colour_stats

#: Small limits keep each input cheap, so the fuzzer explores rather than allocates.
MAX_PIXELS = 1 << 20
MAX_JSON_BYTES = 1 << 20


def png_target(data: bytes) -> None:
    """Decode a PNG and measure it as an instance mask, as the Celantur stage does."""
    try:
        pixels = decode_png(data, max_pixels=MAX_PIXELS)
    except PngError:
        return
    try:
        rgb = to_rgb8(pixels)
    except ValueError:
        return  # 16-bit values that are not widened 8-bit values: a declared refusal
    colour_stats(rgb)


def json_target(data: bytes) -> None:
    """Parse bytes as image metadata, as a video chunk and as ClearML frames."""
    with contextlib.suppress(JsonError, MetadataError):
        parse_image_metadata(parse_json(data, max_bytes=MAX_JSON_BYTES))
    with contextlib.suppress(JsonError, MetadataError):
        parse_chunk(data, max_bytes=MAX_JSON_BYTES)
    with contextlib.suppress(JsonError, FramesError):
        frame_masks("fuzz.json", load_frames(data, max_bytes=MAX_JSON_BYTES))


TARGETS: dict[str, Callable[[bytes], None]] = {"png": png_target, "json": json_target}
