"""APGD: auto-PGD, PGD with a step size that adapts itself, momentum and restarts.

Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020, Algorithm 1 (the first attack of AutoAttack). Norm: L∞
(‖x̃ − x‖∞ ≤ ε) or L2 (‖x̃ − x‖₂ ≤ ε).

From a random point x⁰ on the ball's surface, with step η = 2ε and momentum α = .75::

    z   = P(xᵏ + η · d(∇f(xᵏ)))                            d = sign (L∞) or g / ‖g‖₂ (L2)
    xᵏ⁺¹ = P(xᵏ + α (z − xᵏ) + (1 − α)(xᵏ − xᵏ⁻¹))          (the first step: α = 1)

P projects on the ball, then on the clip range. At the checkpoints w₁ = ⌊.22 N⌋, then windows
shrinking by ⌊.03 N⌋ down to ⌊.06 N⌋ (N = `steps`), an example's step is halved and it goes back
to its best point when the cost rose in at most ρ = 75% of the window's steps, or when its step
was not halved at the last checkpoint and its best cost has not grown since. Each example keeps
the last iterate that fooled the model (else its highest-cost one); with `restarts`, an
adversarial start before any higher cost.

The cost f is the model's own per-example cost (``loss="ce"``: cross-entropy for softmax
outputs) or the difference of logits ratio (``loss="dlr"``), invariant to a shift and a scale
of the logits::

    DLR(z, y) = −(z_y − max_{i≠y} z_i) / (z_π₁ − z_π₃)          (π: the logits sorted, descending)

Where the reference implementation (``autoattack``, ``torchattacks.APGD``) differs from the
paper, this module follows the paper: the first window's count of rising costs starts from the
cost at x⁰ (the reference compares its first cost with a zero).

Shapes: `x` is a batch (N, …); `y` has one label per example; the result has the shape and dtype
of `x`.

Usage::

    x_adv = apgd(logits_fn, x, y, eps=0.3, steps=100, key=jax.random.PRNGKey(0), clip=(0., 1.))
    x_adv = apgd(logits_fn, x, y, eps=0.3, steps=100, key=key, loss_fn=dlr_loss)   # APGD-DLR
    x_adv = apgd(logits_fn, x, y, eps=2.0, norm=2, steps=100, key=key, restarts=5)

Pure and traceable (``lax.fori_loop`` over steps and restarts): composes with ``jax.jit`` and
``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fgsm_repro.attacks.base import INF, AttackSpec, NonNegativeFloat, PositiveInt, norm_value
from fgsm_repro.attacks.common import batch_norm, check_eps, clip_to, keep_stronger, normalized, project, restart_key
from fgsm_repro.errors import ReproError

RHO = 0.75  # the share of rising costs in a window below which the step is halved
MOMENTUM = 0.75
FIRST_WINDOW, WINDOW_DECREASE, SMALLEST_WINDOW = 0.22, 0.03, 0.06  # as shares of the steps
DLR_DENOMINATOR_FLOOR = 1e-12


def _sorted_logits(logits: jax.Array) -> jax.Array:
    return -jnp.sort(-logits, axis=-1)  # descending


def dlr_loss(logits: jax.Array, y: jax.Array) -> jax.Array:
    """(N,) difference of logits ratio of the labels `y` (≥ 3 classes): −(z_y − max_{i≠y} z_i) /
    (z_π₁ − z_π₃); positive once the example is misclassified."""
    top = _sorted_logits(logits)
    z_y = jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), -1)[:, 0]
    other = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits).max(-1)
    return -(z_y - other) / (top[:, 0] - top[:, 2] + DLR_DENOMINATOR_FLOOR)


def targeted_dlr_loss(logits: jax.Array, y: jax.Array, target: jax.Array) -> jax.Array:
    """(N,) targeted DLR (≥ 4 classes): −(z_y − z_t) / (z_π₁ − (z_π₃ + z_π₄) / 2), growing as the
    target's logit overtakes the label's."""
    top = _sorted_logits(logits)
    z_y = jnp.take_along_axis(logits, y[:, None].astype(jnp.int32), -1)[:, 0]
    z_t = jnp.take_along_axis(logits, target[:, None].astype(jnp.int32), -1)[:, 0]
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + DLR_DENOMINATOR_FLOOR)


def checkpoints(steps: int) -> list[tuple[int, int]]:
    """(step index, window length) of each checkpoint of an APGD run of `steps` steps: the first
    window ⌊.22 N⌋ steps, each next one ⌊.03 N⌋ shorter, down to ⌊.06 N⌋ (each at least 1)."""
    window = max(int(FIRST_WINDOW * steps), 1)
    decrease, smallest = max(int(WINDOW_DECREASE * steps), 1), max(int(SMALLEST_WINDOW * steps), 1)
    out, at = [], window - 1
    while at < steps:
        out.append((at, window))
        window = max(window - decrease, smallest)
        at += window
    return out


def surface_start(key: jax.Array, x: jax.Array, eps, norm) -> jax.Array:
    """A random point at distance `eps` from each example (L∞: a uniform direction scaled to
    ‖·‖∞ = ε; L2: a Gaussian one scaled to ‖·‖₂ = ε), the reference's start."""
    if norm == math.inf:
        t = jax.random.uniform(key, x.shape, x.dtype, -1.0, 1.0)
    else:
        t = jax.random.normal(key, x.shape, x.dtype)
    return x + eps * t / jnp.maximum(batch_norm(t, norm), 1e-12)


def cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def apgd(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array,
    *,
    steps: int = 100,
    norm: float = math.inf,
    loss_fn: Callable[[jax.Array, jax.Array], jax.Array] = cross_entropy,
    predict_fn: Callable[[jax.Array], jax.Array] | None = None,
    key: jax.Array | None = None,
    restarts: int = 1,
    clip: tuple[float, float] | None = None,
) -> jax.Array:
    """APGD on ``loss_fn(logits_fn(x̃), y) -> (N,)`` (the cost to raise); an example is fooled
    when ``predict_fn(logits) != y`` (default: the largest logit). Starts at a random point of the
    ball's surface given a `key` (at `x` without one); `restarts` > 1 needs a `key`."""
    return apgd_run(logits_fn, x, y, eps, steps=steps, norm=norm, loss_fn=loss_fn,
                    predict_fn=predict_fn or argmax_labels, key=key, restarts=restarts, clip=clip)[0]


def argmax_labels(logits: jax.Array) -> jax.Array:
    return jnp.argmax(logits, axis=-1)


def apgd_run(logits_fn, x, y, eps, *, steps=100, norm=math.inf, loss_fn=cross_entropy, predict_fn=argmax_labels,
             key=None, restarts=1, clip=None):
    """:func:`apgd`'s (x̃, fooled (N,) bool, best cost (N,)): what AutoAttack's stages need."""
    check_eps(eps)
    if restarts > 1 and key is None:
        raise ReproError("restarts need random starts: pass a key")
    marks = checkpoints(steps)
    window_at = np.zeros(steps, np.int32)  # the window length ending at each step (0: no checkpoint)
    for at, length in marks:
        window_at[at] = length
    window_at = jnp.asarray(window_at)
    examples = (-1,) + (1,) * (x.ndim - 1)

    def into_ball(v):
        if norm == math.inf:
            return clip_to(jnp.clip(v, x - eps, x + eps), clip)
        return clip_to(x + project(v - x, eps, norm), clip)

    def cost_and_grad(v):
        def cost(u):
            logits = logits_fn(u)
            return loss_fn(logits, y), logits

        costs, vjp, logits = jax.vjp(cost, v, has_aux=True)
        return costs, vjp(jnp.ones_like(costs))[0], predict_fn(logits) != y

    def run(start):
        loss, grad, fooled = cost_and_grad(start)
        n = x.shape[0]
        state = dict(x=start, x_old=start, grad=grad, step=jnp.full(n, 2.0 * eps, x.dtype),
                     x_best=start, loss_best=loss, grad_best=grad, x_adv=start, fooled=fooled,
                     loss_prev=loss, rises=jnp.zeros(n, jnp.int32), reduced_last=jnp.ones(n, bool),
                     loss_best_last=loss)

        def step(i, s):
            a = jnp.where(i > 0, MOMENTUM, 1.0)
            z = into_ball(s["x"] + s["step"].reshape(examples) * normalized(s["grad"], norm))
            moved = into_ball(s["x"] + a * (z - s["x"]) + (1 - a) * (s["x"] - s["x_old"]))
            loss, grad, fooled_now = cost_and_grad(moved)
            x_adv = jnp.where(fooled_now.reshape(examples), moved, s["x_adv"])
            rises = s["rises"] + (loss > s["loss_prev"])
            improved = loss > s["loss_best"]
            x_best = jnp.where(improved.reshape(examples), moved, s["x_best"])
            grad_best = jnp.where(improved.reshape(examples), grad, s["grad_best"])
            loss_best = jnp.where(improved, loss, s["loss_best"])
            window = window_at[i]
            check = window > 0
            oscillating = rises <= window * RHO
            stalled = ~s["reduced_last"] & (s["loss_best_last"] >= loss_best)
            reduce = check & (oscillating | stalled)
            back = reduce.reshape(examples)
            return dict(x=jnp.where(back, x_best, moved), x_old=s["x"], grad=jnp.where(back, grad_best, grad),
                        step=jnp.where(reduce, s["step"] / 2, s["step"]), x_best=x_best, loss_best=loss_best,
                        grad_best=grad_best, x_adv=x_adv, fooled=s["fooled"] | fooled_now, loss_prev=loss,
                        rises=jnp.where(check, 0, rises), reduced_last=jnp.where(check, reduce, s["reduced_last"]),
                        loss_best_last=jnp.where(check, loss_best, s["loss_best_last"]))

        s = jax.lax.fori_loop(0, steps, step, state)
        return jnp.where(s["fooled"].reshape(examples), s["x_adv"], s["x_best"]), s["fooled"], s["loss_best"]

    def attempt(r):
        if key is None:
            return run(x)
        return run(into_ball(surface_start(restart_key(key, r), x, eps, norm)))

    best = attempt(0)
    if restarts > 1:
        best = jax.lax.fori_loop(1, restarts, lambda r, kept: keep_stronger(kept, attempt(r)), best)
    x_adv, fooled, loss = best
    return jax.lax.stop_gradient(x_adv.astype(x.dtype)), fooled, loss


class APGD(AttackSpec):
    """APGD (:mod:`fgsm_repro.attacks.apgd`): `steps` steps with an adaptive step size and
    momentum in the L∞ or L2 (`norm`) ball of radius `eps`, on the model's own cost (``loss:
    ce``, AutoAttack's APGD-CE) or the DLR loss (``loss: dlr``), from `restarts` random starts."""

    name: Literal["apgd"] = "apgd"
    eps: NonNegativeFloat
    norm: Literal[2, "inf"] = INF
    steps: PositiveInt = 100
    restarts: PositiveInt = 1
    loss: Literal["ce", "dlr"] = "ce"

    def perturb(self, victim, x, y, key):
        cost, label = victim.read()
        return apgd(victim.logits, x, y, self.eps, steps=self.steps, norm=norm_value(self.norm),
                    loss_fn=dlr_loss if self.loss == "dlr" else cost, predict_fn=label, key=key,
                    restarts=self.restarts, clip=self.clip)
