"""Uniform noise: the paper's second noise control for adversarial training.

Goodfellow, Shlens & Szegedy, ICLR 2015, §6: training on x + η with η ~ U(−ε, ε) per input.
Norm: L∞ (‖η‖∞ ≤ ε). Shapes: `x` any array; the result has its shape and dtype.

Usage::

    x_noisy = uniform_noise(key, x, eps=0.25)
    # as a config: train.adversarial.attack: {name: uniform_noise, eps: 0.25}

Pure: composes with ``jax.jit`` and ``jax.vmap``; it uses no gradient, only `key`.
"""

from __future__ import annotations

from typing import Literal

import jax

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat
from fgsm_repro.attacks.common import check_eps, clip_to


def uniform_noise(key: jax.Array, x: jax.Array, eps, clip: tuple[float, float] | None = None) -> jax.Array:
    """x + η with η ~ U(−ε, ε) per input."""
    check_eps(eps)
    return clip_to(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), clip)


class UniformNoise(AttackSpec):
    """U(−`eps`, `eps`) per input (:func:`uniform_noise`): a control, not an attack on the model."""

    name: Literal["uniform_noise"] = "uniform_noise"
    eps: NonNegativeFloat

    def perturb(self, victim, x, y, key):
        return uniform_noise(key, x, self.eps, self.clip)
