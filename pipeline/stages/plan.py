"""Plan a Celantur run: group files per image, order video chunks, cut everything into batches
by bytes, and assign each video's chunk batches to one tracking task."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from pipeline.formats.celantur import classify_name
from pipeline.formats.metadata import INT64_LIMIT
from pipeline.io.storage import InputFile


class Batchable(Protocol):
    """What can be cut into batches: an item with input bytes and files."""

    @property
    def bytes(self) -> int: ...

    @property
    def files(self) -> tuple[InputFile, ...]: ...

    @property
    def identity(self) -> str: ...


Item = TypeVar("Item", bound=Batchable)


@dataclass(frozen=True)
class ImageGroup:
    """The files of one Celantur image: instance mask, binary mask, metadata (any may be absent)."""

    folder: str
    stem: str
    instance: InputFile | None = None
    binary: InputFile | None = None
    metadata: InputFile | None = None

    @property
    def identity(self) -> str:
        """What stays the same while the image's files change: folder and stem."""
        return f"{self.folder}/{self.stem}"

    @property
    def files(self) -> tuple[InputFile, ...]:
        """The group's files."""
        return tuple(f for f in (self.instance, self.binary, self.metadata) if f is not None)

    @property
    def bytes(self) -> int:
        """Input bytes of the group."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class VideoChunk:
    """One video metadata chunk file, named ``<video>-<start>-<end>.json``."""

    file: InputFile
    video: str
    start: int
    end: int

    @property
    def numbered(self) -> bool:
        """Whether the name's frame numbers fit the 64-bit frame columns (a name may carry
        digits of any length; a chunk whose numbers do not fit is refused as misnamed)."""
        return self.start < INT64_LIMIT and self.end < INT64_LIMIT

    @property
    def media(self) -> str:
        """The video's identity within the run: its folder and name."""
        return f"{self.file.folder}/{self.video}" if self.file.folder else self.video

    @property
    def bytes(self) -> int:
        """Input bytes."""
        return self.file.size

    @property
    def identity(self) -> str:
        """The chunk file's path."""
        return self.file.rel

    @property
    def files(self) -> tuple[InputFile, ...]:
        """The chunk file."""
        return (self.file,)


@dataclass(frozen=True)
class Batch(Generic[Item]):
    """One task's inputs; ``key`` names its output parts (derived from inputs and options)."""

    key: str
    groups: tuple[Item, ...]

    @property
    def bytes(self) -> int:
        """Input bytes of the batch."""
        return sum(g.bytes for g in self.groups)


@dataclass(frozen=True)
class TrackAssignment:
    """Videos whose tracks one task links, and the chunk batches (in frame order) holding them."""

    key: str
    videos: tuple[tuple[str, tuple[VideoChunk, ...]], ...]  # (media, chunks by start frame)
    batch_keys: tuple[str, ...]

    @property
    def bytes(self) -> int:
        """Input bytes of the linked videos' chunks."""
        return sum(chunk.bytes for _, chunks in self.videos for chunk in chunks)


@dataclass
class Inventory:
    """What the listing found: per-kind counts and the files that are not pipeline inputs."""

    found: Counter[str] = field(default_factory=Counter)
    ignored: int = 0
    video_chunks: list[InputFile] = field(default_factory=list)


def group_images(files: list[InputFile]) -> tuple[list[ImageGroup], Inventory]:
    """Group masks and metadata by (folder, stem); sorted, so the plan is deterministic.

    A ``<name>-<start>-<end>.json`` file is image metadata when a mask of the same stem sits
    beside it, otherwise a video metadata chunk.
    """
    inventory = Inventory()
    slots: dict[tuple[str, str], dict[str, InputFile]] = {}
    chunk_candidates: list[tuple[InputFile, str]] = []
    for file in files:
        named = classify_name(file.name)
        if named is None:
            inventory.ignored += 1
            continue
        if named.kind == "video_metadata":
            chunk_candidates.append((file, named.stem))
            continue
        slots.setdefault((file.folder, named.stem), {})[named.kind] = file
    for file, stem in chunk_candidates:
        slot = slots.get((file.folder, stem))
        if slot is not None and "metadata" not in slot:
            slot["metadata"] = file
        else:
            inventory.video_chunks.append(file)
    groups = []
    for (folder, stem), slot in sorted(slots.items()):
        group = ImageGroup(
            folder, stem, slot.get("instance"), slot.get("binary"), slot.get("metadata")
        )
        for kind in ("instance", "binary", "metadata"):
            if kind in slot:
                inventory.found[kind] += 1
        groups.append(group)
    inventory.found["video_metadata"] = len(inventory.video_chunks)
    return groups, inventory


