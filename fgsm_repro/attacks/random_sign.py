"""Random sign noise: the paper's first noise control for adversarial training.

Goodfellow, Shlens & Szegedy, ICLR 2015, §6: training on x + η with η = ±ε per input, the sign
drawn at random, does not confer the robustness of the adversarial objective. Norm: L∞
(‖η‖∞ = ε exactly). Shapes: `x` any array; the result has its shape and dtype.

Usage::

    x_noisy = random_sign(key, x, eps=0.25)
    # as a config: train.adversarial.attack: {name: random_sign, eps: 0.25}

Pure: composes with ``jax.jit`` and ``jax.vmap``; it uses no gradient, only `key`.
"""

from __future__ import annotations

from typing import Literal

import jax

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat
from fgsm_repro.attacks.common import check_eps, clip_to


def random_sign(key: jax.Array, x: jax.Array, eps, clip: tuple[float, float] | None = None) -> jax.Array:
    """x + ε·s with s = ±1 per input, uniformly at random."""
    check_eps(eps)
    return clip_to(x + eps * jax.random.rademacher(key, x.shape, x.dtype), clip)


class RandomSign(AttackSpec):
    """±`eps` per input at random (:func:`random_sign`): a control, not an attack on the model."""

    name: Literal["random_sign"] = "random_sign"
    eps: NonNegativeFloat

    def perturb(self, victim, x, y, key):
        return random_sign(key, x, self.eps, self.clip)
