"""Measuring masks from their PNG scanlines as they are inflated: the fused decode path.

A strip kernel takes a run of filtered scanlines (each led by its filter type byte), unfilters
every row into one of two row buffers (the row and the one above, alternating by row parity; each
padded with zeros to whole 8-byte words) and measures it with the accumulators the whole-image
kernels use (:mod:`pipeline.kernels.segments`). A row's runs are found by comparing it with
itself one pixel on, 512 bytes per step in one vectorised loop and then a word (8 bytes) at a
time (``_row_runs``), so a mask costs by its edges more than by its pixels. The decoded image
never exists: memory is two rows, the strip, the accumulators and the rescaled output.

Only 8-bit, non-interlaced images come here, so a pixel is ``channels`` bytes and the PNG
filters' "bytes per pixel" is ``channels``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from pipeline.kernels import njit_unmanaged
from pipeline.kernels.segments import (
    _BACKGROUND,
    _COUNT,
    _EMPTY,
    _LAST_KEY,
    _LAST_SLOT,
    _SUMX,
    _SUMY,
    _USED,
    _XMAX,
    _XMIN,
    _YMAX,
    _YMIN,
    _binary_row,
    _grow,
    _hash_slot,
    _room_for_row,
    _sample_row,
)

#: Returned by a strip kernel when every row was good.
ROWS_OK = -1


@njit_unmanaged
def _paeth(a: Any, b: Any, c: Any) -> Any:
    """The PNG Paeth predictor of signed (int64) neighbours: left, above, above-left."""
    p = a + b - c
    pa = abs(p - a)
    pb = abs(p - b)
    pc = abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    if pb <= pc:
        return b
    return c


@njit_unmanaged
def _unfilter(
    raw: np.ndarray,
    start: int,
    stride: int,
    bpp: int,
    above: np.ndarray,
    row: np.ndarray,
    last: np.ndarray,
    pattern: np.ndarray,
) -> bool:
    """Undo the PNG filter of the scanline at ``raw[start:start+stride]`` (filter byte first)
    into ``row``, given the unfiltered row ``above`` (zeros for the first row); both rows are
    padded to whole 8-byte words. ``last`` (4 bytes) and ``pattern`` (3 words) are scratch.
    False for a filter type PNG does not define.

    None and Up are a copy and a byte-wise add, 8 bytes per step (``_unfilter_words``), and
    so is Sub, summing along each channel within a word (``_unfilter_sub``), and Average for
    RGB(A) pixels, a pixel's worth of bytes per step (``_unfilter_average``); Paeth, and
    Average for grey pixels, predict byte by byte where a word is not a run continued
    (``_unfilter_left``).
    """
    kind = raw[start]
    data = start + 1
    length = stride - 1
    if kind == 0 or kind == 2:
        _unfilter_words(kind == 2, raw, data, length, above, row)
    elif kind == 1:
        _unfilter_sub(raw, data, length, bpp, row)
    # One call per filter with the kind as a constant: the compiler specialises each (with the
    # kind a variable, the byte loop runs ~50x slower).
    elif kind == 3 and bpp >= 3:
        _unfilter_average(raw, data, length, bpp, above, row)
    elif kind == 3:
        _unfilter_left(3, raw, data, length, bpp, above, row, last, pattern)
    elif kind == 4:
        _unfilter_left(4, raw, data, length, bpp, above, row, last, pattern)
    else:
        return False
    return True


#: Every byte's low 7 bits, and every byte's top bit, of a word (``_add_bytes``).
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
_TOP = np.uint64(0x8080808080808080)


@njit_unmanaged
def _unfilter_words(
    up: bool, raw: np.ndarray, data: int, length: int, above: np.ndarray, row: np.ndarray
) -> None:
    """None (a copy) or, with ``up``, Up (a byte-wise add of the row above) 8 bytes per step:
    a byte loop here is not vectorised (the compiler cannot rule out that the rows overlap),
    and costs about as much as the rest of the row's measurement (``_add_bytes``: the eight
    byte sums of a word without carries between them)."""
    whole = length >> 3
    raw_words = raw[data : data + 8 * whole].view(np.uint64)
    row_words = row.view(np.uint64)
    if up:
        above_words = above.view(np.uint64)
        for w in range(whole):
            a = raw_words[w]
            b = above_words[w]
            row_words[w] = _add_bytes(a, b)
        for i in range(8 * whole, length):
            row[i] = raw[data + i] + above[i]
    else:
        for w in range(whole):
            row_words[w] = raw_words[w]
        for i in range(8 * whole, length):
            row[i] = raw[data + i]


@njit_unmanaged
def _unfilter_sub(raw: np.ndarray, data: int, length: int, bpp: int, row: np.ndarray) -> None:
    """Sub: each byte plus the byte one pixel (``bpp`` bytes) to its left, 8 bytes per step.

    A filtered word's bytes are summed along each channel within the word (``_channel_sums``),
    and each channel's last byte before the word is added to them (``_continued``): no byte
    waits for the byte one pixel before it, as in a byte loop (a dense 1080p mask's Sub rows:
    ~0.55 ms, against ~1.0 ms with a byte loop for words that are not zeros). A stretch of
    filtered words of zeros (inside a run, across background) continues the word before it,
    three words (24 bytes, whole pixels) per step."""
    whole = length >> 3
    raw_words = raw[data : data + 8 * whole].view(np.uint64)
    row_words = row.view(np.uint64)
    for q in range(min(bpp, length)):  # the first pixel has nothing to its left
        row[q] = raw[data + q]
    previous = np.uint64(0)  # the unfiltered word before word w (zeros before the row)
    # Unsigned word indices, as in _row_runs: ~10 % of a dense mask's Sub rows.
    one, two, three = np.uint64(1), np.uint64(2), np.uint64(3)
    end = np.uint64(whole)
    w = np.uint64(0)
    while w < end:
        if w > 0 and raw_words[w] == 0:
            p0 = _continued(previous, bpp)  # words w, w + 1, w + 2: then they repeat
            p1 = _continued(p0, bpp)
            p2 = _continued(p1, bpp)
            while (
                w + three <= end and (raw_words[w] | raw_words[w + one] | raw_words[w + two]) == 0
            ):
                row_words[w] = p0
                row_words[w + one] = p1
                row_words[w + two] = p2
                w += three
            while w < end and raw_words[w] == 0:
                row_words[w] = p0
                p0, p1, p2 = p1, p2, p0
                w += one
            previous = row_words[w - one]
            continue
        previous = _add_bytes(_channel_sums(raw_words[w], bpp), _continued(previous, bpp))
        row_words[w] = previous
        w += one
    for q in range(max(8 * whole, bpp), length):
        row[q] = (raw[data + q] + row[q - bpp]) & 255


@njit_unmanaged
def _add_bytes(a: Any, b: Any) -> Any:
    """The eight byte-wise sums (mod 256) of two words, without carries between bytes: the low
    7 bits of each byte are added, and the top bits put back by exclusive or."""
    return ((a & _LOW7) + (b & _LOW7)) ^ ((a ^ b) & _TOP)


@njit_unmanaged
def _channel_sums(word: Any, bpp: int) -> Any:
    """Each byte of ``word`` plus the bytes ``bpp``, ``2 bpp``, ... before it in the word
    (mod 256): sums doubled in reach by shifted adds (3 bytes then 6 for RGB)."""
    if bpp == 3:
        word = _add_bytes(word, word << np.uint64(24))
        return _add_bytes(word, word << np.uint64(48))
    if bpp == 4:
        return _add_bytes(word, word << np.uint64(32))
    if bpp == 2:
        word = _add_bytes(word, word << np.uint64(16))
        return _add_bytes(word, word << np.uint64(32))
    word = _add_bytes(word, word << np.uint64(8))
    word = _add_bytes(word, word << np.uint64(16))
    return _add_bytes(word, word << np.uint64(32))


@njit_unmanaged
def _continued(word: Any, bpp: int) -> Any:
    """The word after ``word`` in a row of pixels all equal to its last ``bpp`` bytes (little
    endian: those bytes, repeated from the word's first byte)."""
    if bpp == 3:
        pixel = word >> np.uint64(40)
        return pixel | (pixel << np.uint64(24)) | (pixel << np.uint64(48))
    if bpp == 4:
        pixel = word >> np.uint64(32)
        return pixel | (pixel << np.uint64(32))
    if bpp == 2:
        return (word >> np.uint64(48)) * np.uint64(0x0001000100010001)
    return (word >> np.uint64(56)) * np.uint64(0x0101010101010101)


@njit_unmanaged
def _unfilter_average(
    raw: np.ndarray, data: int, length: int, bpp: int, above: np.ndarray, row: np.ndarray
) -> None:
    """Average for RGB(A) pixels (``bpp`` 3 or 4): each byte plus the mean (rounded down) of
    the byte one pixel to its left and the byte above, a word at a time.

    A word's bytes depend on the bytes one pixel before them, so a word is done in two or three
    steps of one pixel's bytes each, all eight lanes at once: the means of the left bytes (the
    word before continued, ``_continued``, then the step before shifted one pixel on) and the
    bytes above, ``(l & u) + ((l ^ u) >> 1)`` without carries between bytes, added to the
    filtered bytes and kept for that step's bytes. A filtered word of zeros whose bytes above
    continue the word before (inside a run, across background) is that word continued (a
    dense 1080p mask's Average rows: ~1.35 ms, against ~2.2 ms byte by byte)."""
    whole = length >> 3
    raw_words = raw[data : data + 8 * whole].view(np.uint64)
    row_words = row.view(np.uint64)
    above_words = above.view(np.uint64)
    shift = np.uint64(8 * bpp)
    first = np.uint64(0xFFFFFF) if bpp == 3 else np.uint64(0xFFFFFFFF)  # a pixel's bytes
    previous = np.uint64(0)  # the unfiltered word before word w (zeros before the row)
    one, end = np.uint64(1), np.uint64(whole)  # unsigned word indices, as in _row_runs
    w = np.uint64(0)
    while w < end:
        left = _continued(previous, bpp)
        filtered, up = raw_words[w], above_words[w]
        if filtered == 0 and up == left:
            previous = left
        else:
            previous = np.uint64(0)
            pixel = first
            while pixel != 0:  # the bytes of one pixel (or what of it is in the word)
                mean = (left & up) + (((left ^ up) >> np.uint64(1)) & _LOW7)
                part = _add_bytes(filtered, mean) & pixel
                previous |= part
                left = part << shift
                pixel <<= shift
        row_words[w] = previous
        w += one
    for q in range(8 * whole, length):
        left_byte = np.int64(row[q - bpp]) if q >= bpp else np.int64(0)
        row[q] = (raw[data + q] + ((left_byte + np.int64(above[q])) >> 1)) & 255


@njit_unmanaged
def _unfilter_left(
    kind: int,
    raw: np.ndarray,
    data: int,
    length: int,
    bpp: int,
    above: np.ndarray,
    row: np.ndarray,
    last: np.ndarray,
    pattern: np.ndarray,
) -> None:
    """Average (3; grey pixels) or Paeth (4), 8 bytes per step where a mask allows it.

    A filtered word of zeros continues the left neighbours unchanged wherever the predictor is
    the left byte: where above equals left for Average, where above equals above-left for
    Paeth (so inside any region of a mask and across background). Such a word is
    written whole, as the pattern of the last byte of each channel (``_pattern``'s layout).
    Other words, and the row's tail, go byte by byte.
    """
    whole = length >> 3
    raw_words = raw[data : data + 8 * whole].view(
        np.uint64
    )  # unaligned loads are fine on x86/arm64
    row_words = row.view(np.uint64)
    above_words = above.view(np.uint64)
    # above_left_words[w - 1] is above[8w - bpp : 8w - bpp + 8], the above-left of word w.
    above_left_words = above[8 - bpp : 8 - bpp + 8 * max(whole - 1, 0)].view(np.uint64)
    for k in range(4):
        last[k] = 0
    stale = True
    channel = 0  # of the next byte: byte q is channel q % bpp
    step = 8
    while step >= bpp:
        step -= bpp  # 8 % bpp, the channel shift of a word
    m = 0  # the next word's index % 3
    q = 0
    for w in range(whole):
        if w > 0 and raw_words[w] == 0:
            if stale:
                _left_pattern(last, bpp, pattern)
                stale = False
            word = pattern[m]
            if above_left_words[w - 1] == above_words[w] if kind == 4 else above_words[w] == word:
                row_words[w] = word
                q += 8
                channel += step
                if channel >= bpp:
                    channel -= bpp
                m = 0 if m == 2 else m + 1
                continue
        channel = _unfilter_bytes(kind, raw, data, q, q + 8, bpp, above, row, last, channel)
        q += 8
        stale = True
        m = 0 if m == 2 else m + 1
    _unfilter_bytes(kind, raw, data, q, length, bpp, above, row, last, channel)


@njit_unmanaged
def _left_pattern(last: np.ndarray, bpp: int, pattern: np.ndarray) -> None:
    """The three words of a row continuing ``last`` (channel k's byte at every byte q with
    q % bpp == k), as ``_pattern`` lays them out (and, for RGB(A) pixels, builds them: a few
    shifts, where the byte loop here costs as much as unfiltering the word that precedes it)."""
    if bpp >= 3:
        _pattern(last, 0, bpp, pattern)
        return
    k = 0
    for m in range(3):
        word = np.uint64(0)
        for t in range(8):
            word |= np.uint64(last[k]) << np.uint64(8 * t)
            k = 0 if k == bpp - 1 else k + 1
        pattern[m] = word


@njit_unmanaged
def _unfilter_bytes(
    kind: int,
    raw: np.ndarray,
    data: int,
    first: int,
    end: int,
    bpp: int,
    above: np.ndarray,
    row: np.ndarray,
    last: np.ndarray,
    channel: int,
) -> int:
    """Unfilter bytes ``first..end-1`` (the first of ``channel``) for Sub, Average or Paeth;
    returns the channel of byte ``end``. ``last[k]`` is channel k's byte one pixel to the left
    (0 before the row)."""
    for q in range(first, end):
        # int64, not int(): numba's int() of a uint8 is unsigned and a + b - c would wrap.
        left = np.int64(last[channel])
        if kind == 1:
            predicted = left
        elif kind == 3:
            predicted = (left + np.int64(above[q])) >> 1
        else:
            up = np.int64(above[q])
            up_left = np.int64(0)
            if q >= bpp:
                up_left = np.int64(above[q - bpp])
            predicted = left
            if up != up_left:  # else p = left: Paeth picks left without its distances
                predicted = _paeth(left, up, up_left)
        value = (raw[data + q] + predicted) & 255
        row[q] = value
        last[channel] = value
        channel = 0 if channel == bpp - 1 else channel + 1
    return channel


@njit_unmanaged
def _pattern(row: np.ndarray, j: int, channels: int, pattern: np.ndarray) -> None:
    """Fill ``pattern`` with the three 8-byte words a row made only of the pixel at byte ``j``
    (3 or 4 bytes) has at bytes 8m..8m+7 (m = 0, 1, 2): word w of such a row is
    ``pattern[w % 3]``, since 24 bytes are a whole number of pixels. (Little-endian words: the
    24 bytes are the pixel's bytes ``u`` repeated, and each word is three or four shifts of u.)"""
    if channels == 4:
        u = (
            np.uint64(row[j])
            | (np.uint64(row[j + 1]) << np.uint64(8))
            | (np.uint64(row[j + 2]) << np.uint64(16))
            | (np.uint64(row[j + 3]) << np.uint64(24))
        )
        word = u | (u << np.uint64(32))
        pattern[0] = word
        pattern[1] = word
        pattern[2] = word
        return
    u = (
        np.uint64(row[j])
        | (np.uint64(row[j + 1]) << np.uint64(8))
        | (np.uint64(row[j + 2]) << np.uint64(16))
    )
    pattern[0] = u | (u << np.uint64(24)) | (u << np.uint64(48))
    pattern[1] = (
        (u >> np.uint64(16)) | (u << np.uint64(8)) | (u << np.uint64(32)) | (u << np.uint64(56))
    )
    pattern[2] = (u >> np.uint64(8)) | (u << np.uint64(16)) | (u << np.uint64(40))


@njit_unmanaged
def _pixel_of(byte: int, channels: int) -> int:
    """``byte // channels`` for the pixel sizes of instance masks, without a hardware divide
    (tens of cycles, paid twice per run otherwise)."""
    if channels == 4:
        return byte >> 2
    if channels == 3 and byte < 1 << 32:
        return (byte * 0xAAAAAAAB) >> 33
    return byte // channels


#: Words of a row compared in one vectorised loop before single words are looked at.
_BLOCK = 64
#: Every byte of a word, and the colour bytes of a word of RGBA pixels (alpha, bytes 3 and 7,
#: does not end a run).
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_RGBA_COLOUR = np.uint64(0x00FFFFFF00FFFFFF)


@njit_unmanaged
def _row_runs(
    row: np.ndarray, words: np.ndarray, width: int, channels: int, starts: np.ndarray
) -> int:
    """Find the runs of one colour (first three samples) of a row padded with zeros to whole
    8-byte words (``words``): each run's first pixel into ``starts``, then ``width``; returns
    the number of runs.

    A run starts at pixel x where a byte of x differs from the byte ``channels`` before it, so
    each word is compared with the 8 bytes one pixel to its left (an unaligned load): ``_BLOCK``
    words at a time in a loop the compiler vectorises (blocks without a change, most of a mask,
    cost a few cycles), then the words of a block with a change one by one, and only the bytes
    of a word that changed are looked at (``_word_runs``)."""
    count = words.shape[0]
    shift = np.uint64(8 * channels)
    colour = _RGBA_COLOUR if channels == 4 else _ALL
    # left[w - 1] is the word one pixel to the left of word w (w >= 1).
    left = row[8 - channels : 8 - channels + 8 * (count - 1)].view(np.uint64)
    starts[0] = 0
    runs = 1
    # Word 0 against itself one pixel on; its first pixel has nothing to its left.
    change = ((words[0] ^ (words[0] << shift)) & colour) >> shift << shift
    runs = _word_runs(change, 0, width, channels, starts, runs)
    # Word indices are unsigned: numba then drops its negative-index wrap-around, which costs
    # a block its vectorisation and a word ~2x (slices indexed from 0 would do as well, but
    # each costs two reference-count calls).
    one, block, end = np.uint64(1), np.uint64(_BLOCK), np.uint64(count)
    w = one
    while w < end:
        stop = min(w + block, end)
        if stop - w == block:
            change = np.uint64(0)
            for v in range(_BLOCK):
                k = w + np.uint64(v)
                change |= words[k] ^ left[k - one]
            if (change & colour) == 0:
                w = stop
                continue
        while w < stop:
            change = (words[w] ^ left[w - one]) & colour
            if change != 0:
                runs = _word_runs(change, 8 * np.int64(w), width, channels, starts, runs)
            w += one
    starts[runs] = width
    return runs


@njit_unmanaged
def _word_runs(
    change: Any, byte: Any, width: int, channels: int, starts: np.ndarray, runs: int
) -> int:
    """Add to ``starts`` the runs starting in the word at ``byte``, whose bytes that differ from
    the byte one pixel to their left are the non-zero bytes of ``change``; returns the number of
    runs. A pixel across two words is added once; pixels past ``width`` (the padding) never."""
    while change != 0:
        # The lowest changed byte (numba's intrinsic; mypy sees its compile-time signature).
        lowest = trailing_zeros(change) >> 3  # type: ignore[call-arg]
        x = _pixel_of(byte + lowest, channels)
        if x >= width:
            break
        if x != starts[runs - 1]:
            starts[runs] = x
            runs += 1
        following = channels * (x + 1) - byte  # the next pixel's first byte in the word
        if following >= 8:
            break
        change &= _ALL << np.uint64(8 * following)
    return runs


@njit_unmanaged
def _colour_key(row: np.ndarray, j: int) -> Any:
    """The colour of the pixel at byte ``j`` as the accumulator's key, ``r << 16 | g << 8 | b``."""
    return (np.int64(row[j]) << 16) | (np.int64(row[j + 1]) << 8) | np.int64(row[j + 2])


@njit_unmanaged
def _instance_runs(
    row: np.ndarray,
    words: np.ndarray,
    width: int,
    channels: int,
    starts: np.ndarray,
    above_starts: np.ndarray,
    same: bool,
    run_keys: np.ndarray,
) -> int:
    """The runs of one colour of an unfiltered instance-mask row (``channels`` bytes a pixel;
    ``row`` is padded with zeros to whole 8-byte words, ``words`` is it as words): ``starts``
    (width + 1) receives each run's first pixel, then ``width``, and ``run_keys`` (width) each
    run's colour; returns the number of runs. With ``same`` (the row is the row above again)
    they are the runs of the row above, ``above_starts``, laid out the same way."""
    if same:
        runs = 0
        while above_starts[runs] < width:
            starts[runs] = above_starts[runs]
            runs += 1
        starts[runs] = width
    else:
        runs = _row_runs(row, words, width, channels, starts)
    for r in range(runs):
        run_keys[r] = _colour_key(row, starts[r] * channels)
    return runs


@njit_unmanaged
def _add_runs(
    starts: np.ndarray,
    run_keys: np.ndarray,
    runs: int,
    y: int,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
    bounds: np.ndarray,
    count: int,
) -> int:
    """Add a row's runs (``_instance_runs``) to the colour accumulator, which has room for them,
    as ``_add_run`` would each, and its non-black runs to ``bounds`` after its first ``count``
    (neighbouring ones joined); returns the new number of foreground runs.

    ``_slot_of`` and ``_add_to_slot`` are written out here, on the table as one flat array and
    with the run-to-run state in local variables: called per run on the (rows, fields) table,
    they cost ~0.5 ms of a dense 1080p mask's ~2 ms."""
    flat = table.reshape(table.shape[0] * table.shape[1])
    fields = table.shape[1]
    mask = keys.shape[0] - 1
    last_key, last_slot = state[_LAST_KEY], state[_LAST_SLOT]
    background = 0
    last_end = -1  # of the last foreground run of this row
    for r in range(runs):
        key = run_keys[r]
        start = starts[r]
        end = starts[r + 1]
        if key == 0:
            background += end - start
            continue
        if key != last_key:
            slot = _hash_slot(key, mask)
            while keys[slot] != key and keys[slot] != _EMPTY:
                slot = (slot + 1) & mask
            if keys[slot] == _EMPTY:
                keys[slot] = key
                flat[slot * fields + _XMIN] = start
                flat[slot * fields + _XMAX] = end - 1
                flat[slot * fields + _YMIN] = y
                state[_USED] += 1
            last_key, last_slot = key, slot
        base = last_slot * fields
        run = end - start
        flat[base + _COUNT] += run
        if start < flat[base + _XMIN]:
            flat[base + _XMIN] = start
        if end - 1 > flat[base + _XMAX]:
            flat[base + _XMAX] = end - 1
        flat[base + _YMAX] = y  # rows come in order: the first visit set y_min
        flat[base + _SUMX] += (run * (start + end - 1)) >> 1  # always even, never negative
        flat[base + _SUMY] += run * y
        if last_end == start:
            bounds[count - 1, 1] = end
        else:
            bounds[count, 0] = start
            bounds[count, 1] = end
            count += 1
        last_end = end
    state[_BACKGROUND] += background
    state[_LAST_KEY], state[_LAST_SLOT] = last_key, last_slot
    return count


@njit_unmanaged
def _rows_differ(words: np.ndarray, above_words: np.ndarray) -> bool:
    """Whether two padded rows (as 8-byte words) differ: one pass without an early exit, which
    the compiler vectorises."""
    change = np.uint64(0)
    for w in range(words.shape[0]):
        change |= words[w] ^ above_words[w]
    return change != 0


@njit_unmanaged
def _unchanged_scanline(
    r: int, sample_rows: np.ndarray, last_change: int, out_row: np.ndarray
) -> bool:
    """Write rescaled scanline ``r`` as UP zeros (its bytes are zeros already) when its source
    row is the same as the previous scanline's (no row since that one differed from the row
    above it): nothing to sample. False when it has to be sampled."""
    if r == 0 or sample_rows[r - 1] < last_change:
        return False
    out_row[0] = 2  # PNG filter type UP
    return True


@njit_unmanaged
def _sample_runs(
    row: np.ndarray,
    starts: np.ndarray,
    runs: int,
    first_col: np.ndarray,
    sampled: np.ndarray,
    memory: np.ndarray,
    out_row: np.ndarray,
) -> None:
    """The UP-filtered scanline of an RGB row's nearest-neighbour sample, from its runs
    (``_instance_runs``' ``starts``): the bytes ``_sample_row`` writes, without a pass per
    sampled pixel.

    ``first_col[x]`` is the number of sampled columns before pixel x, so a run covers a span of
    them. ``sampled`` (2, 2, columns + 1) holds two scanlines' sampled runs (first columns, then
    the column count; colours), ``memory[1]`` which of the two is the previous scanline's and
    ``memory[2]`` its run count (one black run before the first scanline). The scanline is the
    difference of this row's runs and the previous scanline's, zero where the colours agree,
    so only spans whose colour changed are written pixel by pixel.
    """
    count = first_col[first_col.shape[0] - 1]
    previous = memory[1]
    current = 1 - previous
    above_starts, above_colours = sampled[previous, 0], sampled[previous, 1]
    run_starts, colours = sampled[current, 0], sampled[current, 1]
    n = 0
    for r in range(runs):
        c = first_col[starts[r]]
        if first_col[starts[r + 1]] > c:
            j = starts[r] * 3
            run_starts[n] = c
            colours[n] = _colour_key(row, j)
            n += 1
    run_starts[n] = count
    out_row[0] = 2  # PNG filter type UP; the bytes are zeros already
    a = 0
    b = 0
    c = 0
    while c < count:
        end = min(run_starts[a + 1], above_starts[b + 1])
        colour, above_colour = colours[a], above_colours[b]
        if colour != above_colour:
            red = ((colour >> 16) - (above_colour >> 16)) & 255
            green = ((colour >> 8) - (above_colour >> 8)) & 255
            blue = (colour - above_colour) & 255
            for o in range(1 + 3 * c, 1 + 3 * end, 3):
                out_row[o] = red
                out_row[o + 1] = green
                out_row[o + 2] = blue
        c = end
        if run_starts[a + 1] == end:
            a += 1
        if above_starts[b + 1] == end:
            b += 1
    memory[1] = current
    memory[2] = n


@numba.njit(cache=True, nogil=True)
def instance_strip(
    raw: np.ndarray,
    first_row: int,
    width: int,
    channels: int,
    lines: np.ndarray,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
    bounds: np.ndarray,
    row_ends: np.ndarray,
    sample_rows: np.ndarray,
    sample_cols: np.ndarray,
    first_col: np.ndarray,
    sampled_above: np.ndarray,
    sampled: np.ndarray,
    scaled: np.ndarray,
    progress: np.ndarray,
    starts: np.ndarray,
    memory: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Unfilter a strip of an RGB(A) instance mask and measure it: colours (with black as
    background) and foreground runs (``_instance_runs``, ``_add_runs``), and the rescaled
    scanlines into ``scaled`` (zeros before the first strip: only bytes that are not zeros are
    written).

    ``starts`` (2, width + 1), ``sampled`` and ``memory`` (3) carry from strip to strip: the
    runs of the last two rows (by row parity, as ``lines``), the last row that differed from
    the row above it (``memory[0]``) and the last scanline's sampled runs (``_sample_runs``).
    A row that is the row above again takes its runs (``_instance_runs``), and a rescaled
    scanline whose source rows did not change is zeros.
    RGB rows are sampled from their runs (``first_col``), RGBA ones pixel by pixel
    (``sample_cols``, ``sampled_above``).

    Returns the (possibly grown) ``keys``, ``table``, ``bounds`` and ``ROWS_OK``, or the index
    of the first row with an undefined filter type.
    """
    pattern = np.empty(3, dtype=np.uint64)
    last = np.empty(4, dtype=np.uint8)
    run_keys = np.empty(width, dtype=np.int64)
    # The rows are measured without numba's reference counting (_instance_rows: a strip's rows
    # took ~0.1 ms of a mask's row views alone); it hands back to grow the accumulator or the
    # foreground runs, which allocates.
    resume = np.zeros(2, dtype=np.int64)
    i = 0
    while True:
        i = _instance_rows(
            raw, i, first_row, width, channels, lines, keys, table, state, bounds, row_ends,
            sample_rows, sample_cols, first_col, sampled_above, sampled, scaled, progress,
            starts, memory, run_keys, last, pattern, resume,
        )  # fmt: skip
        if resume[0] == _STRIP_DONE:
            return keys, table, bounds, ROWS_OK
        if resume[0] == _BAD_FILTER:
            return keys, table, bounds, first_row + i
        y = first_row + i  # _GROW: row y's runs are found, its resume[1] runs
        count = row_ends[y - 1] if y > 0 else 0
        bounds = _room_for_row(bounds, count, width)
        while (state[_USED] + resume[1]) * 2 > keys.shape[0]:
            keys, table = _grow(keys, table)
            state[_LAST_KEY] = _EMPTY  # growing moved its slot


#: What ``_instance_rows`` hands back in ``resume[0]``.
_STRIP_DONE, _BAD_FILTER, _GROW = 0, 1, 2


@njit_unmanaged
def _instance_rows(
    raw: np.ndarray,
    first: int,
    first_row: int,
    width: int,
    channels: int,
    lines: np.ndarray,
    keys: np.ndarray,
    table: np.ndarray,
    state: np.ndarray,
    bounds: np.ndarray,
    row_ends: np.ndarray,
    sample_rows: np.ndarray,
    sample_cols: np.ndarray,
    first_col: np.ndarray,
    sampled_above: np.ndarray,
    sampled: np.ndarray,
    scaled: np.ndarray,
    progress: np.ndarray,
    starts: np.ndarray,
    memory: np.ndarray,
    run_keys: np.ndarray,
    last: np.ndarray,
    pattern: np.ndarray,
    resume: np.ndarray,
) -> int:
    """The rows of :func:`instance_strip` from strip row ``first`` on. Returns the strip row it
    stopped at, with ``resume[0]``: ``_STRIP_DONE`` (every row measured), ``_BAD_FILTER`` (that
    row's filter type is undefined) or ``_GROW``: that row's runs are found (``resume[1]`` of
    them) but the accumulator or the foreground runs need room for them first; called again
    with ``resume`` as it was, the row goes on from there."""
    length = width * channels
    stride = 1 + length
    words_of = lines.view(np.uint64)  # the row buffers as 8-byte words
    for i in range(first, raw.shape[0] // stride):
        y = first_row + i
        row = lines[y & 1]
        words = words_of[y & 1]
        row_starts = starts[y & 1]
        if resume[0] == _GROW:  # the row's runs were found before growing
            runs = resume[1]
        else:
            if not _unfilter(raw, i * stride, stride, channels, lines[(y + 1) & 1], row, last,
                             pattern):  # fmt: skip
                resume[0] = _BAD_FILTER
                return i
            same = y > 0 and not _rows_differ(words, words_of[(y + 1) & 1])
            if not same:
                memory[0] = y
            runs = _instance_runs(
                row, words, width, channels, row_starts, starts[(y + 1) & 1], same, run_keys
            )
        # Each run is added to the colour accumulator (as _add_run would) and its non-black
        # runs to the foreground runs (as _append_foreground would), in _add_runs. Both grow
        # first (in instance_strip), for as many colours and runs as the row has, never in a
        # loop over runs: the arrays they may replace cost ~30 % of the row there (numba then
        # keeps their references and shapes up to date on every run).
        count = row_ends[y - 1] if y > 0 else 0
        if count + (width + 1) // 2 > bounds.shape[0] or (state[_USED] + runs) * 2 > keys.shape[0]:
            resume[0], resume[1] = _GROW, runs
            return i
        resume[0] = _STRIP_DONE
        row_ends[y] = _add_runs(row_starts, run_keys, runs, y, keys, table, state, bounds, count)
        # RGB rows are sampled from their runs; RGBA ones pixel by pixel (a run is one colour,
        # but its alpha may vary).
        while progress[0] < sample_rows.shape[0] and sample_rows[progress[0]] == y:
            r = progress[0]
            if _unchanged_scanline(r, sample_rows, memory[0], scaled[r]):
                pass  # the previous scanline's pixels again: UP zeros
            elif channels == 3:
                _sample_runs(row, row_starts, runs, first_col, sampled, memory, scaled[r])
            else:
                pixels = row[:length].reshape((width, channels))
                _sample_row(pixels, sample_cols, sampled_above, r == 0, scaled[r])
            progress[0] = r + 1
    resume[0] = _STRIP_DONE
    return raw.shape[0] // stride


@numba.njit(cache=True, nogil=True)
def binary_strip(
    raw: np.ndarray,
    first_row: int,
    width: int,
    channels: int,
    lines: np.ndarray,
    threshold: int,
    bounds: np.ndarray,
    row_ends: np.ndarray,
    foreground: np.ndarray,
    compare: bool,
    counts: np.ndarray,
    sample_rows: np.ndarray,
    sample_cols: np.ndarray,
    first_col: np.ndarray,
    sampled_above: np.ndarray,
    sampled_row: np.ndarray,
    scaled: np.ndarray,
    progress: np.ndarray,
    memory: np.ndarray,
) -> int:
    """Unfilter a strip of an 8-bit binary mask and measure it (``_binary_row``), adding to
    ``counts`` = [anonymised, mismatch], and emit its rescaled scanlines (``memory`` as in
    :func:`instance_strip`; ``sampled_row`` and ``sampled_above``, zeros before the first
    scanline, as in ``_sample_changes``).

    Returns ``ROWS_OK`` or the index of the first row with an undefined filter type.
    """
    length = width * channels
    stride = 1 + length
    pattern = np.empty(3, dtype=np.uint64)
    last = np.empty(4, dtype=np.uint8)
    words_of = lines.view(np.uint64)  # the row buffers as 8-byte words
    for i in range(raw.shape[0] // stride):
        y = first_row + i
        row = lines[y & 1]
        above = lines[(y + 1) & 1]
        if not _unfilter(raw, i * stride, stride, channels, above, row, last, pattern):
            return y
        words = words_of[y & 1]
        if y == 0 or _rows_differ(words, words_of[(y + 1) & 1]):
            memory[0] = y
        samples = row[:length]
        hidden, differ = _binary_row(
            samples, channels, y, threshold, bounds, row_ends, foreground, compare
        )
        counts[0] += hidden
        counts[1] += differ
        while progress[0] < sample_rows.shape[0] and sample_rows[progress[0]] == y:
            r = progress[0]
            if not _unchanged_scanline(r, sample_rows, memory[0], scaled[r]):
                _sample_changes(
                    row, words, sampled_row.view(np.uint64), width, channels, sample_cols,
                    first_col, sampled_above, scaled[r],
                )  # fmt: skip
            progress[0] = r + 1
    return ROWS_OK


@njit_unmanaged
def _sample_changes(
    row: np.ndarray,
    words: np.ndarray,
    sampled_words: np.ndarray,
    width: int,
    channels: int,
    cols: np.ndarray,
    first_col: np.ndarray,
    above: np.ndarray,
    out_row: np.ndarray,
) -> None:
    """The UP-filtered scanline of a row's nearest-neighbour sample, given the source row of the
    previous scanline (``sampled_words``, 8-byte words of a padded row) and that scanline's
    sample (``above``): zeros wherever the source words are unchanged, and only the columns
    (``first_col`` as in ``_sample_runs``) of changed words sampled and differenced. Both are
    updated to this row; zeros before the first scanline."""
    out_row[0] = 2  # PNG filter type UP; the bytes are zeros already
    count = words.shape[0]
    w = 0
    while w < count:
        if words[w] == sampled_words[w]:
            w += 1
            continue
        end = w + 1
        while end < count and words[end] != sampled_words[end]:
            end += 1
        # The pixels overlapping bytes 8w .. 8 end - 1.
        last = min(width, (8 * end - 1) // channels + 1)
        for c in range(first_col[(8 * w) // channels], first_col[last]):
            j = cols[c] * channels
            for k in range(channels):
                o = c * channels + k
                value = row[j + k]
                out_row[1 + o] = value - above[o]  # uint8 wraps mod 256
                above[o] = value
        for k in range(w, end):  # (copying a slice needs numba's runtime)
            sampled_words[k] = words[k]
        w = end
