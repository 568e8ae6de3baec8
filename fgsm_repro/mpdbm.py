"""The multi-prediction deep Boltzmann machine (Goodfellow, Mirza, Courville & Bengio, "Multi-Prediction
Deep Boltzmann Machines", NIPS 2013), the generative model of the paper's §9 (S9.mpdbm).

A binary DBM of visible units v (the pixels), two layers of binary hidden units h⁰, h¹ and a
one-hot label c connected to h¹ only, with energy

    E(v, h⁰, h¹, c) = −b_vᵀv − vᵀW⁰h⁰ − b⁰ᵀh⁰ − h⁰ᵀW¹h¹ − b¹ᵀh¹ − h¹ᵀW²c − b²ᵀc.

Inference is mean field, unrolled for a fixed number of sweeps (a ``lax.scan``), each sweep
updating h⁰, then c, then the inferred pixels, then h¹ (pylearn2's even/odd order):

    h⁰ ← σ(v W⁰ + h¹ W¹ᵀ + b⁰),  c ← softmax(h¹ W² + b²),  v̂ ← σ(h⁰ W⁰ᵀ + b_v),  h¹ ← σ(h⁰ W¹ + c W²ᵀ + b¹).

The first pass runs bottom-up with doubled weights (h⁰ = σ(2 v W⁰ + b⁰), h¹ = σ(2 h⁰ W¹ + b¹)),
standing in for the missing top-down input. Every function here is pure in the parameters
``{"visible": {"bias"}, "hidden0", "hidden1", "label": {"kernel", "bias"}}`` and composes with
``jit``, ``vmap`` and ``grad`` — with respect to the parameters (multi-prediction training,
backpropagating through every sweep) and to the pixels (FGSM through the whole inference).

- :func:`mean_field`: inference with some pixels and labels observed and the others inferred.
- :func:`multi_prediction_cost`: the training cost. Each pixel and each example's label is a
  target with probability ½; the targets are inferred from the rest, and the cost is the
  cross-entropy of the targets, summed, over the number of pixels.
- :func:`classify`: the label's logits z with c = softmax(z), by the multi-inference trick
  (every pixel half observed, half inferred: v = ½x + ½v̂, the test-time counterpart of the
  training masks) or by plain mean field on clamped pixels.
- :class:`MPDBM`: the Flax module (registered as ``mpdbm``), whose logits are the label's.

Usage::

    model = MPDBM(units=(500, 1000))
    params = model.init(key, x[:1])["params"]
    cost = multi_prediction_cost(params, x_binary, y, random_targets(key, x_binary.shape), 14).mean()
    x_adv = x + 0.25 * jnp.sign(jax.grad(lambda v: optax.softmax_cross_entropy_with_integer_labels(
        classify(params, v, 14), y).sum())(x))
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LAYERS = ("hidden0", "hidden1", "label")
TARGET_PROBABILITY = 0.5  # each pixel and each label is a target of the cost with this probability
MARGINAL_CLIP = 1e-7  # pixel means are clipped to [this, 1 − this] before their logit


class Targets(NamedTuple):
    """Which units the cost predicts (1) from the others (0): pixels (N, D), labels (N,)."""

    pixels: jax.Array
    labels: jax.Array


def _layer(params, name):
    return params[name]["kernel"], params[name]["bias"]


def mean_field(params, v: jax.Array, v_free: jax.Array | float, y: jax.Array, y_free: jax.Array | float,
               steps: int, *, label_first: bool = False) -> tuple[jax.Array, jax.Array]:
    """Mean-field inference for `steps` sweeps (the first the doubled bottom-up pass).

    v: (N, D) pixels; v_free ∈ [0, 1] (broadcast to v) is how much of each pixel is inferred: the
    pixel's state is v_free·v̂ + (1 − v_free)·v (1: a target, 0: observed, ½: the multi-inference
    mixture). y: (N, K) label probabilities, y_free (broadcast to (N, 1)) likewise. Inferred
    pixels start at σ(b_v) (a constant: no gradient flows into the initial state).

    With `label_first` (training, pylearn2's ``do_inpainting``), after the first pass the label
    starts at softmax(b²) where inferred and h¹ is recomputed with that top-down input; without,
    (test time, ``multi_infer`` / ``mf``), the sweeps start from the first pass's h¹.

    Returns the last sweep's logits of the pixels (N, D) and of the label (N, K).
    """
    (w0, b0), (w1, b1), (w2, b2) = (_layer(params, name) for name in LAYERS)
    bv = params["visible"]["bias"]

    def pixels(z_v):
        return v_free * jax.nn.sigmoid(z_v) + (1 - v_free) * v

    def label(z_c):
        return y_free * jax.nn.softmax(z_c, axis=-1) + (1 - y_free) * y

    state = pixels(jax.lax.stop_gradient(jnp.broadcast_to(bv, v.shape)))
    h0 = jax.nn.sigmoid(2 * state @ w0 + b0)
    h1 = jax.nn.sigmoid(2 * h0 @ w1 + b1)
    if label_first:
        h1 = jax.nn.sigmoid(h0 @ w1 + label(jnp.broadcast_to(b2, y.shape)) @ w2.T + b1)

    # Every pixel clamped (plain mean field): the sweeps skip the pixels' update, a D×H⁰ product each.
    clamped = isinstance(v_free, int | float) and v_free == 0

    def sweep(carry, _):
        state, h0, h1, z_v, _ = carry
        h0 = jax.nn.sigmoid(state @ w0 + h1 @ w1.T + b0)
        z_c = h1 @ w2 + b2
        if not clamped:
            z_v = h0 @ w0.T + bv
            state = pixels(z_v)
        h1 = jax.nn.sigmoid(h0 @ w1 + label(z_c) @ w2.T + b1)
        return (state, h0, h1, z_v, z_c), None

    start = (state, h0, h1, jnp.zeros_like(v), jnp.zeros(y.shape, v.dtype))
    (_, h0, _, z_v, z_c), _ = jax.lax.scan(sweep, start, length=steps - 1)
    return (h0 @ w0.T + bv if clamped else z_v), z_c


def multi_prediction_cost(params, v: jax.Array, y: jax.Array, targets: Targets, steps: int) -> jax.Array:
    """Per example (N,): the multi-prediction cost of binary pixels v (N, D) with labels y (N,)
    (integers), given which units are `targets` — the targets' cross-entropies summed, over D:

        (Σᵢ Mᵢ·BCE(vᵢ, σ(z_vᵢ)) + m·(−log softmax(z_c)_y)) / D,

    with z from :func:`mean_field` (training order) in which the targets are inferred and the rest
    observed. The mean over a minibatch is pylearn2's ``MultiPrediction`` cost."""
    classes = params["label"]["bias"].shape[-1]
    one_hot = jax.nn.one_hot(y, classes, dtype=v.dtype)
    label_free = targets.labels[:, None].astype(v.dtype)
    z_v, z_c = mean_field(params, v, targets.pixels, one_hot, label_free, steps, label_first=True)
    pixel_ce = v * jax.nn.softplus(-z_v) + (1 - v) * jax.nn.softplus(z_v)
    label_nll = -(one_hot * jax.nn.log_softmax(z_c, axis=-1)).sum(-1)
    return ((targets.pixels * pixel_ce).sum(-1) + targets.labels * label_nll) / v.shape[-1]


def random_targets(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> Targets:
    """Fresh targets for a minibatch of `shape` (N, D): each pixel and each label with probability ½."""
    pixel_key, label_key = jax.random.split(key)
    return Targets(jax.random.bernoulli(pixel_key, TARGET_PROBABILITY, shape).astype(dtype),
                   jax.random.bernoulli(label_key, TARGET_PROBABILITY, shape[:1]).astype(dtype))


def sampled_cost(params, x: jax.Array, y: jax.Array, key: jax.Array, steps: int) -> jax.Array:
    """Per example: :func:`multi_prediction_cost` of a binary sample of the intensities x (N, D)
    in [0, 1] (each pixel 1 with probability its intensity) with :func:`random_targets`, both
    drawn from `key`."""
    sample_key, targets_key = jax.random.split(key)
    v = jax.random.bernoulli(sample_key, x).astype(x.dtype)
    return multi_prediction_cost(params, v, y, random_targets(targets_key, v.shape, v.dtype), steps)


Classifier = Literal["multi_inference", "mean_field"]


def classify(params, x: jax.Array, steps: int, classifier: Classifier = "multi_inference") -> jax.Array:
    """The label's logits (N, K) for real-valued pixels x (N, D) in [0, 1]: the label is inferred,
    and the pixels are half observed, half inferred (``multi_inference``) or all observed
    (``mean_field``)."""
    classes = params["label"]["bias"].shape[-1]
    v_free = 0.5 if classifier == "multi_inference" else 0.0
    no_label = jnp.zeros((x.shape[0], classes), x.dtype)
    return mean_field(params, x, v_free, no_label, 1.0, steps)[1]


def sparse_normal(nonzero: int):
    """pylearn2's ``sparse_init``: each unit (column) has `nonzero` incoming weights drawn from N(0, 1),
    at distinct random rows; the rest are 0."""

    def init(key, shape, dtype=jnp.float32):
        rows_key, values_key = jax.random.split(key)
        rank = jnp.argsort(jnp.argsort(jax.random.uniform(rows_key, shape), axis=0), axis=0)
        return jnp.where(rank < nonzero, jax.random.normal(values_key, shape, dtype), 0).astype(dtype)

    return init


def visible_bias_from(x: np.ndarray) -> np.ndarray:
    """The logits of the pixel means of x (N, …): pylearn2's visible-bias initialisation."""
    mean = np.clip(np.asarray(x, np.float64).reshape(len(x), -1).mean(0), MARGINAL_CLIP, 1 - MARGINAL_CLIP)
    return np.log(mean / (1 - mean)).astype(np.float32)


class MPDBM(nn.Module):
    """The MNIST MP-DBM: `visible` binary pixels, hidden layers of `units`, a `num_classes`-way label.

    Initialisation (pylearn2's ``mpdbm.yaml``): layer i's weights have `sparse_init`[i] nonzero
    N(0, 1) incoming weights per unit, or, where that is None, U(−`weight_init`, `weight_init`);
    hidden biases `hidden_bias_init`, label bias 0, visible bias 0 until :meth:`init_from_data`
    sets it to the logits of the training pixels' means.

    Called on images (N, …) it returns the label's logits by `classifier` after `steps` sweeps;
    :meth:`training_cost` is the multi-prediction cost, with the training pixels binarised by
    sampling (each pixel 1 with probability its intensity, anew every minibatch) and the targets
    drawn from the ``dropout`` rng.
    """

    units: tuple[int, int] = (2087, 3200)
    num_classes: int = 10
    visible: int = 784
    steps: int = 14
    sparse_init: tuple[int | None, int | None, int | None] = (15, None, 23)
    weight_init: float = 0.00638830865761
    hidden_bias_init: tuple[float, float] = (-0.710467, -0.393587)
    classifier: Classifier = "multi_inference"

    def setup(self):
        sizes = (self.visible, *self.units, self.num_classes)
        biases = (*self.hidden_bias_init, 0.0)

        def layer(fan_in, fan_out, nonzero, bias):
            if nonzero is not None:
                kernel = sparse_normal(nonzero)
            else:
                def kernel(key, shape, dtype=jnp.float32):
                    return jax.random.uniform(key, shape, dtype, -self.weight_init, self.weight_init)
            return lambda key: {"kernel": kernel(key, (fan_in, fan_out)), "bias": jnp.full((fan_out,), bias)}

        self.layers = [self.param(name, layer(sizes[i], sizes[i + 1], self.sparse_init[i], biases[i]))
                       for i, name in enumerate(LAYERS)]
        self.visible_bias = self.param("visible", lambda key: {"bias": jnp.zeros((self.visible,))})

    def _params(self):
        return {"visible": self.visible_bias, **dict(zip(LAYERS, self.layers, strict=True))}

    def _pixels(self, x):
        x = x.reshape(x.shape[0], -1)
        if x.shape[-1] != self.visible:
            raise ValueError(f"the MP-DBM has {self.visible} visible units; the images have {x.shape[-1]} pixels")
        return x

    def __call__(self, x, train: bool = False):
        return classify(self._params(), self._pixels(x), self.steps, self.classifier)

    def training_cost(self, x, y):
        """Per example: the multi-prediction cost on a binary sample of x (see the class)."""
        return sampled_cost(self._params(), self._pixels(x), y, self.make_rng("dropout"), self.steps)

    @staticmethod
    def init_from_data(params, x_train: np.ndarray):
        """`params` with the visible bias set from the training images."""
        return {**params, "visible": {"bias": jnp.asarray(visible_bias_from(x_train))}}
