"""Host arrays laid out so that ``jax.device_put`` on the CPU aliases them instead of copying."""

from __future__ import annotations

import numpy as np

HOST_ALIGNMENT = 64  # bytes


def host_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """``np.empty(shape, dtype)`` whose data starts on a 64-byte boundary. ``jax.device_put`` on
    the CPU aliases such an array, or a slice of it that starts on such a boundary, rather than
    copying it; numpy's own large arrays start 16 bytes past one."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + HOST_ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % HOST_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def host_aligned(x: np.ndarray) -> np.ndarray:
    """`x` itself when it is C-contiguous and starts on a 64-byte boundary, else a copy that does
    (:func:`host_empty`)."""
    x = np.asarray(x)
    if x.flags.c_contiguous and x.ctypes.data % HOST_ALIGNMENT == 0:
        return x
    out = host_empty(x.shape, x.dtype)
    out[...] = x
    return out