def order_chunks(files: list[InputFile]) -> list[VideoChunk]:
    """Video chunks sorted by video, then start frame, so each video's batches come in frame
    order (names sort ``-1000-`` before ``-500-``; frame order is what tracking needs)."""
    chunks = []
    for file in files:
        named = classify_name(file.name)
        if named is None or named.video is None or named.chunk_start is None:
            raise ValueError(f"{file.rel} is not named like a video metadata chunk")
        chunks.append(VideoChunk(file, named.video, named.chunk_start, named.chunk_end or 0))
    return sorted(chunks, key=lambda c: (c.media, c.start, c.end, c.file.rel))


def assign_tracking(
    batches: Sequence[Batch[VideoChunk]], fingerprint: str
) -> list[TrackAssignment]:
    """One tracking task per set of videos that live in the same chunk batches.

    Videos that fit in one batch share that batch's task; a video spread over several batches
    gets a task reading those batches' parts in order.
    """
    where: dict[str, list[str]] = {}
    chunks: dict[str, list[VideoChunk]] = {}
    for batch in batches:
        for chunk in batch.groups:
            seen_in = where.setdefault(chunk.media, [])
            if not seen_in or seen_in[-1] != batch.key:
                seen_in.append(batch.key)
            chunks.setdefault(chunk.media, []).append(chunk)
    by_batches: dict[tuple[str, ...], list[str]] = {}
    for media, batch_keys in where.items():
        by_batches.setdefault(tuple(batch_keys), []).append(media)
    assignments = []
    for keys, media_names in by_batches.items():
        digest = hashlib.sha256(f"{fingerprint}\0tracks\0{'|'.join(keys)}".encode())
        for media in media_names:
            digest.update(f"\0{media}".encode())
        videos = tuple((media, tuple(chunks[media])) for media in media_names)
        assignments.append(TrackAssignment(digest.hexdigest()[:20], videos, keys))
    return assignments


def split_tracking(
    assignments: Sequence[TrackAssignment],
) -> tuple[dict[str, TrackAssignment], list[TrackAssignment]]:
    """The assignments whose videos lie in one chunk batch, by that batch's key (its pass-1
    task links them from the rows it has just parsed), and those over several batches (a
    pass-2 task each, reading those batches' staged parts)."""
    within = {a.batch_keys[0]: a for a in assignments if len(a.batch_keys) == 1}
    return within, [a for a in assignments if len(a.batch_keys) > 1]


def batch_groups(
    groups: Sequence[Item], *, batch_bytes: int, min_batches: int, fingerprint: str
) -> list[Batch[Item]]:
    """Cut consecutive items into batches of about ``batch_bytes`` input bytes.

    Boundaries are content-defined: a batch ends after an item whose identity hashes to 0 modulo
    a power of two chosen so batches average the target size (and after at most twice the
    target, which bounds a task's input and how uneven tasks can be; ``make bench`` measured a
    batch holding 28% of a small run at four times). Adding, changing or removing one input
    therefore changes only its own batch, and an incremental run redoes only that.

    Small collections aim at ``min_batches`` batches (the runner's constant: cuts depend on the
    inputs alone, never on the cluster, so an incremental run on another number of workers finds
    the same batches); large ones at
    ``batch_bytes`` per batch, which keeps the graph near ``total bytes / batch_bytes`` tasks
    whatever the number of files. Batch keys hash the inputs' paths, sizes and versions with
    the options ``fingerprint``, so unchanged inputs under unchanged options keep their part names.
    """
    if not groups:
        return []
    total = sum(g.bytes for g in groups)
    target = max(1, min(batch_bytes, -(-total // max(1, min_batches))))
    items_per_batch = max(1.0, target / max(1.0, total / len(groups)))
    # A power of two moves rarely as the collection grows, so boundaries stay put.
    divisor = 2 ** max(0, round(math.log2(items_per_batch)))
    batches: list[list[Item]] = [[]]
    filled = 0
    for group in groups:
        batches[-1].append(group)
        filled += group.bytes
        if _boundary_hash(group.identity) % divisor == 0 or filled >= 2 * target:
            batches.append([])
            filled = 0
    return [Batch(_batch_key(chunk, fingerprint), tuple(chunk)) for chunk in batches if chunk]


def _boundary_hash(identity: str) -> int:
    return int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest(), "big")


def _batch_key(groups: list[Item], fingerprint: str) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    for group in groups:
        # The identity too: many ClearML frames share one file (their frames document).
        digest.update(f"\0\0{group.identity}".encode())
        for file in group.files:
            digest.update(f"\0{file.rel}\0{file.size}\0{file.version}".encode())
    return digest.hexdigest()[:20]
