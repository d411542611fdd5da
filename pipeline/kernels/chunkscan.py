"""A scanner of video metadata chunks in the shape the product writes, straight into columns.

msgspec's typed decode makes about ten Python objects per detection (the struct, two tuples,
their floats, the label) and the columns are then built from them: together about 1 µs per
detection, most of a chunk's cost. :func:`scan_chunks` walks the bytes once in compiled code and
fills arrays instead: integers parsed as it goes, every float-valued token converted as it goes
too, correctly rounded (as msgspec parses them): by Clinger's fast path where it is exact, else
by the Eisel-Lemire algorithm (Go's ``strconv`` form of it, which gives up on the rare inputs
it cannot round for certain). Those, and numbers of more than 19 significant digits, subnormals
and infinities, the caller converts with Python's ``float``.

It accepts only a strict subset of JSON and of the chunk schema, and refuses (``ok`` false)
everything else, which the caller then decodes the way it always did (msgspec, then the
validating path): anything whose meaning could differ between the two.

* A top-level array of at least one frame object with keys ``id`` (an integer), ``detections``
  (an array of detection objects), ``size`` (``null`` or two integers), ``duration`` (``null``
  or a number); ``id`` and ``detections`` present; JSON whitespace only; nothing after the array.
* Detection objects with keys ``id`` and ``type`` (``null`` or an integer), ``score`` (``null``
  or a number), ``bbox`` (``null`` or four numbers), ``offset`` (``null`` or two numbers),
  ``is_anonymised`` and ``is_anonymized`` (``null`` or a boolean), ``type_label`` (``null`` or a
  string of printable ASCII without escapes), ``color`` (``null``), ``parent_image`` (``null`` or
  a number, not kept). A key missing reads as ``null``.
* Refused: any other key, a key twice in one object, integers of more than 18 digits, an
  integer-valued token of more than 15 digits or ``-0`` where a number is expected (how each
  parser turns those into a float is not checked here).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
from numba.cpython.unsafe.numbers import leading_zeros

from pipeline.kernels import njit_inlined, njit_unmanaged

# Keys, in the order their codes number them.
_FRAME_KEYS = (b"id", b"detections", b"size", b"duration")
_DETECTION_KEYS = (
    b"id", b"parent_image", b"offset", b"bbox", b"type", b"type_label", b"score",
    b"is_anonymised", b"color", b"is_anonymized",
)  # fmt: skip
_F_ID, _F_DETECTIONS, _F_SIZE, _F_DURATION = range(4)
_D_ID, _D_PARENT, _D_OFFSET, _D_BBOX, _D_TYPE, _D_LABEL, _D_SCORE, _D_ANON, _D_COLOR, _D_ANONZ = (
    range(10)
)


def _key_table(keys: tuple[bytes, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The keys' bytes back to back, and where each starts (one more entry: the end)."""
    offsets = np.cumsum([0, *map(len, keys)]).astype(np.int64)
    return np.frombuffer(b"".join(keys), np.uint8).copy(), offsets


_FRAME_KEY_BYTES, _FRAME_KEY_OFFSETS = _key_table(_FRAME_KEYS)
_DETECTION_KEY_BYTES, _DETECTION_KEY_OFFSETS = _key_table(_DETECTION_KEYS)

_MAX_INT_DIGITS = 18  # an int64 holds any integer this long
_MAX_EXACT_DIGITS = 15  # an integer this long is an exact float whichever way it is converted
#: A boolean column's value in :class:`ScannedChunks` when null or missing.
NULL_BOOL = 2

# Byte classes as tables: a look-up compiles to faster code than chained comparisons (a
# digit is told by one comparison: _digit).
_SPACE = np.zeros(256, np.bool_)
_SPACE[list(b" \t\n\r")] = True  # JSON's whitespace
_PLAIN = np.zeros(256, np.bool_)  # a string's bytes accepted: printable ASCII but " and \
_PLAIN[32:127] = True
_PLAIN[list(b'"\\')] = False


