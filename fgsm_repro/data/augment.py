"""Data augmentation inside the jitted training step, on the device, from a key: the CIFAR-10
recipe's random translations (crops of the zero-padded image) and horizontal reflections."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def random_crop_flip(key: jax.Array, x: jax.Array, pad: int, flip: bool = True) -> jax.Array:
    """Each image of the batch `x` (N, H, W, C) replaced by the H × W window at a random offset of
    its copy zero-padded by `pad` on every side (a shift by up to `pad` pixels each way) and, with
    `flip`, mirrored left to right with probability 1/2. The same key gives the same batch."""
    n, h, w, c = x.shape
    crop_key, flip_key = jax.random.split(key)
    if pad:
        offsets = jax.random.randint(crop_key, (n, 2), 0, 2 * pad + 1)
        padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        x = jax.vmap(lambda image, o: lax.dynamic_slice(image, (o[0], o[1], 0), (h, w, c)))(padded, offsets)
    if flip:
        mirrored = jax.random.bernoulli(flip_key, 0.5, (n,))
        x = jnp.where(mirrored[:, None, None, None], x[:, :, ::-1, :], x)
    return x
