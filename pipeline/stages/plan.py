"""Plan a Celantur run: group the listed files per image, then cut groups into batches by bytes."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from pipeline.formats.celantur import classify_name
from pipeline.io.storage import InputFile


@dataclass(frozen=True)
class ImageGroup:
    """The files of one Celantur image: instance mask, binary mask, metadata (any may be absent)."""

    folder: str
    stem: str
    instance: InputFile | None = None
    binary: InputFile | None = None
    metadata: InputFile | None = None

    @property
    def files(self) -> tuple[InputFile, ...]:
        """The group's files."""
        return tuple(f for f in (self.instance, self.binary, self.metadata) if f is not None)

    @property
    def bytes(self) -> int:
        """Input bytes of the group."""
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Batch:
    """One task's inputs; ``key`` names its output parts (derived from inputs and options)."""

    key: str
    groups: tuple[ImageGroup, ...]


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


def batch_groups(
    groups: list[ImageGroup], *, batch_bytes: int, min_batches: int, fingerprint: str
) -> list[Batch]:
    """Cut consecutive groups into batches of about ``batch_bytes`` input bytes.

    Small collections are cut into at least ``min_batches`` batches (when there are that many
    groups) so every worker gets work; large ones into as many as their bytes need, which keeps
    the graph near ``total bytes / batch_bytes`` tasks whatever the number of files.
    Batch keys hash the inputs' paths, sizes and versions with the options ``fingerprint``,
    so unchanged inputs under unchanged options map to the same part names.
    """
    if not groups:
        return []
    total = sum(g.bytes for g in groups)
    target = max(1, min(batch_bytes, -(-total // max(1, min_batches))))
    batches: list[list[ImageGroup]] = [[]]
    filled = 0
    for group in groups:
        if batches[-1] and filled + group.bytes > target:
            batches.append([])
            filled = 0
        batches[-1].append(group)
        filled += group.bytes
    return [Batch(_batch_key(chunk, fingerprint), tuple(chunk)) for chunk in batches]


def _batch_key(groups: list[ImageGroup], fingerprint: str) -> str:
    digest = hashlib.sha256(fingerprint.encode())
    for group in groups:
        for file in group.files:
            digest.update(f"\0{file.rel}\0{file.size}\0{file.version}".encode())
    return digest.hexdigest()[:20]