class ScannedChunks(NamedTuple):
    """Chunks' values as arrays (see :func:`scan_chunks`), the rows of the chunks accepted one
    after the other (chunk ``c``'s frames between ``frame_bounds[c]`` and ``[c + 1]``, its
    detections by ``detection_bounds``, its number slots by ``slot_bounds``; a chunk refused has
    none). Float-valued tokens are referred to by their slot in ``numbers``, their values (NaN
    in the four slots after the last, for the caller's nulls); -1: null. A number the kernel did
    not convert is ``pending``: its slot, and where its text starts and ends in its chunk.
    ``labels`` holds the labels' text back to back, label ``i`` between ``label_offsets[i]``
    and ``[i + 1]`` (``label_null``: none given)."""

    ok: np.ndarray  # (c,) bool: the chunk was accepted
    frame_bounds: np.ndarray  # (c + 1,) int64
    detection_bounds: np.ndarray  # (c + 1,) int64
    slot_bounds: np.ndarray  # (c + 1,) int64
    frame_ids: np.ndarray  # (f,) int64
    frame_detections: np.ndarray  # (f,) int64
    frame_sizes: np.ndarray  # (f, 2) int64, as given
    frame_size_null: np.ndarray  # (f,) bool
    frame_durations: np.ndarray  # (f,) slot
    integers: np.ndarray  # (n, 2) int64: detection id, type (0 when null)
    integer_null: np.ndarray  # (n, 2) bool
    anonymised: np.ndarray  # (n, 2) int8: is_anonymised, is_anonymized (0, 1; 2 null)
    slots: np.ndarray  # (n, 3) first slot of the bbox, of the offset; the score's slot
    labels: np.ndarray  # uint8
    label_offsets: np.ndarray  # (n + 1,) int32
    label_null: np.ndarray  # (n,) bool
    numbers: np.ndarray  # (slots + 4,) float64
    pending: np.ndarray  # (p, 3) int64: slot, start, end


#: The most bytes scanned in one call: offsets into the chunks' text are 32-bit (Arrow
#: strings'). A chunk beyond, alone or after those before it, is refused whole.
MAX_SCAN_BYTES = 2**31 - 1


def scan_chunks(datas: Sequence[bytes]) -> ScannedChunks:
    """Scan chunks' bytes in one kernel call (see the module's docstring for what is accepted;
    a chunk refused has no rows, and does not change the others')."""
    kept, total = [], 0
    for data in datas:
        total += len(data)
        kept.append(data if total <= MAX_SCAN_BYTES else b"")
    joined = np.frombuffer(b"".join(kept), np.uint8)
    bounds = np.cumsum([0, *map(len, kept)], dtype=np.int64)
    objects = _objects(joined)  # at least one per frame and per detection
    frame_ids = _empty(objects, np.int64)
    frame_detections = _empty(objects, np.int64)
    frame_sizes = _empty((objects, 2), np.int64)
    frame_size_null = _empty(objects, np.bool_)
    frame_durations = _empty(objects, np.int64)
    integers = _empty((objects, 2), np.int64)
    integer_null = _empty((objects, 2), np.bool_)
    anonymised = _empty((objects, 2), np.int8)
    slots = _empty((objects, 3), np.int64)
    labels = _empty(len(joined), np.uint8)
    label_offsets = _empty(objects + 1, np.int32)
    label_null = _empty(objects, np.bool_)
    numbers = _empty(7 * objects + 6, np.float64)  # and its bits, a view (see _float)
    pending = _empty((7 * objects + 2, 3), np.int64)
    label_offsets[0] = 0  # the kernel writes each further offset
    ok = np.zeros(len(kept), np.bool_)
    counts = np.zeros((len(kept) + 1, 4), np.int64)
    _scan_chunks(
        joined, bounds, ok, counts, frame_ids, frame_detections, frame_sizes, frame_size_null,
        frame_durations, integers, integer_null, anonymised, slots, labels, label_offsets,
        label_null, (numbers, numbers.view(np.uint64)), pending,
    )  # fmt: skip
    frames, detections, used, held = counts[-1].tolist()
    numbers[used : used + 4] = np.nan
    return ScannedChunks(
        ok, counts[:, 0], counts[:, 1], counts[:, 2], frame_ids[:frames],
        frame_detections[:frames], frame_sizes[:frames], frame_size_null[:frames],
        frame_durations[:frames], integers[:detections], integer_null[:detections],
        anonymised[:detections], slots[:detections], labels[: label_offsets[detections]],
        label_offsets[: detections + 1], label_null[:detections], numbers[: used + 4],
        pending[:held],
    )  # fmt: skip


