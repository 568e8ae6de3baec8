"""Max-pooling of NHWC maps as maxes over blocks, whose gradient is elementwise selects."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax


def max_pool_reference(x: jax.Array, window: int, stride: int) -> jax.Array:
    """``nn.max_pool`` of NHWC maps over window × window, every `stride` pixels (VALID)."""
    return nn.max_pool(x, (window, window), strides=(stride, stride))


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """:func:`max_pool_reference`, computed per axis and, when `window` is a multiple of `stride`,
    as a max over non-overlapping blocks of `stride` followed by a stride-1 max over
    ``window // stride`` neighbouring blocks (a window [s·i, s·i + m·s) is blocks i … i + m − 1).

    Same values; its gradient is elementwise selects, where XLA's CPU backend runs the
    select-and-scatter of ``nn.max_pool`` as a windowed reduction with index tuples and a scatter.
    The gradient goes to the winning input, as ``nn.max_pool``'s does (ties, of probability zero
    with real-valued inputs, are split).
    """
    if window % stride:
        return max_pool_reference(x, window, stride)
    per_window = window // stride  # blocks per window
    for axis in (1, 2):
        blocks = x.shape[axis] // stride
        x = lax.slice_in_dim(x, 0, blocks * stride, axis=axis)
        x = x.reshape(*x.shape[:axis], blocks, stride, *x.shape[axis + 1:])
        x = functools.reduce(jnp.maximum, [lax.index_in_dim(x, d, axis + 1, keepdims=False) for d in range(stride)])
        out = blocks - per_window + 1
        x = functools.reduce(jnp.maximum, [lax.slice_in_dim(x, d, d + out, axis=axis) for d in range(per_window)])
    return x
