"""Models, found by name: config name -> (Flax module, output objective, options schema).

A config's ``model: {name: maxout_mlp, options: {...}}`` names a built-in model of :data:`MODELS`;
a user's own is ``module:Name``, where ``Name`` is a :class:`ModelSpec` or a Flax module class
(softmax output, options passed as its fields), in a module beside the config, in the current
folder or on ``sys.path`` (:mod:`fgsm_repro.plugins`).

Every model maps a batch of images (N, H, W, C) to logits; the objective says how the
logits are read (see :mod:`fgsm_repro.objectives`). The layers' workarounds for XLA's CPU backend
(maxout's gradient rule, the convolution, pooling, dropout masks) are ops of :mod:`fgsm_repro.ops`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import numpy as np
from pydantic import BaseModel

from fgsm_repro import plugins
from fgsm_repro.config import models as options
from fgsm_repro.errors import ReproError
from fgsm_repro.mpdbm import MPDBM
from fgsm_repro.objectives import LOGISTIC, RBF, SIGMOID, SOFTMAX, Objective
from fgsm_repro.ops.conv import Conv
from fgsm_repro.ops.dropout import dropout_scale
from fgsm_repro.ops.maxout import maxout
from fgsm_repro.ops.pool import max_pool


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
    dot_general: Callable | None = None  # the dense layers' product (see dense)

    @nn.compact
    def __call__(self, x, train: bool = False):
        return dense(self, self.num_classes, self.weight_init)(x.reshape(x.shape[0], -1))


class LogisticRegression(nn.Module):
    """Binary logistic regression: f = wᵀx + b, P(y=+1|x) = σ(f) (§5, Fig. 2)."""

    weight_init: str | float = "zeros"
    dot_general: Callable | None = None  # the dense layers' product (see dense)

    @nn.compact
    def __call__(self, x, train: bool = False):
        return dense(self, 1, self.weight_init)(x.reshape(x.shape[0], -1))[:, 0]


def dense(model: nn.Module, features: int, weight_init: str | float, name: str | None = None) -> nn.Dense:
    """``nn.Dense`` with the model's weight initialization and its ``dot_general`` (None: Flax's;
    the data-parallel training step gives :func:`fgsm_repro.ops.dense.dense_product`)."""
    return nn.Dense(features, kernel_init=kernel_init(weight_init), name=name, dot_general=model.dot_general)


def input_dropout(module: nn.Module, h: jax.Array, keep: float, train: bool) -> jax.Array:
    """The recipe's input dropout: pixels kept with probability `keep` and *not* rescaled
    (pylearn2 ``input_scales`` = 1)."""
    if not train or keep >= 1:
        return h
    return h * dropout_scale(module.make_rng("dropout"), keep, h.shape, 1.0)


def hidden_dropout(module: nn.Module, h: jax.Array, keep: float, train: bool) -> jax.Array:
    """Dropout of a hidden layer's outputs: kept with probability `keep`, scaled by 1/`keep`
    (as h·(1/keep): for the recipes' keep = .5 exactly h/keep; else within an ulp of it)."""
    if not train or keep >= 1:
        return h
    return h * dropout_scale(module.make_rng("dropout"), keep, h.shape, 1.0 / keep)


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
    dot_general: Callable | None = None  # the dense layers' product (see dense)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = input_dropout(self, x.reshape(x.shape[0], -1), self.input_keep, train)
        for i in range(self.layers):
            if i:
                h = hidden_dropout(self, h, self.hidden_keep, train)
            z = dense(self, self.units * self.pieces, self.weight_init, name=f"maxout{i}")(h)
            h = maxout(z, self.pieces)
        h = hidden_dropout(self, h, self.hidden_keep, train)
        return dense(self, self.num_classes, self.weight_init, name="softmax")(h)


class ConvMaxout(nn.Module):
    """Convolutional maxout network with the layers of the pylearn2 CIFAR-10 recipe (§4,
    T1.convmaxout; ``scripts/papers/maxout/cifar10.yaml``), on NHWC images.

    Three conv maxout layers (`channels` × `pieces` filters of `kernels`, zero padding `pads`,
    max over contiguous groups of `pieces` channels, then a VALID max-pool `pools` = (window,
    stride)), a maxout layer of `units` × `unit_pieces`, and a softmax layer; dropout as in
    :class:`MaxoutMLP`. Pooling at the borders follows XLA/PyTorch (whole windows only), not
    cuda-convnet's partial windows, so the maps are 33→15, 14→6, 8→4 on 32×32 input.
    """

    convolutional: ClassVar[bool] = True  # its programs compile without YNNPACK: fgsm_repro.cpu_tuning
    channels: tuple[int, ...] = (96, 192, 192)
    pieces: int = 2
    kernels: tuple[int, ...] = (8, 8, 5)
    pads: tuple[int, ...] = (4, 3, 3)
    pools: tuple[tuple[int, int], ...] = ((4, 2), (4, 2), (2, 2))
    units: int = 500
    unit_pieces: int = 5
    num_classes: int = 10
    weight_init: str | float = 0.005
    input_keep: float = 0.8
    hidden_keep: float = 0.5
    dot_general: Callable | None = None  # the dense layers' product (see dense)

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = input_dropout(self, x, self.input_keep, train)
        for i, (c, k, p, (window, stride)) in enumerate(zip(self.channels, self.kernels, self.pads, self.pools,
                                                             strict=True)):
            if i:
                h = hidden_dropout(self, h, self.hidden_keep, train)
            z = Conv(c * self.pieces, k, p, kernel_init=kernel_init(self.weight_init), name=f"conv{i}")(h)
            h = max_pool(maxout(z, self.pieces), window, stride)
        h = hidden_dropout(self, h.reshape(h.shape[0], -1), self.hidden_keep, train)
        z = dense(self, self.units * self.unit_pieces, self.weight_init, name="maxout")(h)
        h = hidden_dropout(self, maxout(z, self.unit_pieces), self.hidden_keep, train)
        return dense(self, self.num_classes, self.weight_init, name="softmax")(h)


class RBFNetwork(nn.Module):
    """Shallow RBF network, no hidden layer (§7, S7.rbf): one unit per class,

        p(y = k | x) = exp(−Σᵢ βₖᵢ (xᵢ − µₖᵢ)²),

    with learned centres µₖ and per-pixel precisions βₖ = exp(log βₖ) > 0. The logits are
    log p(y = k | x) ≤ 0, read by the ``rbf`` objective: the classes are independent outputs, so
    the network can give every class a low probability (Appendix A, A.rubbish_rbf).

    The squared distances are two products, x²·βᵀ − 2x·(βµ)ᵀ + Σᵢ βₖᵢµₖᵢ², not an (N, K, D)
    difference. `mean_init`: centres start at this value; `precision_init`: βₖᵢ starts at this
    value over the number of pixels, so that a distance starts near its order.

    `precision` (the paper's form leaves it open): ``per_class``, a βₖ per class; ``tied``, one β
    for all classes; ``normalised``, a βₖ per class rescaled so that every class has the same
    total precision Σᵢ βₖᵢ (one learned scale). With per-class precisions, a class of small total
    precision is the nearest to any ±ε step — a sink class that FGSM and sign noise both land in
    (s7_rbf shows it); the other two forms take that freedom away.
    """

    num_classes: int = 10
    mean_init: float = 0.5
    precision_init: float = 1.0
    precision: str = "per_class"

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], -1)
        d = x.shape[-1]
        mean = self.param("mean", nn.initializers.constant(self.mean_init), (d, self.num_classes))
        start = nn.initializers.constant(jax.numpy.log(self.precision_init / d))
        log_precision = self.param("log_precision", start, (d, 1 if self.precision == "tied" else self.num_classes))
        precision = jax.numpy.exp(log_precision)
        if self.precision == "normalised":  # the same total for every class: d · exp(log_scale)
            precision = precision / precision.mean(0) * jax.numpy.exp(self.param("log_scale", start, ()))
        squared = (x * x) @ precision - 2 * x @ (precision * mean) + (precision * mean * mean).sum(0)
        # Rounding can take a distance just below 0: the log-probability stays ≤ 0 (min, not a clamp
        # of the distance, keeps the gradient of every other input).
        return jax.numpy.minimum(-squared, 0.0)


