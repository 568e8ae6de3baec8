"""FGSM: the fast gradient sign method.

Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015,
eq. (3):  x̃ = x + ε · sign(∇ₓ J(θ, x, y)).  Norm: L∞ (‖x̃ − x‖∞ ≤ ε).

Shapes: `x` is any array (usually a batch (N, H, W, C)); `y` is whatever `loss_fn` takes as
labels; the result has the shape and dtype of `x`.

`loss_fn(x, y) -> scalar` is the cost to increase, e.g. the summed cross-entropy of a model
with its parameters closed over. Summing rather than averaging keeps per-example gradients
independent of the batch size (the sign is the same either way, but tiny averaged gradients
can underflow to zero).

Usage::

    def loss_fn(x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).sum()

    x_adv = fgsm(loss_fn, x, y, eps=0.25)                      # the paper's setting
    x_adv = fgsm(loss_fn, x, y, eps=0.25, clip=(0.0, 1.0))     # stay in the pixel range
    x_adv = fgsm(loss_fn, x, predict(x), eps=0.25)             # predicted labels (no label leaking)
    x_adv = fgsm(loss_fn, x, target, eps=0.25, targeted=True)  # step toward class `target`

Pure and traceable: composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (the output is
wrapped in ``stop_gradient``, as the paper treats the perturbation as a constant).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from pydantic import field_validator

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat, Target
from fgsm_repro.attacks.common import check_eps, clip_to


def fgsm(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array,
    *,
    targeted: bool = False,
    clip: tuple[float, float] | None = None,
) -> jax.Array:
    """One signed-gradient step of size `eps` that increases `loss_fn(x, y)`.

    Args:
      loss_fn: ``(x, y) -> scalar`` cost of the model under attack.
      x: clean inputs.
      y: labels used by the loss: the true labels (the paper's default), the model's
        predictions, or — with ``targeted=True`` — the target labels.
      eps: L∞ size of the step, ≥ 0.
      targeted: step *down* the loss of `y` (toward the target class) instead of up.
      clip: optional ``(low, high)`` range to clip the result to. None: no clipping, as in
        the paper.

    Returns:
      x̃ with the shape and dtype of `x`.
    """
    check_eps(eps)
    grad = jax.grad(loss_fn)(x, y)
    direction = -1.0 if targeted else 1.0
    x_adv = x + direction * eps * jnp.sign(grad)
    if clip is not None:
        x_adv = jnp.clip(x_adv, clip[0], clip[1])
    return jax.lax.stop_gradient(x_adv.astype(x.dtype))


class FGSM(AttackSpec):
    """The fast gradient sign method (:mod:`fgsm_repro.attacks.fgsm`), L∞ size `eps`; `targeted`:
    the labels given are target classes, and the step lowers their cost (Appendix A's fooling
    images) rather than raising the cost of the true class."""

    name: Literal["fgsm"] = "fgsm"
    eps: NonNegativeFloat
    targeted: bool = False
    target: Target | None = None

    @field_validator("targeted")
    @classmethod
    def _targets_given(cls, v, info):
        if v and info.data.get("labels") == "predicted":
            raise ValueError("a targeted attack steps toward the labels it is given: labels must be 'true'")
        return v

    @field_validator("target")
    @classmethod
    def _one_way_to_target(cls, v, info):
        if v is not None and info.data.get("targeted"):
            raise ValueError("give either targeted: true (the labels are targets) or target, not both")
        return v

    def perturb(self, victim, x, y, key):
        targets = self.targets(victim, x, y, key)
        if targets is not None:
            return fgsm(victim.loss, x, targets, self.eps, targeted=True, clip=self.clip)
        return fgsm(victim.loss, x, y, self.eps, targeted=self.targeted, clip=self.clip)

    def from_gradient(self, x, x_grad):
        if self.targeted or self.target is not None or self.labels != "true":
            return None
        return clip_to(x + self.eps * jnp.sign(x_grad), self.clip)
