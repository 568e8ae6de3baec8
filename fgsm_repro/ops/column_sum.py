"""Sums over the leading axis (one result per column) written as XLA's CPU backend runs them fast.

XLA lowers a reduction over the leading (major) axes of an array — a bias gradient, the squared
column norms of a weight matrix — to a windowed reduction that reads memory slowly, and it
materializes the reduction's elementwise operands first. Here the rows are split into equal
blocks that are added elementwise, a pass XLA fuses with the operands' own arithmetic and runs at
memory speed; only the last block-sized sum is a reduction. Same sums as the references, added in
a different order (float rounding).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

MAX_BLOCKS = 16  # more blocks made the fused pass slower (a larger expression per element)
MIN_BLOCK_ROWS = 32  # smaller blocks too


def column_sum_reference(rows_of: Callable[[int, int], jax.Array], rows: int) -> jax.Array:
    """Σ over rows of the (rows, columns) array whose rows lo:hi are ``rows_of(lo, hi)``."""
    return jnp.sum(rows_of(0, rows), axis=0)


def column_sum(rows_of: Callable[[int, int], jax.Array], rows: int) -> jax.Array:
    """:func:`column_sum_reference`, as elementwise adds of row blocks and one block-sized sum.

    `rows_of` may compute its block from other arrays (e.g. ``(p[lo:hi] + u[lo:hi]) ** 2``): the
    whole array is then never written to memory.
    """
    blocks = 1
    while 2 * blocks <= MAX_BLOCKS and rows % (2 * blocks) == 0 and rows // (2 * blocks) >= MIN_BLOCK_ROWS:
        blocks *= 2
    size = rows // blocks
    parts = [rows_of(k * size, (k + 1) * size) for k in range(blocks)]
    while len(parts) > 1:  # pairwise: a balanced tree of elementwise adds
        parts = [parts[i] + parts[i + 1] for i in range(0, len(parts), 2)]
    return jnp.sum(parts[0], axis=0)


def sum_leading_axes_reference(x: jax.Array) -> jax.Array:
    """One sum per entry of the last axis."""
    return x.sum(axis=tuple(range(x.ndim - 1)))


def sum_leading_axes(x: jax.Array) -> jax.Array:
    """:func:`sum_leading_axes_reference` through :func:`column_sum`."""
    rows = x.reshape(-1, x.shape[-1])
    return column_sum(lambda lo, hi: rows[lo:hi], rows.shape[0])