def _empty(shape: int | tuple[int, int], dtype: type[np.generic]) -> np.ndarray:
    """An uninitialised array from Arrow's memory pool, which keeps freed memory for the next
    batch: a batch's arrays are megabytes, and NumPy's (the C library's) give them back to the
    system and take them again each time, about 0.7 ms of page faults per batch of real tracks
    (a third of the scan)."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer(pa.allocate_buffer(size), dtype).reshape(shape)


@njit_unmanaged
def _objects(data: Any) -> Any:
    """How many ``{`` bytes ``data`` holds (in compiled code: ``bytes.count`` is 50x slower)."""
    count = 0
    for c in data:
        count += c == 123
    return count


@njit_inlined
def _skip(data: Any, i: Any) -> Any:
    """The position of the first non-whitespace byte at or after ``i``."""
    n = len(data)
    while i < n and _SPACE[data[i]]:
        i += 1
    return i


# Numbers: their digits read into a uint64, then converted by Clinger's fast path, else by
# Eisel-Lemire as Go's strconv (eisel_lemire.go) writes it. Unsigned 64-bit arithmetic
# throughout (numba turns a mix of signed and unsigned integers into floats).
_U0, _U1, _U9, _U10 = np.uint64(0), np.uint64(1), np.uint64(9), np.uint64(10)
_U48 = np.uint64(48)  # the byte "0"
_U32, _U52, _U53, _U63 = np.uint64(32), np.uint64(52), np.uint64(53), np.uint64(63)
_LOW9 = np.uint64(0x1FF)
_LOW32 = np.uint64(0xFFFFFFFF)
_FRACTION = np.uint64((1 << 52) - 1)
_SIGN = np.uint64(1 << 63)
_MAX_DIGITS = 19  # significant digits a uint64 holds
_MIN_EXP10, _MAX_EXP10 = -348, 347
_POWERS_EXACT = np.array([10.0**k for k in range(23)])  # each exactly a double
_UNDECIDED, _VALUE, _BITS = range(3)


@njit_inlined
def _digit(byte: Any) -> Any:
    """The value of a digit's byte, above 9 for any other byte (unsigned arithmetic wraps
    around below "0"): one comparison tells a digit, where a table look-up made the digit loops
    1.4-1.7x slower (measured on full-precision floats)."""
    return np.uint64(byte) - _U48


@njit_inlined
def _number(data: Any, i: Any) -> Any:
    """A JSON number at ``i``: (its end, digits before any fraction, integral, its digits as one
    integer and the power of ten that scales it, and whether that integer is exact: at most 19
    significant digits), or end -1. The digits are read once, validated and summed together."""
    n = len(data)
    j = i
    if j < n and data[j] == 45:  # -
        j += 1
    if j >= n:
        return -1, 0, False, _U0, 0, False
    mantissa = _U0
    if data[j] == 48:  # 0
        j += 1
    elif _digit(data[j]) <= _U9:
        while j < n:
            digit = _digit(data[j])
            if digit > _U9:
                break
            mantissa = mantissa * _U10 + digit
            j += 1
    else:
        return -1, 0, False, _U0, 0, False
    digits = j - i - (data[i] == 45)
    integral = True
    fraction = exp10 = 0
    if j < n and data[j] == 46:  # .
        integral = False
        j += 1
        first = j
        while j < n:
            digit = _digit(data[j])
            if digit > _U9:
                break
            mantissa = mantissa * _U10 + digit
            j += 1
        if j == first:
            return -1, 0, False, _U0, 0, False
        fraction = j - first
        exp10 = -fraction
    if j < n and (data[j] == 101 or data[j] == 69):  # e E
        integral = False
        j += 1
        sign = 1
        if j < n and (data[j] == 43 or data[j] == 45):
            sign = 1 - 2 * (data[j] == 45)
            j += 1
        first = j
        given = 0
        while j < n and _digit(data[j]) <= _U9:
            if given < 100_000:  # far beyond a double's range either way
                given = given * 10 + (data[j] - 48)
            j += 1
        if j == first:
            return -1, 0, False, _U0, 0, False
        exp10 += sign * given
    significant = digits + fraction
    if significant > _MAX_DIGITS:  # leading zeros (0.000...) are not significant
        k = i + (data[i] == 45)
        while k < j and (data[k] == 48 or data[k] == 46):
            significant -= data[k] == 48
            k += 1
    return j, digits, integral, mantissa, exp10, significant <= _MAX_DIGITS


@njit_inlined
def _integer(data: Any, i: Any) -> Any:
    """An integer token at ``i``: (its end, value), end -1 when not one (or too long)."""
    end, digits, integral, magnitude, _, _ = _number(data, i)
    if end < 0 or not integral or digits > _MAX_INT_DIGITS:
        return -1, 0
    value = np.int64(magnitude)  # at most 18 digits
    return end, -value if data[i] == 45 else value


@njit_inlined
def _float(data: Any, i: Any, numbers: Any, pending: Any, slot: Any, counts: Any) -> Any:
    """A number token at ``i`` converted into ``numbers`` as slot ``slot`` (float64 values,
    and their bits: two views of one array), or else added to ``pending`` (``counts[3]`` of
    them): its end, or -1."""
    end, digits, integral, mantissa, exp10, exact = _number(data, i)
    if end < 0:
        return -1
    if integral and (digits > _MAX_EXACT_DIGITS or (data[i] == 45 and data[i + 1] == 48)):
        return -1
    value, bits, how = _convert(mantissa, exp10, data[i] == 45, exact)
    if how == _VALUE:
        numbers[0][slot] = value
    elif how == _BITS:
        numbers[1][slot] = bits
    else:
        held = counts[3]
        pending[held, 0], pending[held, 1], pending[held, 2] = slot, i, end
        counts[3] = held + 1
    return end


def _powers_of_ten() -> np.ndarray:
    """The 128-bit mantissas of 10**e for e in ``_MIN_EXP10..``, rounded down, as (low, high)
    words: Go's ``detailedPowersOfTen``, computed exactly."""
    rows = []
    for exp10 in range(_MIN_EXP10, _MAX_EXP10 + 1):
        if exp10 >= 0:
            value = 10**exp10
        else:  # 2**k / 10**-exp10, k large enough for 128 bits of quotient
            divisor = 10**-exp10
            value = (1 << (divisor.bit_length() + 128)) // divisor
        excess = value.bit_length() - 128
        value = value >> excess if excess > 0 else value << -excess
        rows.append((value & (2**64 - 1), value >> 64))
    return np.array(rows, dtype=np.uint64)


