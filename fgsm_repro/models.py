"""Model registry: config name -> (Flax module, output objective).

Every model maps a batch of images (N, H, W, C) to logits; the objective says how the
logits are read (see :mod:`fgsm_repro.objectives`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

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


class MaxoutMLP(nn.Module):
    """Permutation-invariant maxout network of the pylearn2 ``mnist_pi`` recipe (§4, §6).

    `layers` maxout layers of `units` units × `pieces` pieces, then a softmax layer. Pieces are
    contiguous: unit k is the max over pre-activations k·pieces … k·pieces + pieces − 1.
    Dropout, with the recipe's quirk: input pixels are kept with probability `input_keep` and
    *not* rescaled; the inputs of the later layers are kept with `hidden_keep` and scaled by
    1/`hidden_keep`. No dropout at test time.
    """

    units: int = 240
    pieces: int = 5
    layers: int = 2
    num_classes: int = 10
    weight_init: str | float = 0.005  # U(−.005, .005)
    input_keep: float = 0.8
    hidden_keep: float = 0.5

    def _hidden_dropout(self, h, train: bool):
        if not train or self.hidden_keep >= 1:
            return h
        keep = jax.random.bernoulli(self.make_rng("dropout"), self.hidden_keep, h.shape)
        return jnp.where(keep, h / self.hidden_keep, 0.0)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = x.reshape(x.shape[0], -1)
        if train and self.input_keep < 1:  # unscaled input dropout (pylearn2 input_scales = 1)
            h = h * jax.random.bernoulli(self.make_rng("dropout"), self.input_keep, h.shape)
        for i in range(self.layers):
            if i:
                h = self._hidden_dropout(h, train)
            z = nn.Dense(self.units * self.pieces, kernel_init=kernel_init(self.weight_init), name=f"maxout{i}")(h)
            h = z.reshape(z.shape[0], self.units, self.pieces).max(axis=-1)
        h = self._hidden_dropout(h, train)
        return nn.Dense(self.num_classes, kernel_init=kernel_init(self.weight_init), name="softmax")(h)


class ModelSpec(NamedTuple):
    module: type[nn.Module]
    objective: Objective


MODELS: dict[str, ModelSpec] = {
    "softmax_regression": ModelSpec(SoftmaxRegression, SOFTMAX),
    "logistic_regression": ModelSpec(LogisticRegression, LOGISTIC),
    "maxout_mlp": ModelSpec(MaxoutMLP, SOFTMAX),
}


def build_model(name: str, options: dict[str, Any]) -> tuple[nn.Module, Objective]:
    spec = MODELS[name]
    try:
        return spec.module(**options), spec.objective
    except TypeError as e:
        raise ReproError(f"model {name}: bad options {options} ({e})") from None
