"""Output layers' costs: the loss J, the predicted label and its confidence, per example.

- ``softmax``: multiclass logits (N, K), integer labels 0..K-1, J = cross-entropy.
- ``logistic``: one logit f (N,), labels y ∈ {−1, +1}, J = ζ(−y·f) with ζ the softplus, as in
  the paper's §5 (logistic regression, Fig. 2). Confidence = σ(|f|), the probability of the
  predicted label.
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

OBJECTIVES = {"softmax": SOFTMAX, "logistic": LOGISTIC}