_POWERS_OF_TEN = _powers_of_ten()


@njit_inlined
def _multiply(a: Any, b: Any) -> Any:
    """The 128-bit product of two uint64: (high, low) words (Go's ``bits.Mul64``)."""
    a0, a1, b0, b1 = a & _LOW32, a >> _U32, b & _LOW32, b >> _U32
    w0 = a0 * b0
    t = a1 * b0 + (w0 >> _U32)
    w1 = a0 * b1 + (t & _LOW32)
    return a1 * b1 + (t >> _U32) + (w1 >> _U32), a * b


@njit_inlined
def _convert(mantissa: Any, exp10: Any, negative: Any, exact: Any) -> Any:
    """``mantissa * 10**exp10`` (negated when ``negative``) as a float64, correctly rounded:
    (value, bits, which of the two holds it, :data:`_UNDECIDED` when neither does: the
    mantissa not ``exact``, or :func:`_eisel_lemire` gave up). A mantissa below 2**53 and a
    power of ten up to 22 are exact doubles, so one product or quotient rounds correctly
    (Clinger's fast path, which Go's ``strconv`` also takes first: Eisel-Lemire gives up on
    some of these, 1.0 one)."""
    if not exact:
        return 0.0, _U0, _UNDECIDED
    if mantissa >> _U53 == _U0 and -22 <= exp10 <= 22:
        value = np.float64(mantissa)
        value = value * _POWERS_EXACT[exp10] if exp10 >= 0 else value / _POWERS_EXACT[-exp10]
        return (-value if negative else value), _U0, _VALUE
    bits, found = _eisel_lemire(mantissa, exp10, negative)
    return 0.0, bits, (_BITS if found else _UNDECIDED)


