"""Optax pieces for the pylearn2 maxout recipes: classical momentum with the recipe's schedules,
and the max-norm constraint as a gradient transformation.

- Classical momentum (pylearn2 ``MomentumAdjustor``/``SGD``): v ← m·v − lr·g; θ ← θ + v. With a
  learning rate that changes every step this differs from optax's ``sgd(momentum=…)``, which
  scales the accumulated trace by the current rate.
- The learning rate is divided by `decay_factor` after every update (pylearn2
  ``ExponentialDecay``), not below `min_lr`; momentum rises linearly per epoch (pylearn2
  ``MomentumAdjustor(start=1, saturate=N)``).
- Max-norm: after every update each column of every weight matrix (the incoming weights of
  one unit) is rescaled to L2 norm ≤ `limit`. Written as the last transformation of the chain,
  it edits the update so that ``params + update`` satisfies the constraint.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from fgsm_repro.ops.column_sum import column_sum


class MomentumState(NamedTuple):
    count: jax.Array
    velocity: optax.Updates


def classical_momentum(learning_rate: Callable[[jax.Array], jax.Array],
                       momentum: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
    """v ← m(t)·v − lr(t)·g; the update is v. `t` counts updates from 0."""

    def init(params):
        return MomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        lr, m = learning_rate(state.count), momentum(state.count)
        velocity = jax.tree.map(lambda v, g: m * v - lr * g, state.velocity, grads)
        return velocity, MomentumState(state.count + 1, velocity)

    return optax.GradientTransformation(init, update)


def decayed_learning_rate(initial: float, decay_factor: float, min_lr: float) -> Callable:
    """lr(t) = max(initial / decay_factor**t, min_lr).

    Computed as initial·exp(−t·log(decay_factor)) with the log taken in float64: 1.000004 is not
    representable in float32, and its float32 power drifts by ~1% over the recipe's 125k updates.
    """
    log_decay = math.log(decay_factor)
    return lambda count: jnp.maximum(initial * jnp.exp(-count.astype(jnp.float32) * log_decay), min_lr)


def linear_decay(initial: float, to_fraction: float, epochs: int, steps_per_epoch: int) -> Callable:
    """lr in epoch e (1-based): `initial`, falling linearly per epoch to initial·`to_fraction` at
    epoch `epochs`, then constant (pylearn2's ``LinearDecayOverEpoch``)."""
    def schedule(count):
        epoch = count // steps_per_epoch + 1
        frac = jnp.clip((epoch - 1) / max(epochs - 1, 1), 0.0, 1.0)
        return initial * (1.0 - (1.0 - to_fraction) * frac)

    return schedule


def scale_layers(scales: Mapping[str, float]) -> optax.GradientTransformation:
    """Multiply the updates of the layers named in `scales` (top-level parameter collections) by
    their factor; others pass unchanged."""

    def update(updates, state, params=None):
        del params
        return {name: jax.tree.map(functools.partial(jnp.multiply, scales[name]), layer) if name in scales else layer
                for name, layer in updates.items()}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def linear_momentum(initial: float, final: float | None, saturate_epoch: int | None,
                    steps_per_epoch: int) -> Callable:
    """Momentum `initial` in epoch 1, rising linearly to `final` at epoch `saturate_epoch`."""
    if final is None or saturate_epoch is None or saturate_epoch <= 1:
        return lambda count: jnp.asarray(initial if final is None else final, jnp.float32)

    def schedule(count):
        epoch = count // steps_per_epoch + 1
        frac = jnp.clip((epoch - 1) / (saturate_epoch - 1), 0.0, 1.0)
        return initial + (final - initial) * frac

    return schedule


def column_norms(kernel: jax.Array) -> jax.Array:
    """L2 norm of the incoming weights of each output unit (Dense kernels are (in, out))."""
    return jnp.sqrt(jnp.sum(kernel ** 2, axis=tuple(range(kernel.ndim - 1))))


def _column_norms_of_sum(p: jax.Array, u: jax.Array) -> jax.Array:
    """``column_norms(p + u)``, without writing p + u or its square to memory (XLA's CPU backend
    did, and the constraint cost as much as the momentum update; see :mod:`fgsm_repro.ops.column_sum`)."""
    p, u = p.reshape(-1, p.shape[-1]), u.reshape(-1, u.shape[-1])
    return jnp.sqrt(column_sum(lambda lo, hi: (p[lo:hi] + u[lo:hi]) ** 2, p.shape[0]))


def max_norm(limit: float | Mapping[str, float]) -> optax.GradientTransformation:
    """Rescale every weight column of ``params + updates`` to norm ≤ `limit` (biases untouched),
    or, with a mapping, each named layer's (top-level parameter collection) to its own limit."""

    def constrain(u, p, limit):
        if p.ndim < 2 or limit is None:
            return u
        scale = jnp.minimum(1.0, limit / jnp.maximum(_column_norms_of_sum(p, u), 1e-12))
        return (p + u) * scale - p

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("max_norm needs the parameters")
        if not isinstance(limit, Mapping):
            return jax.tree.map(lambda u, p: constrain(u, p, limit), updates, params), state
        return {name: jax.tree.map(functools.partial(constrain, limit=limit.get(name)), layer, params[name])
                for name, layer in updates.items()}, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
