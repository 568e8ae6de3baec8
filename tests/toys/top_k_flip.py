"""A toy attack, written as a user adds one: the function and its config model in one module.

Top-k pixel flip (an L0 attack in the spirit of JSMA, Papernot et al. 2016): the `pixels` inputs
with the largest |∂J/∂x| are set to the end of [0, 1] that increases the loss; nothing else moves.
Its parameter is a count, not an ε. Shapes: x (N, ...) in [0, 1]; the result has x's shape and dtype.
"""

from __future__ import annotations

from typing import Annotated, Literal

import jax
import jax.numpy as jnp
from pydantic import Field

from fgsm_repro.attacks.base import AttackSpec


def top_k_flip(loss_fn, x: jax.Array, y: jax.Array, pixels: int) -> jax.Array:
    """Set the `pixels` inputs of each example with the largest gradient magnitude to 0 or 1."""
    grad = jax.grad(loss_fn)(x, y).reshape(len(x), -1)
    flat = x.reshape(len(x), -1)
    _, chosen = jax.lax.top_k(jnp.abs(grad), pixels)
    extreme = jnp.where(jnp.take_along_axis(grad, chosen, 1) > 0, 1.0, 0.0).astype(x.dtype)
    rows = jnp.arange(len(x))[:, None]
    return jax.lax.stop_gradient(flat.at[rows, chosen].set(extreme).reshape(x.shape))


class TopKFlip(AttackSpec):
    name: Literal["top_k_flip"] = "top_k_flip"
    pixels: Annotated[int, Field(gt=0)]

    def perturb(self, victim, x, y, key):
        return top_k_flip(victim.loss, x, y, self.pixels)