@njit_inlined
def _eisel_lemire(mantissa: Any, exp10: Any, negative: Any) -> Any:
    """The float64 bits nearest ``mantissa * 10**exp10`` (negated when ``negative``), and
    whether they were found (Go's ``eiselLemire64``)."""
    if mantissa == _U0:
        return (_SIGN if negative else _U0), True
    if exp10 < _MIN_EXP10 or exp10 > _MAX_EXP10:
        return _U0, False
    row = exp10 - _MIN_EXP10
    clz = np.int64(leading_zeros(mantissa))  # type: ignore[call-arg]
    mantissa = mantissa << np.uint64(clz)
    exp2 = ((217706 * exp10) >> 16) + 64 + 1023 - clz  # signed, unlike Go's
    high, low = _multiply(mantissa, _POWERS_OF_TEN[row, 1])
    if high & _LOW9 == _LOW9 and low + mantissa < mantissa:  # a wider approximation
        high2, low2 = _multiply(mantissa, _POWERS_OF_TEN[row, 0])
        merged_high, merged_low = high, low + high2
        if merged_low < low:
            merged_high += _U1
        if merged_high & _LOW9 == _LOW9 and merged_low + _U1 == _U0 and low2 + mantissa < mantissa:
            return _U0, False
        high, low = merged_high, merged_low
    top = high >> _U63
    bits = high >> (top + _U9)
    exp2 -= 1 - np.int64(top)
    if low == _U0 and high & _LOW9 == _U0 and bits & np.uint64(3) == _U1:
        return _U0, False  # halfway between two doubles: undecided
    bits += bits & _U1
    bits >>= _U1
    if bits >> _U53 > _U0:
        bits >>= _U1
        exp2 += 1
    if exp2 <= 0 or exp2 >= 0x7FF:  # subnormal, or beyond a double
        return _U0, False
    bits = (np.uint64(exp2) << _U52) | (bits & _FRACTION)
    return (bits | _SIGN if negative else bits), True


@njit_inlined
def _literal(data: Any, i: Any, word: Any) -> Any:
    """The end of ``word`` (bytes as a tuple of codes) at ``i``, or -1."""
    if i + len(word) > len(data):
        return -1
    for k in range(len(word)):
        if data[i + k] != word[k]:
            return -1
    return i + len(word)


_NULL = tuple(b"null")
_TRUE = tuple(b"true")
_FALSE = tuple(b"false")


@njit_inlined
def _string(data: Any, i: Any) -> Any:
    """The end (after the closing quote) of a string of printable ASCII without escapes at
    ``i``, or -1."""
    if i >= len(data) or data[i] != 34:
        return -1
    j = i + 1
    while j < len(data) and _PLAIN[data[j]]:
        j += 1
    return j + 1 if j < len(data) and data[j] == 34 else -1


@njit_inlined
def _is_key(data: Any, i: Any, length: Any, keys: Any, offsets: Any, code: Any) -> Any:
    """Whether the ``length`` bytes after ``i`` spell key ``code`` of ``keys``."""
    if offsets[code + 1] - offsets[code] != length:
        return False
    for k in range(length):  # noqa: SIM110 - a loop, not all() of a generator: numba
        if data[i + 1 + k] != keys[offsets[code] + k]:
            return False
    return True


@njit_inlined
def _key(data: Any, i: Any, keys: Any, offsets: Any, expected: Any) -> Any:
    """(the position after ``"key":`` and whitespace, the key's code) at ``i``; code -1 when
    it is no key of ``keys``, position -1 when it is not a key. Key ``expected`` is tried
    first (the keys are listed in the order the product writes them), by its bytes alone."""
    if expected < len(offsets) - 1:
        length = offsets[expected + 1] - offsets[expected]
        end = i + length + 2
        quoted = end <= len(data) and data[i] == 34 and data[end - 1] == 34
        if quoted and _is_key(data, i, length, keys, offsets, expected):
            colon = _skip(data, end)
            if colon < len(data) and data[colon] == 58:
                return _skip(data, colon + 1), expected
    end = _string(data, i)
    if end < 0:
        return -1, -1
    colon = _skip(data, end)
    if colon >= len(data) or data[colon] != 58:
        return -1, -1
    length = end - i - 2
    if expected < len(offsets) - 1 and _is_key(data, i, length, keys, offsets, expected):
        return _skip(data, colon + 1), expected
    for code in range(len(offsets) - 1):
        if _is_key(data, i, length, keys, offsets, code):
            return _skip(data, colon + 1), code
    return colon + 1, -1


