"""Dropout masks written so that XLA's CPU fusion draws each mask once."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def dropout_scale_reference(key: jax.Array, keep: float, shape: tuple[int, ...], scale: float) -> jax.Array:
    """A dropout mask as float32 factors: `scale` with probability `keep`, else 0."""
    kept = jax.random.bernoulli(key, keep, shape)
    return jnp.where(kept, jnp.float32(scale), jnp.float32(0.0))


def dropout_scale(key: jax.Array, keep: float, shape: tuple[int, ...], scale: float) -> jax.Array:
    """:func:`dropout_scale_reference`, written as sqrt(scale² or 0).

    XLA's CPU fusion recomputes a cheap elementwise producer inside each of its consumers, even one
    that reads every element several times: the maxout gradient reads a unit's mask once per piece,
    so its random bits were drawn once per piece. XLA does not duplicate an expensive op such as
    sqrt into such a consumer, so the mask is drawn once and stored. The values are the
    reference's bit for bit: sqrt(fl(s·s)) = s exactly in IEEE arithmetic.
    """
    kept = jax.random.bernoulli(key, keep, shape)
    return jnp.sqrt(jnp.where(kept, jnp.float32(scale) ** 2, jnp.float32(0.0)))
