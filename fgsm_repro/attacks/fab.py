"""FAB: the fast adaptive boundary attack, minimal L∞ or L2 perturbations toward chosen classes.

Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary attack",
ICML 2020, Algorithm 1; its targeted form (FAB-T) is AutoAttack's third attack. Norm: L∞ or L2
(`norm`): the distance FAB minimises, the projections' and the budget's.

Toward a target class t, each step linearises the boundary between the label y and t at the
current point xᵏ, f(x) ≈ fᵏ + gᵀ(x − xᵏ) with f = z_y − z_t and g = ∇ₓf(xᵏ), and projects onto
that hyperplane inside the box (the clip range) from two points: δᵏ from xᵏ, δ⁰ from the original
x. The step mixes them, biased toward staying close to x::

    α    = min(‖δᵏ‖ / (‖δᵏ‖ + ‖δ⁰‖), α_max)
    xᵏ⁺¹ = box((1 − α)(xᵏ + η δᵏ) + α (x + η δ⁰))          η = 1.05 (past the boundary), α_max = .1

When xᵏ⁺¹ is misclassified it becomes the best example if it is closer to x than the best so far,
and the iterate goes back toward x: xᵏ⁺¹ = (1 − β) x + β xᵏ⁺¹, β = .9. The projection onto a
hyperplane wᵀδ + c = 0 within a box at the least distance has a closed form in both norms: each
coordinate moves toward the plane (the sign of −c·wᵢ) by min(τ, roomᵢ) in L∞, by min(λ|wᵢ|,
roomᵢ) in L2 (roomᵢ: how far the box lets it go that way), with τ or λ the smallest that reaches
the plane. The progress made is piecewise linear in τ (λ), with kinks at the rooms (at
roomᵢ / |wᵢ|), so sorting the kinks finds it; an unreachable plane gets the whole room.

For FAB-T the targets are the most likely other classes of the clean input, `steps` steps each
(as APGD-T's). Given `eps`, an example counts as fooled only when its best example lies within
ε of x; otherwise x is returned (minimal perturbations larger than the budget are not attacks);
and the batch stops — a target's steps, then the targets left — once every example has a point
within ε, as no verdict can change after.

Shapes: `x` is a batch (N, …); the result has the shape and dtype of `x`.

Usage::

    x_adv = fab_t(logits_fn, x, y, eps=0.3, steps=100, target_classes=9, clip=(0., 1.))
    x_adv = fab_t(logits_fn, x, y, eps=1.5, norm=2, steps=100, clip=(0., 1.))        # FAB-T L2

Pure and traceable: composes with ``jax.jit`` and ``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from fgsm_repro.attacks.base import INF, AttackSpec, NonNegativeFloat, PositiveInt, norm_value
from fgsm_repro.attacks.common import batch_norm, check_eps, label_logit
from fgsm_repro.errors import NestedFieldError, ReproError

ETA, BETA, ALPHA_MAX = 1.05, 0.9, 0.1
FAR = 1e10  # the distance of an example with no adversarial point yet
UNBOUNDED = 1e3  # half the box's side without a clip range


def project_linf(point: jax.Array, w: jax.Array, c: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """Per example (rows of flat (N, D) arrays): the δ of least ‖δ‖∞ with wᵀδ + c = 0 and
    low ≤ point + δ ≤ high; where no δ in the box reaches the plane, the one that gets closest."""
    direction = -jnp.sign(c)[:, None] * jnp.sign(w)  # each coordinate's way toward the plane
    room = jnp.where(direction > 0, high - point, point - low)  # how far it may go that way (≥ 0)
    weight = jnp.abs(w) * (direction != 0)
    need = jnp.abs(c)
    # g(τ) = Σ weightᵢ · min(τ, roomᵢ) is piecewise linear in τ; its kinks are the sorted rooms.
    order = jnp.argsort(room, axis=1)
    rooms = jnp.take_along_axis(room, order, axis=1)
    weights = jnp.take_along_axis(weight, order, axis=1)
    reached = jnp.cumsum(weights * rooms, axis=1)  # Σ over coordinates whose room ≤ roomₖ: all of it
    rest = jnp.sum(weights, axis=1, keepdims=True) - jnp.cumsum(weights, axis=1)  # the others: τ each
    at_kink = reached + rest * rooms  # g(roomₖ)
    k = jnp.sum(at_kink < need[:, None], axis=1)  # the first kink at which g reaches the need
    d = room.shape[1]
    below = jnp.where(k > 0, jnp.take_along_axis(reached, jnp.clip(k - 1, 0, d - 1)[:, None], axis=1)[:, 0], 0.0)
    free = jnp.where(k > 0, jnp.take_along_axis(rest, jnp.clip(k - 1, 0, d - 1)[:, None], axis=1)[:, 0],
                     jnp.sum(weights, axis=1))
    tau = jnp.where(k < d, (need - below) / jnp.maximum(free, 1e-12), jnp.inf)
    return direction * jnp.minimum(tau[:, None], room)


def project_l2(point: jax.Array, w: jax.Array, c: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """Per example (rows of flat (N, D) arrays): the δ of least ‖δ‖₂ with wᵀδ + c = 0 and
    low ≤ point + δ ≤ high; where no δ in the box reaches the plane, the one that gets closest.

    The minimiser is δᵢ = −sign(c)·sign(wᵢ)·min(λ|wᵢ|, roomᵢ) for the least λ ≥ 0 that reaches the
    plane (the KKT conditions: −λw clipped to the box); without a box, δ = −c w / ‖w‖₂²."""
    direction = -jnp.sign(c)[:, None] * jnp.sign(w)  # each coordinate's way toward the plane
    room = jnp.where(direction > 0, high - point, point - low)  # how far it may go that way (≥ 0)
    weight = jnp.abs(w) * (direction != 0)
    need = jnp.abs(c)
    # g(λ) = Σ weightᵢ · min(λ weightᵢ, roomᵢ) is piecewise linear in λ, with kinks at roomᵢ / weightᵢ
    # (a zero weight moves nothing: its kink at 0 leaves g as it is).
    kink = jnp.where(weight > 0, room / jnp.where(weight > 0, weight, 1.0), 0.0)
    order = jnp.argsort(kink, axis=1)
    kinks = jnp.take_along_axis(kink, order, axis=1)
    weights = jnp.take_along_axis(weight, order, axis=1)
    rooms = jnp.take_along_axis(room, order, axis=1)
    full = jnp.cumsum(weights * rooms, axis=1)
    reached = jnp.concatenate([jnp.zeros_like(full[:, :1]), full[:, :-1]], axis=1)  # kinks before k: all their room
    free = jnp.cumsum((weights ** 2)[:, ::-1], axis=1)[:, ::-1]  # Σ weight² from k on: still moving with λ
    at_kink = reached + free * kinks  # g(kinkₖ)
    k = jnp.sum(at_kink < need[:, None], axis=1)  # the first kink at which g reaches the need
    d = room.shape[1]
    at = jnp.clip(k, 0, d - 1)[:, None]
    free_k = jnp.take_along_axis(free, at, axis=1)[:, 0]
    lam = (need - jnp.take_along_axis(reached, at, axis=1)[:, 0]) / jnp.where(free_k > 0, free_k, 1.0)
    move = jnp.where((k < d)[:, None], jnp.minimum(lam[:, None] * weight, room), room)
    return direction * move


def fab_toward(logits_fn, x, y, target, *, steps: int, clip: tuple[float, float] | None, eps=None,
               best=None, best_norm=None, norm=math.inf):
    """FAB toward one target class per example: (its closest misclassified example, its L∞ or L2
    (`norm`) distance; FAR and x where none was found). Given `eps`, the batch stops once every
    example has a point within ε (closer ones change no verdict). `best`, `best_norm`: the points
    found so far (another target's), kept where they are closer."""
    if norm not in (math.inf, 2):
        raise ReproError(f"FAB minimises the L-inf or L2 norm, got norm {norm!r}")
    project = project_linf if norm == math.inf else project_l2
    n = x.shape[0]
    flat = x.reshape(n, -1)
    if clip is None:  # no range: a box far wider than any budget (rooms all equal: the closed form stays exact)
        low, high = flat - UNBOUNDED, flat + UNBOUNDED
    else:
        low, high = jnp.full_like(flat, clip[0]), jnp.full_like(flat, clip[1])

    def margin_and_grad(v):
        def f(u):
            z = logits_fn(u)
            return label_logit(z, y) - label_logit(z, target), z

        value, vjp, z = jax.vjp(f, v, has_aux=True)
        return value, vjp(jnp.ones_like(value))[0].reshape(n, -1), jnp.argmax(z, -1) != y

    def step(carry):
        i, point, best, best_norm = carry
        f, g, _ = margin_and_grad(point.reshape(x.shape))
        d_point = project(point, g, f, low, high)
        d_orig = project(flat, g, f + jnp.sum(g * (flat - point), axis=1), low, high)
        n_point, n_orig = batch_norm(d_point, norm)[:, 0], batch_norm(d_orig, norm)[:, 0]
        alpha = jnp.minimum(n_point / jnp.maximum(n_point + n_orig, 1e-12), ALPHA_MAX)[:, None]
        moved = jnp.clip((1 - alpha) * (point + ETA * d_point) + alpha * (flat + ETA * d_orig), low, high)
        fooled = margin_and_grad(moved.reshape(x.shape))[2]
        dist = batch_norm(moved - flat, norm)[:, 0]
        better = fooled & (dist < best_norm)
        best = jnp.where(better[:, None], moved, best)
        best_norm = jnp.where(better, dist, best_norm)
        point = jnp.where(fooled[:, None], (1 - BETA) * flat + BETA * moved, moved)
        return i + 1, point, best, best_norm

    def go_on(carry):
        i, _, _, best_norm = carry
        return (i < steps) & ((best_norm > eps).any() if eps is not None else True)

    if best is None:
        fooled_clean = margin_and_grad(x)[2]
        best, best_norm = x, jnp.where(fooled_clean, 0.0, FAR).astype(x.dtype)
    _, _, best, best_norm = jax.lax.while_loop(go_on, step, (0, flat, best.reshape(n, -1), best_norm))
    return best.reshape(x.shape), best_norm


def fab_t(
    logits_fn: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    eps: float | jax.Array | None = None,
    *,
    steps: int = 100,
    target_classes: int = 9,
    clip: tuple[float, float] | None = (0.0, 1.0),
    norm: float = math.inf,
) -> jax.Array:
    """FAB-T: FAB toward each of the `target_classes` most likely other classes, keeping each
    example's closest misclassified point in the L∞ or L2 (`norm`) distance; with `eps`, x where
    that point is farther than ε."""
    return fab_t_run(logits_fn, x, y, eps, steps=steps, target_classes=target_classes, clip=clip, norm=norm)[0]


def fab_t_run(logits_fn, x, y, eps, *, steps, target_classes, clip, norm=math.inf):
    """:func:`fab_t`'s (x̃, fooled within ε (N,) bool, L∞ or L2 distance of the closest point (N,))."""
    if eps is not None:
        check_eps(eps)
    logits = jax.lax.stop_gradient(logits_fn(x))
    ranked = jnp.argsort(-logits, axis=-1)
    classes = ranked.shape[-1]
    if classes < 2 or not 1 <= target_classes <= classes - 1:
        raise ReproError(f"FAB-T needs 1..{classes - 1} target classes; got {target_classes}")

    def toward(t, kept):  # the t-th most likely class; a batch already within ε skips it
        best, best_norm = kept
        return fab_toward(logits_fn, x, y, jnp.take(ranked, t, axis=-1), steps=steps, clip=clip, eps=eps,
                          best=best, best_norm=best_norm, norm=norm)

    wrong = jnp.argmax(logits, axis=-1) != y  # misclassified as it is: distance 0
    best, best_norm = jax.lax.fori_loop(1, target_classes + 1, toward, (x, jnp.where(wrong, 0.0, FAR).astype(x.dtype)))
    within = best_norm < FAR if eps is None else best_norm <= eps
    x_adv = jnp.where(within.reshape((-1,) + (1,) * (x.ndim - 1)), best, x)
    return jax.lax.stop_gradient(x_adv.astype(x.dtype)), within, best_norm


class FABT(AttackSpec):
    """FAB-T (:mod:`fgsm_repro.attacks.fab`): minimal L∞ or L2 (`norm`) perturbations toward each
    of the `target_classes` most likely other classes, `steps` steps each; an example is attacked
    when its smallest lies within `eps` (AutoAttack's use). The clip range is its box (None: ±1000
    around x)."""

    name: Literal["fab"] = "fab"
    eps: NonNegativeFloat
    norm: Literal[2, "inf"] = INF
    steps: PositiveInt = 100
    target_classes: PositiveInt = 9

    def check_classes(self, num_classes: int | None) -> None:
        if num_classes is not None and self.target_classes > num_classes - 1:
            raise NestedFieldError(("target_classes",), f"FAB-T has at most {num_classes - 1} targets; the model "
                                   f"has {num_classes} classes")

    def perturb(self, victim, x, y, key):
        del key  # deterministic: one start from x (AutoAttack's standard FAB-T)
        return fab_t(victim.logits, x, y, self.eps, steps=self.steps, target_classes=self.target_classes,
                     clip=self.clip, norm=norm_value(self.norm))

