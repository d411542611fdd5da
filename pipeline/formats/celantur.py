"""What Celantur container outputs mean: instance-mask encodings, type names and file naming.

Instance masks (``<stem>_ins_maks.png``, sic, or ``<stem>_ins_mask.png``) are RGB images whose
colours identify segments. Three encodings exist (SPEC 2.1):

========== ===== ========== =====================================================
encoding   R     G          B
========== ===== ========== =====================================================
v26        0     instance   type bit flags: person 128, plate 64, face 32, vehicle 16
legacy     0     instance   exact type value: person 128, plate 64, face 192, vehicle 255
legacy-red value instance   0 (the type value, as in ``legacy``, sits in R)
========== ===== ========== =====================================================

A colour that breaks its encoding is *invalid*: it is counted, never typed. A non-background colour
with no type at all (type channel 0) is invalid too, since it cannot be typed.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Encoding = Literal["v26", "legacy", "legacy-red"]
EncodingChoice = Literal["v26", "legacy", "legacy-red", "auto"]
ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)
ENCODING_CHOICES: tuple[EncodingChoice, ...] = get_args(EncodingChoice)

#: Type names in the order of the per-type bit flags of :data:`TYPE_FLAG` (bit 0 = person).
TYPE_NAMES: tuple[str, ...] = ("person", "license_plate", "face", "vehicle")

#: v26 blue-channel flag of each type.
V26_FLAGS: dict[str, int] = {"person": 128, "license_plate": 64, "face": 32, "vehicle": 16}
#: Pre-v26 exact type values (B channel for ``legacy``, R channel for ``legacy-red``).
LEGACY_VALUES: dict[str, int] = {"person": 128, "license_plate": 64, "face": 192, "vehicle": 255}

#: Internal compact flag of each type: bit i set <=> TYPE_NAMES[i] present.
TYPE_FLAG: dict[str, int] = {name: 1 << i for i, name in enumerate(TYPE_NAMES)}


def _build_tables() -> dict[Encoding, np.ndarray]:
    """Lookup tables: type-channel value (0..255) -> compact type flags, or -1 when invalid."""
    v26 = np.full(256, -1, dtype=np.int8)
    for value in range(16, 256, 16):  # bits 0-3 clear and at least one type bit set
        flags = 0
        for name, bit in V26_FLAGS.items():
            if value & bit:
                flags |= TYPE_FLAG[name]
        v26[value] = flags
    legacy = np.full(256, -1, dtype=np.int8)
    for name, value in LEGACY_VALUES.items():
        legacy[value] = TYPE_FLAG[name]
    return {"v26": v26, "legacy": legacy, "legacy-red": legacy.copy()}


#: ``TYPE_TABLES[encoding][type_value]`` -> compact flags (>= 1) or -1 for an invalid value.
TYPE_TABLES: dict[Encoding, np.ndarray] = _build_tables()


def type_channel(encoding: Encoding) -> int:
    """Index of the channel holding the type value (2 = B, 0 = R for ``legacy-red``)."""
    return 0 if encoding == "legacy-red" else 2


def zero_channel(encoding: Encoding) -> int:
    """Index of the channel that must be 0 for a valid colour (R, or B for ``legacy-red``)."""
    return 2 if encoding == "legacy-red" else 0


def classify_colours(colours: np.ndarray, encoding: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """Type each segment colour under an encoding.

    Parameters
    ----------
    colours : (n, 3) uint8 array of non-background RGB colours.
    encoding : the instance-mask encoding.

    Returns
    -------
    type_bits : (n,) int16, the raw type value (B, or R for ``legacy-red``).
    flags : (n,) int8, compact type flags (bit i = ``TYPE_NAMES[i]``), -1 for invalid colours.
    """
    colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    type_bits = colours[:, type_channel(encoding)].astype(np.int16)
    flags = TYPE_TABLES[encoding][type_bits].astype(np.int8)
    flags[colours[:, zero_channel(encoding)] != 0] = -1
    return type_bits, flags


def flag_names(flags: int) -> list[str]:
    """Type names of a compact flag value (empty for invalid or untyped)."""
    if flags <= 0:
        return []
    return [name for name in TYPE_NAMES if flags & TYPE_FLAG[name]]


_LABEL_ALIASES = {
    "person": "person",
    "pedestrian": "person",
    "body": "person",
    "face": "face",
    "head": "face",
    "license_plate": "license_plate",
    "licence_plate": "license_plate",
    "plate": "license_plate",
    "number_plate": "license_plate",
    "vehicle": "vehicle",
    "car": "vehicle",
}


def normalise_type_label(label: object) -> str | None:
    """Map a metadata ``type_label`` to one of :data:`TYPE_NAMES` (``None`` if unknown).

    Real files spell labels freely ("license plate", "License-Plate", "head"); matching compares
    the normalised names only.
    """
    if not isinstance(label, str):
        return None
    key = re.sub(r"[\s\-]+", "_", label.strip().lower())
    return _LABEL_ALIASES.get(key)


#: The canonical type of a metadata label that names none of :data:`TYPE_NAMES`.
OTHER_TYPE = "other"


@functools.lru_cache(maxsize=4096)
def type_name(label: str | None) -> str | None:
    """The canonical type of a metadata ``type_label``: one of :data:`TYPE_NAMES` (the names of
    the instance masks' type flags and the ``summary/`` types), :data:`OTHER_TYPE` for any other
    label, ``None`` without a label. Cached: real files repeat a handful of labels millions of
    times."""
    if label is None:
        return None
    return normalise_type_label(label) or OTHER_TYPE


# ---------------------------------------------------------------------------------------------
# Encoding evidence (``auto``)
# ---------------------------------------------------------------------------------------------


@dataclass
class EncodingEvidence:
    """Votes for each encoding, gathered per dataset and merged across batches.

    A colour (or a metadata detection's ``color`` + ``type_label``) votes for an encoding when it
    is valid, with a matching type, under that encoding and no other.
    """

    votes: dict[str, int]
    colours_seen: int = 0

    @classmethod
    def empty(cls) -> EncodingEvidence:
        """No evidence yet."""
        return cls(votes={str(name): 0 for name in ENCODINGS})

    def merge(self, other: EncodingEvidence) -> EncodingEvidence:
        """Sum of two evidence records (associative, for tree reductions)."""
        votes = {str(n): self.votes.get(n, 0) + other.votes.get(n, 0) for n in ENCODINGS}
        return EncodingEvidence(votes=votes, colours_seen=self.colours_seen + other.colours_seen)

    def add_colours(self, colours: np.ndarray) -> None:
        """Add the distinct non-background colours of one mask."""
        colours = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
        self.colours_seen += len(colours)
        valid = {enc: classify_colours(colours, enc)[1] >= 0 for enc in ENCODINGS}
        matrix = np.stack([valid[enc] for enc in ENCODINGS])
        unique = matrix.sum(axis=0) == 1
        for i, enc in enumerate(ENCODINGS):
            self.votes[enc] += int((matrix[i] & unique).sum())

    def add_detection(self, colour: object, type_label: object) -> None:
        """Add a detection's ``color`` and ``type_label`` (ignored when either is absent)."""
        name = normalise_type_label(type_label)
        rgb = parse_colour(colour)
        if name is None or rgb is None:
            return
        agreeing = []
        for enc in ENCODINGS:
            flags = int(classify_colours(np.array([rgb], dtype=np.uint8), enc)[1][0])
            if flags > 0 and flags & TYPE_FLAG[name]:
                agreeing.append(enc)
        if len(agreeing) == 1:
            self.votes[agreeing[0]] += 1

    def decide(self) -> tuple[Encoding, str | None]:
        """The encoding the evidence supports, and a warning when the choice is not clear-cut.

        Returns ``("v26", warning)`` when no colour or detection tells the encodings apart; the
        majority with a warning when the evidence conflicts.
        """
        ranked = sorted(ENCODINGS, key=lambda enc: (-self.votes.get(enc, 0), ENCODINGS.index(enc)))
        best = ranked[0]
        if self.votes.get(best, 0) == 0:
            return "v26", (
                f"encoding auto: no colour or metadata detection distinguishes the encodings "
                f"({self.colours_seen} colours seen); using v26"
            )
        contenders = [enc for enc in ranked if self.votes.get(enc, 0) > 0]
        if len(contenders) > 1:
            detail = ", ".join(f"{enc}={self.votes[enc]}" for enc in contenders)
            return best, f"encoding auto: conflicting evidence ({detail}); using {best}"
        return best, None

    def decisive(self) -> Encoding | None:
        """The encoding this evidence alone decides without a warning (it votes for exactly
        one encoding), else ``None``. Merged with evidence that is decisive for the same
        encoding, or votes for none, it still decides that encoding: a batch whose own evidence
        is decisive can be typed before the dataset's evidence is complete."""
        encoding, warning = self.decide()
        return None if warning else encoding


def parse_colour(value: object) -> tuple[int, int, int] | None:
    """A metadata ``color`` as an (r, g, b) tuple, or ``None`` when absent or malformed."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value):
        return None
    return (int(value[0]), int(value[1]), int(value[2]))


# ---------------------------------------------------------------------------------------------
# File naming
# ---------------------------------------------------------------------------------------------

FileKind = Literal["instance", "binary", "metadata", "video_metadata"]

_INSTANCE_SUFFIXES = ("_ins_maks.png", "_ins_mask.png")
_BINARY_SUFFIX = "_bin_mask.png"
_VIDEO_NAME = re.compile(r"^(?P<video>.+)-(?P<start>\d+)-(?P<end>\d+)\.json$", re.IGNORECASE)


@dataclass(frozen=True)
class NamedInput:
    """A file name interpreted under Celantur's naming rules."""

    kind: FileKind
    stem: str
    video: str | None = None
    chunk_start: int | None = None
    chunk_end: int | None = None


def classify_name(name: str) -> NamedInput | None:
    """Interpret a file's base name; ``None`` for files that are not pipeline inputs.

    ``<stem>_ins_maks.png`` / ``<stem>_ins_mask.png`` are instance masks, ``<stem>_bin_mask.png``
    binary masks, ``<video>-<start>-<end>.json`` video metadata chunks (the video name is split
    from the right, so it may contain ``-`` and dots) and any other ``<stem>.json`` image metadata.
    Suffixes are matched case-insensitively; the stem keeps its case.
    """
    lower = name.lower()
    for suffix in _INSTANCE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return NamedInput("instance", name[: -len(suffix)])
    if lower.endswith(_BINARY_SUFFIX) and len(name) > len(_BINARY_SUFFIX):
        return NamedInput("binary", name[: -len(_BINARY_SUFFIX)])
    if lower.endswith(".json") and len(name) > len(".json"):
        match = _VIDEO_NAME.match(name)
        if match:
            return NamedInput(
                "video_metadata",
                name[: -len(".json")],
                video=match["video"],
                chunk_start=int(match["start"]),
                chunk_end=int(match["end"]),
            )
        return NamedInput("metadata", name[: -len(".json")])
    return None
