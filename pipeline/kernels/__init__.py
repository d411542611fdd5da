"""Compiled kernels (numba): pure functions of arrays."""

import numba

#: ``numba.njit`` for a kernel that allocates nothing: compiled without numba's reference-counting
#: runtime, so handing it arrays costs no atomic increment and decrement per call. In the inner
#: loops of the chunk scanner those counts took about 60% of the time (seen with perf).
njit_unmanaged = numba.njit(cache=True, nogil=True, _nrt=False)  # type: ignore[call-overload]

#: :data:`njit_unmanaged` for a helper of other kernels, which LLVM then always inlines into its
#: callers (``forceinline``). A call between compiled functions that stays a call passes each
#: array as its several fields and returns tuples through memory: the chunk scanner's helpers
#: took a quarter of its time that way (2.70 ms against 1.99 for the real tracks' chunks), the
#: gap finder's about a tenth of the linking kernel's. Inlined by LLVM, not by numba
#: (``inline="always"``, which types each call site again: 53 s to compile the scanner, not 6).
njit_inlined = numba.njit(  # type: ignore[call-overload]
    cache=True, nogil=True, _nrt=False, forceinline=True
)
