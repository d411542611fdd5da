"""Work items: what the graph maps over. One task function serves every step, so one pass can
mix image batches and video batches and keep every worker busy."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal, cast

from pipeline.formats.celantur import Encoding
from pipeline.graph import may_step_aside
from pipeline.io.storage import in_process
from pipeline.stages import celantur, clearml, video
from pipeline.stages.clearml import FrameMasks
from pipeline.stages.common import TaskContext
from pipeline.stages.ledger import load_entry, save_entry
from pipeline.stages.plan import Batch, ImageGroup, TrackAssignment, VideoChunk
from pipeline.stages.summary import BatchSummary

Step = Literal["images", "auto", "finish", "chunks", "tracks", "clearml"]


@dataclass(frozen=True)
class Work:
    """One task: a step and its inputs.

    ``images`` measures and finishes image batches under a known encoding; ``auto`` measures
    them and finishes those whose own evidence decides an encoding (parking the others), and
    ``finish`` finishes the parked ones once the dataset's encoding is decided; ``chunks``
    parses video chunks, and links the videos of ``tracks`` (those that lie in its batch
    alone); ``tracks`` links videos whose chunks were parsed in an earlier pass.
    """

    step: Step
    item: Batch[ImageGroup] | Batch[VideoChunk] | Batch[FrameMasks] | TrackAssignment
    encoding: Encoding | None = None
    tracks: TrackAssignment | None = None


def ledger_name(work: Work) -> str:
    """The ledger entry of a work item: typed image results depend on the encoding too (that
    of ``auto`` follows from its inputs and is recorded in its summary's ``typed``), a chunk
    batch's on the videos it links."""
    if work.step in ("images", "finish"):
        return f"images-{work.item.key}-{work.encoding}"
    if work.tracks is not None:
        return f"{work.step}-{work.item.key}-tracks-{work.tracks.key}"
    return f"{work.step}-{work.item.key}"


def run_work(work: Work, ctx: TaskContext) -> BatchSummary:
    """Run one work item on a worker; returns its small summary.

    With ``incremental``, a ledger entry for exactly this work (whose parts all still exist) is
    returned instead. Either way the finished work is recorded in the ledger, and the summary
    returned carries no part fingerprints (``written``: those are for the ledger entry).
    """
    name = ledger_name(work)
    if ctx.options.incremental:
        recorded = load_entry(ctx.output, name)
        if recorded is not None:
            recorded.work = Counter(reused=1)
            return recorded
    # On remote output storage, the task steps aside once it only waits on its writes
    # (:func:`pipeline.stages.common.batch_io`), so its last writes and its ledger entry
    # overlap the next work item on the same worker thread.
    with may_step_aside(not in_process(ctx.output)):
        summary = _run_step(work, ctx)
        save_entry(ctx.output, name, summary)
    # The parts' fingerprints are the ledger's alone (~100 bytes a part): the client never
    # reads them, so they do not travel back with every summary.
    summary.written = {}
    summary.work = Counter(done=1)
    return summary


def _run_step(work: Work, ctx: TaskContext) -> BatchSummary:
    if work.step == "chunks":
        return video.process_chunk_batch(cast(Batch[VideoChunk], work.item), ctx, work.tracks)
    if work.step == "tracks":
        return video.track_videos(cast(TrackAssignment, work.item), ctx)
    if work.step == "clearml":
        return clearml.process_frames_batch(cast(Batch[FrameMasks], work.item), ctx)
    images = cast(Batch[ImageGroup], work.item)
    if work.step == "auto":
        return celantur.measure_and_finish(images, ctx)
    if work.encoding is None:
        raise ValueError(f"work step {work.step!r} needs an encoding")
    if work.step == "images":
        return celantur.process_batch(images, ctx, work.encoding)
    return celantur.finish_parked(images, ctx, work.encoding)