@njit_inlined
def _numbers(
    data: Any, i: Any, count: Any, numbers: Any, pending: Any, slot: Any, counts: Any
) -> Any:
    """An array of exactly ``count`` numbers at ``i``, into slots ``slot..`` (:func:`_float`):
    its end, or -1."""
    if i >= len(data) or data[i] != 91:
        return -1
    i = _skip(data, i + 1)
    for k in range(count):
        if k:
            if i >= len(data) or data[i] != 44:
                return -1
            i = _skip(data, i + 1)
        i = _float(data, i, numbers, pending, slot + k, counts)
        if i < 0:
            return -1
        i = _skip(data, i)
    if i >= len(data) or data[i] != 93:
        return -1
    return i + 1


@njit_inlined
def _next(data: Any, i: Any, close: Any) -> Any:
    """After a value: (position of the next element, more follow), past a comma or the
    ``close`` byte; position -1 on anything else."""
    i = _skip(data, i)
    if i < len(data):
        if data[i] == 44:
            return _skip(data, i + 1), True
        if data[i] == close:
            return i + 1, False
    return -1, False


@njit_unmanaged
def _scan_chunks(data: Any, bounds: Any, ok: Any, counts: Any, frame_ids: Any,
                 frame_detections: Any, frame_sizes: Any, frame_size_null: Any,
                 frame_durations: Any, integers: Any, integer_null: Any, anonymised: Any,
                 slots: Any, labels: Any, label_offsets: Any, label_null: Any, numbers: Any,
                 pending: Any) -> None:  # fmt: skip
    """Scan each chunk ``c`` (``data`` between ``bounds[c]`` and ``[c + 1]``): ``ok[c]``, and
    ``counts[c + 1]`` the rows (frames, detections, number slots, pending numbers) of chunks
    ``..c`` together, a refused chunk's rows dropped (the next chunk's overwrite them)."""
    for c in range(len(bounds) - 1):
        for j in range(4):  # element by element: a row copy needs numba's runtime
            counts[c + 1, j] = counts[c, j]
        ok[c] = _scan(
            data[bounds[c] : bounds[c + 1]], frame_ids, frame_detections, frame_sizes,
            frame_size_null, frame_durations, integers, integer_null, anonymised, slots, labels,
            label_offsets, label_null, numbers, pending, counts[c + 1],
        )  # fmt: skip
        if not ok[c]:  # its pending numbers too
            counts[c + 1, 3] = counts[c, 3]


