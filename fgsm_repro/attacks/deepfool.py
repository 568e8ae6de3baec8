"""DeepFool: the smallest step to the nearest decision boundary of the linearised classifier,
repeated until the label flips.

Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep neural
networks", CVPR 2016, Algorithms 2 (multi-class) and §3.3 (Lₚ). Norm: L2 or L∞. A minimal-
perturbation attack: there is no ε; the size of the result is what it measures.

At each step, for the original class k₀ and every other class k, with f′ₖ = fₖ(xᵢ) − f_k₀(xᵢ) and
w′ₖ = ∇fₖ(xᵢ) − ∇f_k₀(xᵢ) (the logits' gradients):

    l = argminₖ |f′ₖ| / ‖w′ₖ‖_q,   rᵢ = |f′ₗ| / ‖w′ₗ‖_q^q · |w′ₗ|^(q−1) ⊙ sign(w′ₗ),

with q the dual norm (L2: q = 2, rᵢ = |f′ₗ| w′ₗ / ‖w′ₗ‖₂²; L∞: q = 1, rᵢ = |f′ₗ| sign(w′ₗ) / ‖w′ₗ‖₁).
The steps add up, r = Σ rᵢ, and xᵢ₊₁ = x + (1 + overshoot) r (then `clip`). Each example stops
the step its prediction leaves k₀, or after `max_iter` steps. As in the authors' code and
foolbox, 1e-4 is added to each step's |f′ₗ| so that a point on the boundary still crosses it.

The whole batch runs in one ``lax.while_loop`` carrying a per-example done mask: finished
examples keep their point while the others go on, and the loop ends when all are done. Each step
computes the Jacobian of the logits with ``jax.jacrev`` (one batched backward pass per class).

Shapes: `x` is a batch (N, …); `y` holds each example's original class k₀ (the true labels, or
the predictions); `logits_fn(x) -> (N, K)`; the result has the shape and dtype of `x`.

Usage::

    x_adv = deepfool(logits_fn, x, y)                                 # L2, overshoot .02, 50 steps
    x_adv = deepfool(logits_fn, x, y, norm=math.inf, clip=(0.0, 1.0))

Pure and traceable: composes with ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat, PositiveInt, norm_value
from fgsm_repro.attacks.common import batch_norm, label_logit

BOUNDARY_MARGIN = 1e-4


def logits_jacobian(logits_fn: Callable[[jax.Array], jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(logits (N, K), their gradients (N, K, …)) — examples are independent, so the Jacobian of the
    batch's summed logits per class is every example's Jacobian at once."""
    def summed(v):
        logits = logits_fn(v)
        return logits.sum(0), logits

    total, pullback, logits = jax.vjp(summed, x, has_aux=True)
    grads = jax.vmap(pullback)(jnp.eye(total.shape[-1], dtype=total.dtype))[0]  # (K, N, …)
    return logits, jnp.moveaxis(grads, 0, 1)


def deepfool(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    *,
    norm: float = 2,
    overshoot: float = 0.02,
    max_iter: int = 50,
    clip: tuple[float, float] | None = None,
) -> jax.Array:
    """DeepFool on a batch: each example moved until its prediction leaves `y` (or `max_iter`).

    Args:
      logits_fn: ``x -> (N, K) logits`` of the model under attack.
      x: clean inputs, a batch (N, …).
      y: each example's original class k₀.
      norm: 2 or ``math.inf``.
      overshoot: the total step is (1 + overshoot) times the linearised minimum.
      max_iter: the most steps any example takes.
      clip: optional ``(low, high)`` range of every iterate.
    """
    if norm not in (2, math.inf):
        raise ValueError(f"DeepFool's norm must be 2 or inf, got {norm!r}")
    y = y.astype(jnp.int32)
    expand = (-1,) + (1,) * (x.ndim - 1)

    def linear_step(x_i):
        logits, grads = logits_jacobian(logits_fn, x_i)
        f = logits - label_logit(logits, y)[:, None]                          # (N, K)
        w = grads - jnp.take_along_axis(grads, y.reshape((-1, 1) + (1,) * (x.ndim - 1)), axis=1)
        flat = w.reshape(w.shape[0], w.shape[1], -1)
        dual = jnp.sqrt(jnp.square(flat).sum(-1)) if norm == 2 else jnp.abs(flat).sum(-1)  # (N, K)
        dist = jnp.abs(f) / (dual + 1e-8)
        dist = jnp.where(jax.nn.one_hot(y, f.shape[-1], dtype=bool), jnp.inf, dist)
        best = jnp.argmin(dist, axis=-1)
        w_l = jnp.take_along_axis(w, best.reshape((-1, 1) + (1,) * (x.ndim - 1)), axis=1)[:, 0]
        size = jnp.take_along_axis(dist, best[:, None], axis=1)[:, 0] + BOUNDARY_MARGIN
        if norm == 2:
            return size.reshape(expand) * w_l / (batch_norm(w_l, 2) + 1e-8), logits
        return size.reshape(expand) * jnp.sign(w_l), logits

    def flipped(logits):
        return jnp.argmax(logits, -1) != y

    def cond(state):
        i, _, _, done = state
        return (i < max_iter) & ~done.all()

    def body(state):
        i, x_i, r_total, done = state
        r_i, logits = linear_step(x_i)
        done = done | flipped(logits)
        r_total = jnp.where(done.reshape(expand), r_total, r_total + r_i)
        moved = x + (1.0 + overshoot) * r_total
        if clip is not None:
            moved = jnp.clip(moved, clip[0], clip[1])
        return i + 1, jnp.where(done.reshape(expand), x_i, moved), r_total, done

    state = (0, x, jnp.zeros_like(x), jnp.zeros(x.shape[0], bool))
    _, x_adv, _, _ = jax.lax.while_loop(cond, body, state)
    return jax.lax.stop_gradient(x_adv.astype(x.dtype))


class DeepFool(AttackSpec):
    """DeepFool (:mod:`fgsm_repro.attacks.deepfool`), L2 or L∞: steps to the nearest linearised
    boundary until the label flips, `overshoot` beyond it, at most `max_iter` steps. A minimal-
    perturbation attack: no ε; its result is read in the perturbation norms."""

    name: Literal["deepfool"] = "deepfool"
    norm: Literal[2, "inf"] = 2
    overshoot: NonNegativeFloat = 0.02
    max_iter: PositiveInt = 50

    def perturb(self, victim, x, y, key):
        return deepfool(victim.logits, x, y, norm=norm_value(self.norm), overshoot=self.overshoot,
                        max_iter=self.max_iter, clip=self.clip)
