"""Compiled kernels (numba): pure functions of arrays."""

import numba

#: ``numba.njit`` for a kernel that allocates nothing: compiled without numba's reference-counting
#: runtime, so handing it arrays costs no atomic increment and decrement per call. In the inner
#: loops of the chunk scanner those counts took about 60% of the time (seen with perf).
njit_unmanaged = numba.njit(cache=True, nogil=True, _nrt=False)  # type: ignore[call-overload]
