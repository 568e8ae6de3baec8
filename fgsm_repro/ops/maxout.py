"""Maxout: the max over contiguous groups of pieces, with the gradient rule of the original recipe."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def maxout_reference(z: jax.Array, pieces: int) -> jax.Array:
    """Max over contiguous groups of `pieces` along the last axis: (…, units·pieces) → (…, units)."""
    return z.reshape(*z.shape[:-1], z.shape[-1] // pieces, pieces).max(axis=-1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def maxout(z: jax.Array, pieces: int) -> jax.Array:
    """:func:`maxout_reference`, with the gradient written as a select of the winning pieces.

    That is how the recipe's Theano graph (a chain of pairwise ``T.maximum``) differentiates it: a
    unit's gradient goes to every piece equal to its max. Without ties (almost surely, with
    real-valued weights) it is the reference's gradient; JAX's own ``max`` rule splits it among
    tied pieces, which needs a count per unit, a reduction XLA's CPU backend ran slowly.
    """
    return maxout_reference(z, pieces)


@maxout.defjvp
def _maxout_jvp(pieces, primals, tangents):
    (z,), (dz,) = primals, tangents
    h = maxout(z, pieces)
    winners = z.reshape(*h.shape, pieces) == h[..., None]
    return h, jnp.where(winners, dz.reshape(winners.shape), 0.0).sum(axis=-1)