def rbf_precision(model: RBFNetwork, params) -> np.ndarray:
    """The (pixels, classes) precisions βₖᵢ of an :class:`RBFNetwork` with `params`, in its form."""
    precision = np.exp(np.asarray(params["log_precision"], np.float64))
    precision = np.broadcast_to(precision, (precision.shape[0], model.num_classes))
    if model.precision == "normalised":
        precision = precision / precision.mean(0) * np.exp(float(params["log_scale"]))
    return precision


class MeanProbabilityEnsemble(nn.Module):
    """An ensemble of `size` copies of `member`, a model with softmax outputs (§9, S9.ens_*), with
    their own parameters: it
    predicts the mean of the members' class probabilities, and its logits are the log of that mean,
    so the softmax cost of the ensemble is −log of the mean probability of the label (the cost
    FGSM against the whole ensemble follows). The members' parameters are stacked on a leading
    axis (:func:`stack_members`) and run as one vmapped program."""

    member: nn.Module
    size: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        members = nn.vmap(type(self.member), variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                          in_axes=None, axis_size=self.size)
        fields = {f: getattr(self.member, f) for f in self.member.__dataclass_fields__ if f not in ("parent", "name")}
        logits = members(**fields, name="members")(x, train)  # (size, N, K)
        return jax.nn.logsumexp(jax.nn.log_softmax(logits, axis=-1), axis=0) - jax.numpy.log(self.size)


