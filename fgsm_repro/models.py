"""Model registry: config name -> (Flax module, output objective).

Every model maps a batch of images (N, H, W, C) to logits; the objective says how the
logits are read (see :mod:`fgsm_repro.objectives`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from fgsm_repro.errors import ReproError
from fgsm_repro.objectives import LOGISTIC, SOFTMAX, Objective


def kernel_init(init: str | float) -> Callable:
    """'zeros', 'lecun_normal', or a number r for U(−r, r) (the pylearn2 `irange`)."""
    if init == "zeros":
        return nn.initializers.zeros_init()
    if init == "lecun_normal":
        return nn.initializers.lecun_normal()
    try:
        r = float(init)
    except (TypeError, ValueError):
        raise ReproError(f"weight_init must be 'zeros', 'lecun_normal' or a number, got {init!r}") from None

    def uniform(key, shape, dtype=jax.numpy.float32):
        return jax.random.uniform(key, shape, dtype, -r, r)

    return uniform


class SoftmaxRegression(nn.Module):
    """Shallow softmax regression: logits = W·x + b (§4, T1.softmax)."""

    num_classes: int = 10
    weight_init: str | float = "zeros"

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes, kernel_init=kernel_init(self.weight_init))(x.reshape(x.shape[0], -1))


class LogisticRegression(nn.Module):
    """Binary logistic regression: f = wᵀx + b, P(y=+1|x) = σ(f) (§5, Fig. 2)."""

    weight_init: str | float = "zeros"

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(1, kernel_init=kernel_init(self.weight_init))(x.reshape(x.shape[0], -1))[:, 0]


class ModelSpec(NamedTuple):
    module: type[nn.Module]
    objective: Objective


MODELS: dict[str, ModelSpec] = {
    "softmax_regression": ModelSpec(SoftmaxRegression, SOFTMAX),
    "logistic_regression": ModelSpec(LogisticRegression, LOGISTIC),
}


def build_model(name: str, options: dict[str, Any]) -> tuple[nn.Module, Objective]:
    spec = MODELS[name]
    try:
        return spec.module(**options), spec.objective
    except TypeError as e:
        raise ReproError(f"model {name}: bad options {options} ({e})") from None