@njit_inlined
def _scan(data: Any, frame_ids: Any, frame_detections: Any, frame_sizes: Any,
          frame_size_null: Any, frame_durations: Any, integers: Any, integer_null: Any,
          anonymised: Any, slots: Any, labels: Any, label_offsets: Any, label_null: Any,
          numbers: Any, pending: Any, counts: Any) -> Any:  # fmt: skip
    """Fill the arrays of :class:`ScannedChunks` (allocated for every ``{`` of ``data`` being
    a frame or a detection) from row ``counts`` on (frames, detections, number slots, pending
    numbers: each row is set whole here), and, when the chunk is accepted (returned), ``counts``
    past its rows."""
    n = len(data)
    frames, detections, used = counts[0], counts[1], counts[2]
    i = _skip(data, 0)
    if i >= n or data[i] != 91:
        return False
    i = _skip(data, i + 1)
    more = True
    while more:  # frames
        if i >= n or data[i] != 123:
            return False
        f = frames
        frames += 1
        frame_sizes[f, 0] = frame_sizes[f, 1] = 0
        frame_size_null[f] = True
        frame_durations[f] = -1
        seen = 0
        key = -1
        i = _skip(data, i + 1)
        in_frame = i < n and data[i] != 125
        while in_frame:
            i, key = _key(data, i, _FRAME_KEY_BYTES, _FRAME_KEY_OFFSETS, key + 1)
            if key < 0 or seen & (1 << key):
                return False
            seen |= 1 << key
            if key == _F_ID:
                i, frame_ids[f] = _integer(data, i)
            elif key == _F_SIZE:
                end = _literal(data, i, _NULL)
                if end < 0 and i < n and data[i] == 91:
                    end, frame_sizes[f, 0] = _integer(data, _skip(data, i + 1))
                    end = _skip(data, end) if end >= 0 else -1
                    if end < 0 or end >= n or data[end] != 44:
                        return False
                    end, frame_sizes[f, 1] = _integer(data, _skip(data, end + 1))
                    end = _skip(data, end) if end >= 0 else -1
                    if end < 0 or end >= n or data[end] != 93:
                        return False
                    end += 1
                    frame_size_null[f] = False
                i = end
            elif key == _F_DURATION:
                end = _literal(data, i, _NULL)
                if end < 0:
                    end = _float(data, i, numbers, pending, used, counts)
                    frame_durations[f] = used
                    used += 1
                i = end
            else:  # detections
                if i >= n or data[i] != 91:
                    return False
                first = detections
                i = _skip(data, i + 1)
                listed = i < n and data[i] != 93
                while listed:  # detections
                    if i >= n or data[i] != 123:
                        return False
                    d = detections
                    detections += 1
                    integers[d, 0] = integers[d, 1] = 0
                    integer_null[d, 0] = integer_null[d, 1] = True
                    anonymised[d, 0] = anonymised[d, 1] = NULL_BOOL
                    slots[d, 0] = slots[d, 1] = slots[d, 2] = -1
                    label_null[d] = True
                    label_offsets[d + 1] = label_offsets[d]
                    held = 0
                    code = -1
                    i = _skip(data, i + 1)
                    in_detection = i < n and data[i] != 125
                    while in_detection:
                        i, code = _key(
                            data, i, _DETECTION_KEY_BYTES, _DETECTION_KEY_OFFSETS, code + 1
                        )
                        if code < 0 or held & (1 << code):
                            return False
                        held |= 1 << code
                        end = _literal(data, i, _NULL)
                        if end >= 0 or code == _D_COLOR:
                            i = end  # null (a colour must be)
                        elif code in (_D_ID, _D_TYPE):
                            column = 0 if code == _D_ID else 1
                            i, integers[d, column] = _integer(data, i)
                            integer_null[d, column] = False
                        elif code in (_D_BBOX, _D_OFFSET):
                            count = 4 if code == _D_BBOX else 2
                            slots[d, 0 if code == _D_BBOX else 1] = used
                            i = _numbers(data, i, count, numbers, pending, used, counts)
                            used += count
                        elif code == _D_SCORE:
                            slots[d, 2] = used
                            i = _float(data, i, numbers, pending, used, counts)
                            used += 1
                        elif code in (_D_ANON, _D_ANONZ):
                            column = 0 if code == _D_ANON else 1
                            end = _literal(data, i, _TRUE)
                            anonymised[d, column] = 1
                            if end < 0:
                                end = _literal(data, i, _FALSE)
                                anonymised[d, column] = 0
                            i = end
                        elif code == _D_LABEL:
                            end = _string(data, i)
                            if end >= 0:
                                start = label_offsets[d]
                                for k in range(i + 1, end - 1):
                                    labels[start + k - i - 1] = data[k]
                                label_offsets[d + 1] = start + end - i - 2
                                label_null[d] = False
                            i = end
                        else:  # parent_image: read, not kept
                            i = _number(data, i)[0]
                        if i < 0:
                            return False
                        i, in_detection = _next(data, i, 125)
                        if i < 0:
                            return False
                    if not in_detection and held == 0:
                        i += 1  # an empty object: past its "}"
                    i, listed = _next(data, i, 93)
                    if i < 0:
                        return False
                if detections == first:
                    i += 1  # an empty array: past its "]"
                frame_detections[f] = detections - first
            if i < 0:
                return False
            i, in_frame = _next(data, i, 125)
            if i < 0:
                return False
        if not seen & (1 << _F_ID) or not seen & (1 << _F_DETECTIONS):
            return False  # an empty frame object included
        i, more = _next(data, i, 93)
        if i < 0:
            return False
    if _skip(data, i) != n:
        return False
    counts[0], counts[1], counts[2] = frames, detections, used
    return True
