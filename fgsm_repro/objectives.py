"""Output layers' costs: the loss J, the predicted label and its confidence, per example.

- ``softmax``: multiclass logits (N, K), integer labels 0..K-1, J = cross-entropy.
- ``logistic``: one logit f (N,), labels y ∈ {−1, +1}, J = ζ(−y·f) with ζ the softplus, as in
  the paper's §5 (logistic regression, Fig. 2). Confidence = σ(|f|), the probability of the
  predicted label.
- ``sigmoid``: K independent outputs p_k = σ(z_k), one per class (Appendix A's maxout with
  sigmoid outputs); J = Σ_k of the binary cross-entropy of p_k against "the label is k".
- ``rbf``: K independent outputs p_k = exp(z_k), z_k ≤ 0 (§7's RBF units, whose z_k is minus a
  squared distance); J as for ``sigmoid``.

The independent outputs can all be low: such a model can say "no class" (Appendix A's rubbish),
where softmax probabilities always sum to one. Their prediction is the most probable class and
their confidence its probability.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax


class Objective(NamedTuple):
    loss: Callable[[jax.Array, jax.Array], jax.Array]  # (logits, labels) -> (N,)
    predict: Callable[[jax.Array], jax.Array]  # logits -> labels
    confidence: Callable[[jax.Array], jax.Array]  # logits -> prob. of the predicted label
    binary: bool = False  # labels in {-1, +1} rather than 0..K-1
    # logits -> (N, K) probability of each class (each row sums to 1 for softmax outputs)
    probabilities: Callable[[jax.Array], jax.Array] | None = None


SOFTMAX = Objective(
    loss=optax.softmax_cross_entropy_with_integer_labels,
    predict=lambda logits: jnp.argmax(logits, axis=-1),
    confidence=lambda logits: jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1),
    probabilities=lambda logits: jax.nn.softmax(logits, axis=-1),
)

LOGISTIC = Objective(
    loss=lambda f, y: jax.nn.softplus(-y * f),
    predict=lambda f: jnp.where(f >= 0, 1, -1),
    confidence=lambda f: jax.nn.sigmoid(jnp.abs(f)),
    binary=True,
    probabilities=lambda f: jnp.stack([jax.nn.sigmoid(-f), jax.nn.sigmoid(f)], axis=-1),  # (p(-1), p(+1))
)



def _independent(log_p: Callable, log_not_p: Callable) -> Objective:
    """K independent Bernoulli outputs, read from the logits through log p_k and log(1 − p_k)."""

    def loss(logits, labels):
        present = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
        return -(present * log_p(logits) + (1 - present) * log_not_p(logits)).sum(-1)

    return Objective(
        loss=loss,
        predict=lambda logits: jnp.argmax(logits, axis=-1),
        confidence=lambda logits: jnp.max(jnp.exp(log_p(logits)), axis=-1),
        probabilities=lambda logits: jnp.exp(log_p(logits)),
    )


NEAR_CERTAIN = 1e-6  # |z| below which log(1 − e^z) is continued by its tangent


def _log_one_minus_exp(z):
    """log(1 − e^z) for z ≤ 0, which is −∞ at 0 (an output certain of a class). Within
    NEAR_CERTAIN of 0 it is continued by its tangent at −NEAR_CERTAIN (slope ≈ −1/NEAR_CERTAIN),
    so that the cost stays finite and its gradient keeps pushing such an output down."""
    d = NEAR_CERTAIN
    exact = jnp.log(-jnp.expm1(jnp.minimum(z, -d)))
    tangent = jnp.log(-jnp.expm1(-d)) - (z + d) * jnp.exp(-d) / -jnp.expm1(-d)
    return jnp.where(z < -d, exact, tangent)


SIGMOID = _independent(jax.nn.log_sigmoid, lambda z: jax.nn.log_sigmoid(-z))
RBF = _independent(lambda z: z, _log_one_minus_exp)

OBJECTIVES = {"softmax": SOFTMAX, "logistic": LOGISTIC, "sigmoid": SIGMOID, "rbf": RBF}