def stack_members(params: list) -> dict:
    """The parameters of a :class:`MeanProbabilityEnsemble` from its members' parameters."""
    return {"members": jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *params)}


class ModelSpec(NamedTuple):
    """A model kind: its Flax module, how its outputs are read, and the pydantic model of its
    options (None: unchecked until the module is built)."""

    module: type[nn.Module]
    objective: Objective
    options: type[BaseModel] | None = None


MODELS: dict[str, ModelSpec] = {
    "softmax_regression": ModelSpec(SoftmaxRegression, SOFTMAX, options.SoftmaxRegressionOptions),
    "logistic_regression": ModelSpec(LogisticRegression, LOGISTIC, options.LogisticRegressionOptions),
    "maxout_mlp": ModelSpec(MaxoutMLP, SOFTMAX, options.MaxoutMLPOptions),
    # Appendix A's maxout network with one independent sigmoid output per class.
    "maxout_mlp_sigmoid": ModelSpec(MaxoutMLP, SIGMOID, options.MaxoutMLPOptions),
    "rbf_network": ModelSpec(RBFNetwork, RBF, options.RBFNetworkOptions),
    "conv_maxout": ModelSpec(ConvMaxout, SOFTMAX, options.ConvMaxoutOptions),
    # §9's generative model: its logits are the label's, inferred by mean field; it trains on its
    # own multi-prediction cost (MPDBM.training_cost), and attacks follow −log c_y through inference.
    "mpdbm": ModelSpec(MPDBM, SOFTMAX, options.MPDBMOptions),
}


def find_model(name: str, folders: Iterable[Path | str] = ()) -> ModelSpec:
    """The model kind `name`: built in, or ``module:Name`` from a user's module (searched in
    `folders` first). One-line ReproError when there is none."""
    if name in MODELS:
        return MODELS[name]
    module_name, colon, attr = name.partition(":")
    unknown = (f"unknown model {name!r}; built in: {', '.join(sorted(MODELS))}; or your own as module:Name (a "
               "ModelSpec or Flax module class in a module beside the config, in the current folder or on PYTHONPATH)")
    if not (colon and plugins.is_module(module_name) and attr.isidentifier()):
        raise ReproError(unknown)
    try:
        found = getattr(plugins.import_module(module_name, folders), attr, None)
    except ModuleNotFoundError:
        raise ReproError(unknown) from None
    if isinstance(found, ModelSpec):
        return found
    if isinstance(found, type) and issubclass(found, nn.Module):
        return ModelSpec(found, SOFTMAX)
    raise ReproError(f"{unknown} ({module_name}.{attr} is neither)")


def build_model(name: str, options: dict[str, Any], folders: Iterable[Path | str] = ()) -> tuple[nn.Module, Objective]:
    """The model `name` with `options` (YAML lists become tuples: a model is part of its jitted
    programs' static arguments, so it must be hashable)."""
    spec = find_model(name, folders)
    try:
        return spec.module(**{k: _tuples(v) for k, v in options.items()}), spec.objective
    except TypeError as e:
        raise ReproError(f"model {name}: bad options {options} ({e})") from None


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
