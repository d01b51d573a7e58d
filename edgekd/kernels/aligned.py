"""Arrays on 64-byte boundaries, for the compiled kernels.

The numba kernels are built with fastmath reassociation, so LLVM may split a loop into an
unaligned head and a vectorised body; where that split falls depends on the address of the
data, and with it the order of float additions. Arrays allocated here always start on a
cache line, so a compiled step gives the same bits whatever the heap looked like.
"""

import numpy as np

ALIGN = 64


def aligned_empty(shape, dtype=np.float32):
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start:start + count * dtype.itemsize].view(dtype).reshape(shape)


def aligned_zeros(shape, dtype=np.float32):
    a = aligned_empty(shape, dtype)
    a[...] = 0
    return a
