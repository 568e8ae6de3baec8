"""FGM: the fast gradient method with an L2 or L1 normalised gradient (the "fast gradient value"
method, FGVM).

Goodfellow, Shlens & Szegedy, ICLR 2015, take the sign of the gradient, the steepest ascent
of the L∞ ball (:func:`fgsm_repro.attacks.fgsm.fgsm`). Normalising the gradient by another norm
instead gives the L2 and L1 variants used since (Miyato et al. 2016; Rozsa, Rudd & Boult,
"Adversarial Diversity and Hard Positive Generation", CVPRW 2016; cleverhans' and foolbox's
``FastGradientMethod``):

    x̃ = x + ε · ∇ₓJ / ‖∇ₓJ‖ₚ   (per example; p = 2 or 1),   so ‖x̃ − x‖ₚ = ε.

Norm: Lₚ. Shapes: `x` is a batch (N, …) — the norm is taken per example over all axes but the
first; the result has the shape and dtype of `x`. A zero gradient leaves its example unchanged.
With ``norm=inf`` this is FGSM.

Usage::

    x_adv = fgm(loss_fn, x, y, eps=3.0)                          # L2, ‖x̃ − x‖₂ = 3
    x_adv = fgm(loss_fn, x, y, eps=3.0, clip=(0.0, 1.0))         # and stay in the pixel range
    x_adv = fgm(loss_fn, x, y, eps=20.0, norm=1)                 # L1
    x_adv = fgm(loss_fn, x, target, eps=3.0, targeted=True)      # step toward class `target`

Pure and traceable: composes with ``jax.jit``, ``jax.vmap`` (over batches) and ``jax.grad``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat, Target
from fgsm_repro.attacks.common import check_eps, clip_to, normalized


def fgm(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array,
    *,
    norm: float = 2,
    targeted: bool = False,
    clip: tuple[float, float] | None = None,
) -> jax.Array:
    """One step of Lₚ size `eps` along the normalised gradient of `loss_fn(x, y)`.

    Args:
      loss_fn: ``(x, y) -> scalar`` summed cost of the model under attack.
      x: clean inputs, a batch (N, …).
      y: labels for the loss (true, predicted, or targets with ``targeted=True``).
      eps: Lₚ size of the step, ≥ 0.
      norm: 2, 1 or ``math.inf`` (FGSM).
      targeted: step down the cost of `y` (toward the target) instead of up.
      clip: optional ``(low, high)`` range of the result.
    """
    check_eps(eps)
    direction = -1.0 if targeted else 1.0
    x_adv = x + direction * eps * normalized(jax.grad(loss_fn)(x, y), norm)
    return jax.lax.stop_gradient(clip_to(x_adv, clip).astype(x.dtype))


class FGM(AttackSpec):
    """The fast gradient method (:mod:`fgsm_repro.attacks.fgm`): one step of Lₚ size `eps` along
    the gradient normalised by its L2 or L1 norm (FGSM is the L∞ case)."""

    name: Literal["fgm"] = "fgm"
    eps: NonNegativeFloat
    norm: Literal[1, 2] = 2
    target: Target | None = None

    def perturb(self, victim, x, y, key):
        targets = self.targets(victim, x, y, key)
        return fgm(victim.loss, x, y if targets is None else targets, self.eps, norm=self.norm,
                   targeted=targets is not None, clip=self.clip)
