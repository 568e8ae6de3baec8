"""JSMA: the Jacobian-based saliency map attack, a targeted L0 attack that changes pixel pairs.

Papernot, McDaniel, Jha, Fredrikson, Celik & Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016, Algorithms 2–3 (the pair-wise saliency map of their
cleverhans implementation). Norm: L0 (at most ⌊γ · n / 2⌋ pairs of the n features change).

Each step computes the forward derivatives of the logits, αₚ = ∂Z_t/∂xₚ for the target t and
βₚ = Σ_{j≠t} ∂Z_j/∂xₚ, and among the pairs (p, q) of distinct features still in the search
domain with α_p + α_q > 0 and β_p + β_q < 0 (the signs reversed when θ < 0) picks the one that
maximises (α_p + α_q) · |β_p + β_q|. Both features move by θ (of the clip range), are clipped,
and leave the domain. An example stops when it is classified as its target, when no pair
qualifies, or after ⌊γ n / 2⌋ steps. The domain starts as the features that can still move
(below the top of the range for θ > 0).

The whole batch runs in one ``lax.while_loop`` with a per-example done mask. The pair scores are
an (N, n, n) array: MNIST's 784 features take 2.5 MB per example, which is why evaluation runs
this attack in smaller batches.

Shapes: `x` is a batch (N, …) inside `clip`; `target` is (N,) classes; `logits_fn(x) -> (N, K)`;
the result has the shape and dtype of `x`.

Usage::

    x_adv = jsma(logits_fn, x, target)                        # θ = 1, γ = 14.5% (the paper's)
    x_adv = jsma(logits_fn, x, target, theta=-1.0, gamma=0.1)  # switch pixels off instead

Pure and traceable: composes with ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal

import jax
import jax.numpy as jnp
from pydantic import Field, field_validator

from fgsm_repro.attacks.base import AttackSpec, Target
from fgsm_repro.attacks.deepfool import logits_jacobian


def max_pairs(features: int, gamma: float) -> int:
    """The number of steps: ⌊γ · n / 2⌋ pairs of features (at least one)."""
    return max(1, math.floor(features * gamma / 2))


def jsma(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    target: jax.Array,
    *,
    theta: float = 1.0,
    gamma: float = 0.145,
    clip: tuple[float, float] = (0.0, 1.0),
) -> jax.Array:
    """JSMA toward `target` on a batch.

    Args:
      logits_fn: ``x -> (N, K) logits`` of the model under attack.
      x: clean inputs, a batch (N, …), inside `clip`.
      target: each example's target class.
      theta: the change of a chosen feature, as a fraction of the clip range (> 0 raises
        features, < 0 lowers them).
      gamma: the largest fraction of the features that may change.
      clip: the range of the features (JSMA needs one: it drives features to its ends).
    """
    if theta == 0 or not 0 < gamma <= 1:
        raise ValueError(f"JSMA needs theta != 0 and 0 < gamma <= 1, got theta={theta}, gamma={gamma}")
    low, high = clip
    n, features = x.shape[0], math.prod(x.shape[1:])
    increase = theta > 0
    target = target.astype(jnp.int32)
    distinct = ~jnp.eye(features, dtype=bool)
    flat_x = x.reshape(n, features)

    def scores(flat, domain):
        logits, grads = logits_jacobian(lambda v: logits_fn(v.reshape(x.shape)), flat)  # (N, K, n)
        alpha_1 = jnp.take_along_axis(grads, target[:, None, None], axis=1)[:, 0]
        beta_1 = grads.sum(1) - alpha_1
        alpha = alpha_1[:, :, None] + alpha_1[:, None, :]
        beta = beta_1[:, :, None] + beta_1[:, None, :]
        signs_right = (alpha > 0) & (beta < 0) if increase else (alpha < 0) & (beta > 0)
        valid = signs_right & distinct & domain[:, :, None] & domain[:, None, :]
        return logits, jnp.where(valid, jnp.abs(alpha) * jnp.abs(beta), -1.0)

    def cond(state):
        i, _, _, done = state
        return (i < max_pairs(features, gamma)) & ~done.all()

    def body(state):
        i, flat, domain, done = state
        logits, score = scores(flat, domain)
        best = jnp.argmax(score.reshape(n, -1), axis=-1)
        stuck = jnp.take_along_axis(score.reshape(n, -1), best[:, None], axis=1)[:, 0] < 0
        done = done | (jnp.argmax(logits, -1) == target) | stuck
        chosen = jax.nn.one_hot(best // features, features, dtype=bool) | jax.nn.one_hot(best % features, features,
                                                                                          dtype=bool)
        chosen = chosen & ~done[:, None]
        moved = jnp.clip(flat + theta * (high - low) * chosen, low, high)
        return i + 1, moved, domain & ~chosen, done

    domain = flat_x < high if increase else flat_x > low
    state = (0, flat_x, domain, jnp.zeros(n, bool))
    _, flat, _, _ = jax.lax.while_loop(cond, body, state)
    return jax.lax.stop_gradient(flat.reshape(x.shape).astype(x.dtype))


PAIR_SCORES_PER_BATCH = 2**26  # JSMA's pair scores held at once, N · n² (256 MB in float32)


class JSMA(AttackSpec):
    """JSMA (:mod:`fgsm_repro.attacks.jsma`): a targeted L0 attack changing pixel pairs by
    `theta` (of the clip range) until the target class wins, at most a fraction `gamma` of the
    pixels. Papernot et al.'s θ = 1 and γ = 14.5%; targets random unless given."""

    name: Literal["jsma"] = "jsma"
    clip: tuple[float, float] = (0.0, 1.0)
    theta: Annotated[float, Field(ge=-1, le=1, allow_inf_nan=False)] = 1.0
    gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.145
    target: Target = "random"

    @field_validator("theta")
    @classmethod
    def _moves(cls, v):
        if v == 0:
            raise ValueError("theta must not be 0")
        return v

    def batch_size(self, features: int) -> int | None:
        return max(1, PAIR_SCORES_PER_BATCH // features**2)  # the (N, n, n) pair scores bound the batch

    def perturb(self, victim, x, y, key):
        return jsma(victim.logits, x, self.targets(victim, x, y, key), theta=self.theta, gamma=self.gamma,
                    clip=self.clip)
