"""Carlini–Wagner L2: the smallest L2 perturbation found by optimisation, with a binary search
over the weight of the misclassification term.

Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017, §V
(the L2 attack). Norm: L2; a minimal-perturbation attack (no ε). For each example it minimises

    ‖x̃ − x‖₂² + c · max(Z_y(x̃) − max_{i≠y} Z_i(x̃) + κ, 0)       (untargeted; Z the logits)
    ‖x̃ − x‖₂² + c · max(max_{i≠t} Z_i(x̃) − Z_t(x̃) + κ, 0)       (targeted toward t)

over x̃ = lo + (hi − lo)(tanh w + 1)/2 (the change of variables that keeps x̃ inside the clip
range; without a clip range x̃ = x + w) with Adam for `steps` steps from w(x), then searches c
per example: start at `initial_const`, ×10 until an adversarial example is found, then bisect,
`binary_search_steps` times. The result is each example's smallest successful x̃, or `x` itself
where none was found. As foolbox does, Adam restarts from w(x) at each c, and an example counts
as adversarial when its logit margin passes κ. Unlike the authors' code there is no early abort:
every c runs all `steps` (one fixed-length compiled loop).

Shapes: `x` is a batch (N, …); `y` (N,) labels (targets when ``targeted=True``);
`logits_fn(x) -> (N, K)`; the result has the shape and dtype of `x`.

Usage::

    x_adv = cw_l2(logits_fn, x, y, clip=(0.0, 1.0))                       # 9 × 1000 steps
    x_adv = cw_l2(logits_fn, x, y, clip=(0.0, 1.0), steps=100, binary_search_steps=5)

Pure and traceable (nested ``lax.fori_loop``s): composes with ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import optax

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat, PositiveFloat, PositiveInt, Target
from fgsm_repro.attacks.common import batch_norm, label_logit, other_best

TANH_SHRINK = 0.999999  # keeps atanh finite at the ends of the range, as the authors' code does
NO_UPPER = 1e10


def cw_l2(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    targeted: bool = False,
    confidence: float = 0.0,
    initial_const: float = 1e-3,
    binary_search_steps: int = 9,
    steps: int = 1000,
    learning_rate: float = 0.01,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> jax.Array:
    """C&W L2 on a batch.

    Args:
      logits_fn: ``x -> (N, K) logits`` of the model under attack.
      x: clean inputs, a batch (N, …) (inside `clip`).
      y: true labels, or target classes with ``targeted=True``.
      confidence: κ, the logit margin an example must pass.
      initial_const: the first c of the search.
      binary_search_steps: how many values of c each example tries.
      steps: Adam steps per value of c.
      learning_rate: Adam's step size.
      clip: the box ``(low, high)`` (the tanh change of variables); None: unbounded inputs.
    """
    y = y.astype(jnp.int32)
    expand = (-1,) + (1,) * (x.ndim - 1)
    if clip is None:
        def to_input(w):
            return x + w
        w0 = jnp.zeros_like(x)
    else:
        mid, half = (clip[0] + clip[1]) / 2, (clip[1] - clip[0]) / 2

        def to_input(w):
            return jnp.tanh(w) * half + mid
        w0 = jnp.arctanh(jnp.clip((x - mid) / half, -1, 1) * TANH_SHRINK)
    start = to_input(w0)  # x as the change of variables reproduces it

    def margin(logits):
        """How far each example is from being adversarial (≤ 0: it is, with margin κ)."""
        if targeted:
            return other_best(logits, y) - label_logit(logits, y) + confidence
        return label_logit(logits, y) - other_best(logits, y) + confidence

    def objective(w, const):
        x_adv = to_input(w)
        logits = logits_fn(x_adv)
        dist = jnp.square(x_adv - start).reshape(x.shape[0], -1).sum(-1)
        return (dist + const * jnp.maximum(margin(logits), 0.0)).sum(), (x_adv, logits)

    adam = optax.adam(learning_rate)

    def search_step(_, carry):
        const, lower, upper, best, best_norm = carry

        def adam_step(_, inner):
            w, opt_state, found, best, best_norm = inner
            grad, (x_adv, logits) = jax.grad(objective, has_aux=True)(w, const)
            success = margin(logits) <= 0
            norm = batch_norm(x_adv - x, 2).reshape(-1)
            better = success & (norm < best_norm)
            best = jnp.where(better.reshape(expand), x_adv, best)
            best_norm = jnp.where(better, norm, best_norm)
            updates, opt_state = adam.update(grad, opt_state, w)
            return optax.apply_updates(w, updates), opt_state, found | success, best, best_norm

        inner = (w0, adam.init(w0), jnp.zeros(x.shape[0], bool), best, best_norm)
        _, _, found, best, best_norm = jax.lax.fori_loop(0, steps, adam_step, inner)
        upper = jnp.where(found, jnp.minimum(upper, const), upper)
        lower = jnp.where(found, lower, jnp.maximum(lower, const))
        const = jnp.where(upper < NO_UPPER, (lower + upper) / 2, const * 10)
        return const, lower, upper, best, best_norm

    n = x.shape[0]
    carry = (jnp.full(n, initial_const, x.dtype), jnp.zeros(n, x.dtype), jnp.full(n, NO_UPPER, x.dtype),
             x, jnp.full(n, jnp.inf, x.dtype))
    _, _, _, best, _ = jax.lax.fori_loop(0, binary_search_steps, search_step, carry)
    return jax.lax.stop_gradient(best.astype(x.dtype))


class CarliniWagnerL2(AttackSpec):
    """Carlini–Wagner L2 (:mod:`fgsm_repro.attacks.cw`): Adam on the tanh-reparametrised input,
    `binary_search_steps` values of the constant c from `initial_const`, `steps` each, margin
    `confidence` (κ); untargeted unless `target` is set. Minimal-perturbation: no ε. A clip range
    is the tanh box; ``clip: null`` optimises the perturbation directly."""

    name: Literal["cw"] = "cw"
    clip: tuple[float, float] | None = (0.0, 1.0)
    confidence: NonNegativeFloat = 0.0
    initial_const: PositiveFloat = 1e-3
    binary_search_steps: PositiveInt = 9
    steps: PositiveInt = 1000
    learning_rate: PositiveFloat = 0.01
    target: Target | None = None

    def perturb(self, victim, x, y, key):
        targets = self.targets(victim, x, y, key)
        return cw_l2(victim.logits, x, y if targets is None else targets, targeted=targets is not None,
                     confidence=self.confidence, initial_const=self.initial_const,
                     binary_search_steps=self.binary_search_steps, steps=self.steps,
                     learning_rate=self.learning_rate, clip=self.clip)
