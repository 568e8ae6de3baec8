"""PGD / I-FGSM (BIM): iterated signed-gradient steps projected onto the L∞ ball.

Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", ICLR 2017 workshop
(the basic iterative method, I-FGSM: no random start); Madry et al., "Towards Deep Learning
Models Resistant to Adversarial Attacks", ICLR 2018 (PGD: a uniform random start in the ball).
Norm: L∞ (‖x̃ − x‖∞ ≤ ε).

    x⁰ = x (+ U(−ε, ε) with a `key`),  xᵗ⁺¹ = Π_{B∞(x, ε) ∩ clip}(xᵗ + α · sign ∇ₓ J(θ, xᵗ, y)).

Shapes: as :func:`fgsm_repro.attacks.fgsm.fgsm` — the result has the shape and dtype of `x`.

Usage::

    x_adv = pgd(loss_fn, x, y, eps=0.25, step_size=0.0625, steps=10,
                key=jax.random.PRNGKey(0), clip=(0.0, 1.0))          # PGD-10
    x_adv = pgd(loss_fn, x, y, eps=0.25, step_size=0.025, steps=10)  # I-FGSM / BIM

Pure and traceable (a ``lax.fori_loop``): composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from fgsm_repro.attacks.common import check_eps


def pgd(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array,
    *,
    step_size: float | jax.Array,
    steps: int,
    key: jax.Array | None = None,
    targeted: bool = False,
    clip: tuple[float, float] | None = None,
) -> jax.Array:
    """`steps` signed-gradient steps of size `step_size`, each projected back into the ε-ball
    around `x` (and into `clip`, if given). A `key` adds PGD's uniform random start."""
    check_eps(eps)
    check_eps(step_size)
    direction = -1.0 if targeted else 1.0

    def project(x_adv):
        x_adv = jnp.clip(x_adv, x - eps, x + eps)
        return x_adv if clip is None else jnp.clip(x_adv, clip[0], clip[1])

    def step(_, x_adv):
        return project(x_adv + direction * step_size * jnp.sign(jax.grad(loss_fn)(x_adv, y)))

    start = x if key is None else project(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps))
    x_adv = jax.lax.fori_loop(0, steps, step, start)
    return jax.lax.stop_gradient(x_adv.astype(x.dtype))
