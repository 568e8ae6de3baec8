"""I-FGSM / BIM: the basic iterative method, FGSM repeated in small steps.

Kurakin, Goodfellow & Bengio, "Adversarial examples in the physical world", ICLR 2017 workshop,
§2.2. Norm: L∞ (‖x̃ − x‖∞ ≤ ε), always inside the pixel range:

    x⁰ = x,  xᵗ⁺¹ = Clip_{x,ε}(xᵗ + α · sign ∇ₓ J(θ, xᵗ, y)),

with the paper's step α = 1 (of 255) and min(ε + 4, 1.25 ε) iterations (ε in 0–255 units):
"enough for the adversarial example to reach the edge of the ε max-norm ball". For pixels in
[0, 1] that is α = 1/255 and ⌊min(255 ε + 4, 1.25 · 255 ε)⌋ steps (torchattacks' rule).
Their "iterative least-likely class" method is ``targeted=True`` with
:func:`fgsm_repro.attacks.common.least_likely` targets.

This is PGD (:mod:`fgsm_repro.attacks.pgd`) without its random start; it is an entry of its own
because its step size and number of steps are the paper's rule, not free settings.

Shapes: `x` is a batch (N, …); the result has the shape and dtype of `x`.

Usage::

    x_adv = bim(loss_fn, x, y, eps=0.1)                           # α = 1/255, 29 steps
    x_adv = bim(loss_fn, x, y, eps=0.25, step_size=0.01, steps=40)
    x_ll = bim(loss_fn, x, least_likely(logits(x)), eps=0.1, targeted=True)   # iterative l.l.

Pure and traceable: composes with ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax

from fgsm_repro.attacks.base import AttackSpec, NonNegativeFloat, PositiveFloat, PositiveInt, Target
from fgsm_repro.attacks.common import check_eps
from fgsm_repro.attacks.pgd import pgd

PIXEL_LEVELS = 255.0


def kurakin_steps(eps: float) -> int:
    """The paper's number of iterations, ⌊min(ε + 4, 1.25 ε)⌋ with ε in 0–255 units (at least 1)."""
    check_eps(eps)
    return max(1, int(min(eps * PIXEL_LEVELS + 4, 1.25 * eps * PIXEL_LEVELS)))


def bim(
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float,
    *,
    step_size: float | None = None,
    steps: int | None = None,
    targeted: bool = False,
    clip: tuple[float, float] | None = (0.0, 1.0),
) -> jax.Array:
    """`steps` FGSM steps of `step_size`, clipped to the ε-ball around `x` and to `clip`.

    Defaults are the paper's: ``step_size = 1/255``, ``steps = kurakin_steps(eps)``, pixels
    clipped to [0, 1] (pass ``clip=None`` for unbounded inputs)."""
    step_size = 1.0 / PIXEL_LEVELS if step_size is None else step_size
    steps = kurakin_steps(eps) if steps is None else steps
    return pgd(loss_fn, x, y, eps, step_size=step_size, steps=steps, norm=math.inf, targeted=targeted, clip=clip)


class BIM(AttackSpec):
    """I-FGSM / the basic iterative method (:mod:`fgsm_repro.attacks.bim`) with Kurakin et al.'s
    rule: step 1/255 and ⌊min(255ε + 4, 1.25 · 255ε)⌋ steps unless given, pixels kept in [0, 1]
    unless `clip` says otherwise. `target: least_likely` is their iterative least-likely class."""

    name: Literal["bim"] = "bim"
    clip: tuple[float, float] | None = (0.0, 1.0)
    eps: NonNegativeFloat
    steps: PositiveInt | None = None
    step_size: PositiveFloat | None = None
    target: Target | None = None

    def perturb(self, victim, x, y, key):
        targets = self.targets(victim, x, y, key)
        return bim(victim.loss, x, y if targets is None else targets, self.eps, step_size=self.step_size,
                   steps=self.steps, targeted=targets is not None, clip=self.clip)
