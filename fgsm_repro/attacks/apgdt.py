"""APGD-T: targeted APGD on the targeted DLR loss, toward each of the most likely other classes.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, §4 (AutoAttack's second attack). Norm: L∞ or L2.

For t = 2, …, `target_classes` + 1, APGD (:mod:`fgsm_repro.attacks.apgd`) raises

    DLR_t(z, y) = −(z_y − z_t) / (z_π₁ − (z_π₃ + z_π₄) / 2)

toward the t-th most likely class of the clean input (π: the logits sorted, descending). An
example counts as fooled when the model no longer predicts its label (an untargeted success, as
AutoAttack counts it); each example keeps a fooling result of any target, else the highest cost
reached.

Shapes: `x` is a batch (N, …) of a model with at least `target_classes` + 1 ≥ 4 classes; the
result has the shape and dtype of `x`.

Usage::

    x_adv = apgd_t(logits_fn, x, y, eps=0.3, steps=100, key=jax.random.PRNGKey(0), clip=(0., 1.))

Pure and traceable: composes with ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from fgsm_repro.attacks.apgd import apgd_run, targeted_dlr_loss
from fgsm_repro.attacks.base import INF, TARGET_CLASS_STREAM, AttackSpec, NonNegativeFloat, PositiveInt, norm_value
from fgsm_repro.attacks.common import keep_stronger
from fgsm_repro.errors import NestedFieldError, ReproError


def apgd_t(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array,
    *,
    target_classes: int = 9,
    key: jax.Array | None = None,
    **options,
) -> jax.Array:
    """APGD on the targeted DLR loss toward each of the `target_classes` most likely other classes
    of the clean `x` (by its logits); per example the strongest result. `options`: APGD's
    (:func:`~fgsm_repro.attacks.apgd.apgd`: steps, norm, predict_fn, restarts, clip)."""
    return apgd_t_run(logits_fn, x, y, eps, target_classes=target_classes, key=key, **options)[0]


def apgd_t_run(logits_fn, x, y, eps, *, target_classes: int = 9, key=None, **options):
    """:func:`apgd_t`'s (x̃, fooled (N,) bool, best cost (N,))."""
    ranked = jnp.argsort(-jax.lax.stop_gradient(logits_fn(x)), axis=-1)
    classes = ranked.shape[-1]
    if classes < 4 or not 1 <= target_classes <= classes - 1:
        raise ReproError(f"APGD-T needs a model of at least 4 classes and 1..{max(classes - 1, 1)} "
                         f"target classes; got {classes} classes and {target_classes} targets")

    def toward(t):  # the t-th most likely class (t = 1: the top one)
        target = jnp.take(ranked, t, axis=-1)
        key_t = None if key is None else jax.random.fold_in(jax.random.fold_in(key, TARGET_CLASS_STREAM), t)
        return apgd_run(logits_fn, x, y, eps, loss_fn=lambda logits, labels: targeted_dlr_loss(logits, labels, target),
                        key=key_t, **options)

    best = toward(1)
    if target_classes > 1:
        best = jax.lax.fori_loop(2, target_classes + 1, lambda t, kept: keep_stronger(kept, toward(t)), best)
    return best


class APGDT(AttackSpec):
    """APGD-T (:mod:`fgsm_repro.attacks.apgdt`): targeted APGD on the targeted DLR loss toward each
    of the `target_classes` most likely other classes, `steps` steps and `restarts` starts each,
    in the L∞ or L2 (`norm`) ball of radius `eps`."""

    name: Literal["apgdt"] = "apgdt"
    eps: NonNegativeFloat
    norm: Literal[2, "inf"] = INF
    steps: PositiveInt = 100
    restarts: PositiveInt = 1
    target_classes: PositiveInt = 9

    def check_classes(self, num_classes: int | None) -> None:
        if num_classes is not None and (num_classes < 4 or self.target_classes > num_classes - 1):
            raise NestedFieldError(("target_classes",), f"APGD-T needs at least 4 classes and at most "
                                   f"{num_classes - 1} targets; the model has {num_classes} classes")

    def perturb(self, victim, x, y, key):
        _, label = victim.read()
        return apgd_t(victim.logits, x, y, self.eps, steps=self.steps, norm=norm_value(self.norm),
                      target_classes=self.target_classes, predict_fn=label, key=key, restarts=self.restarts,
                      clip=self.clip)
