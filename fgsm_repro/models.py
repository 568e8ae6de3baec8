"""Model registry: config name -> (Flax module, output objective).

Every model maps a batch of images (N, H, W, C) to logits; the objective says how the
logits are read (see :mod:`fgsm_repro.objectives`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fgsm_repro import cpu_tuning
from fgsm_repro.column_sum import sum_leading_axes
from fgsm_repro.errors import ReproError
from fgsm_repro.objectives import LOGISTIC, SOFTMAX, Objective

cpu_tuning.unroll_threefry()  # dropout masks every step: see fgsm_repro.cpu_tuning


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
        return dense(self.num_classes, self.weight_init)(x.reshape(x.shape[0], -1))


class LogisticRegression(nn.Module):
    """Binary logistic regression: f = wᵀx + b, P(y=+1|x) = σ(f) (§5, Fig. 2)."""

    weight_init: str | float = "zeros"

    @nn.compact
    def __call__(self, x, train: bool = False):
        return dense(1, self.weight_init)(x.reshape(x.shape[0], -1))[:, 0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def maxout(z: jax.Array, pieces: int) -> jax.Array:
    """Max over contiguous groups of `pieces` along the last axis: (…, units·pieces) → (…, units).

    Differentiated as the original recipe's Theano graph (a chain of pairwise ``T.maximum``) is:
    the gradient of a unit goes to every piece equal to its max. Without ties (almost surely,
    with real-valued weights) that is the usual max gradient; JAX's own ``max`` rule splits it
    among tied pieces, which needs a count per unit — a reduction that took a sixth of a
    training step on the CPU.
    """
    return z.reshape(*z.shape[:-1], z.shape[-1] // pieces, pieces).max(axis=-1)


@maxout.defjvp
def _maxout_jvp(pieces, primals, tangents):
    (z,), (dz,) = primals, tangents
    h = maxout(z, pieces)
    winners = z.reshape(*h.shape, pieces) == h[..., None]
    return h, jnp.where(winners, dz.reshape(winners.shape), 0.0).sum(axis=-1)


NHWC = ("NHWC", "HWIO", "NHWC")


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_nhwc(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """A stride-1 convolution of NHWC maps with an HWIO kernel and explicit `padding`
    ((top, bottom), (left, right)), with its gradients written the way XLA's CPU backend runs
    fast. Measured on the conv maxout net, batch 128:

    - kernel gradient: XLA writes it as a convolution in a non-canonical layout (batch as the
      feature dimension, often with the kernel reversed), and inside a loop such as the training
      epoch's scan it runs that as a naive loop at 1–5 GFLOP/s (up to minutes per batch). Written
      here as a canonical VALID forward convolution of the padded, transposed input, it runs on
      XLA's Eigen path (90–175 GFLOP/s when the program is compiled without YNNPACK, as
      :mod:`fgsm_repro.cpu_tuning` compiles it).
    - input gradient: XLA's transposed convolution (reversed kernel folded into the op) took
      3.5 s for the second layer; written as a forward convolution of the output gradient with
      the flipped kernel it runs on the same path as the forward pass.

    Reverse mode only (a custom VJP).
    """
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=NHWC)


def _conv_fwd(x, kernel, padding):
    return conv_nhwc(x, kernel, padding), (x, kernel)


def _conv_bwd(padding, residuals, g):
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    dx_padding = ((kh - 1 - padding[0][0], kh - 1 - padding[0][1]), (kw - 1 - padding[1][0], kw - 1 - padding[1][1]))
    if min(min(p) for p in dx_padding) >= 0:  # a forward conv of g with the flipped kernel
        flipped = jnp.flip(kernel, (0, 1)).transpose(0, 1, 3, 2)
        dx = lax.conv_general_dilated(g, flipped, (1, 1), dx_padding, dimension_numbers=NHWC)
    else:
        dx = jax.vjp(lambda x_: lax.conv_general_dilated(x_, kernel, (1, 1), padding, dimension_numbers=NHWC),
                     x)[1](g)[0]
    # dW[i, j, c, o] = Σ_{n,h,w} x_pad[n, h+i, w+j, c] g[n, h, w, o]: a VALID forward convolution
    # of x_pad as (C, H, W, N) "images" with g as an (h, w, N, O) kernel. The barrier keeps XLA
    # from folding the pad and transposes back into the convolution (its slow forms).
    x_padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0))).transpose(3, 1, 2, 0)
    x_padded, g_kernel = lax.optimization_barrier((x_padded, g.transpose(1, 2, 0, 3)))
    dkernel = lax.conv_general_dilated(x_padded, g_kernel, (1, 1), ((0, 0), (0, 0)), dimension_numbers=NHWC)
    dkernel = dkernel.transpose(1, 2, 0, 3)
    return dx, dkernel


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def dense_product(x: jax.Array, kernel: jax.Array, dimension_numbers, precision=None) -> jax.Array:
    """``lax.dot_general`` for ``nn.Dense`` (inputs (…, in) times an (in, out) kernel), whose kernel
    gradient is one dot written in the kernel's own (in, out) layout. JAX's rule writes it as the
    transpose of an (out, in) dot. On one device XLA folds that transpose into the dot; with the
    batch split across devices the gradient's all-reduce lands between the two, and the transpose
    was left inside the optimizer update, reading the gradient column by column: 103 ms of the
    250 ms step of the 1600-unit net (its 1600×8000 kernel) on two host devices sharing 2 cores.
    Reverse mode only (a custom VJP): used where :func:`kernel_layout_gradients` says.
    """
    return lax.dot_general(x, kernel, dimension_numbers, precision=precision)


def _dense_fwd(x, kernel, dimension_numbers, precision):
    return dense_product(x, kernel, dimension_numbers, precision), (x, kernel)


def _dense_bwd(dimension_numbers, precision, residuals, g):
    x, kernel = residuals
    if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or kernel.ndim != 2:  # not nn.Dense's product
        return jax.vjp(lambda x_, k_: lax.dot_general(x_, k_, dimension_numbers, precision=precision), x, kernel)[1](g)
    batch_axes = tuple(range(x.ndim - 1))
    dx = lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), precision=precision)
    dkernel = lax.dot_general(x, g, ((batch_axes, batch_axes), ((), ())), precision=precision)
    return dx, dkernel


dense_product.defvjp(_dense_fwd, _dense_bwd)


_kernel_layout = contextvars.ContextVar("kernel_layout_gradients", default=False)


@contextlib.contextmanager
def kernel_layout_gradients(enabled: bool = True) -> Iterator[None]:
    """The dense layers traced inside take their gradients through :func:`dense_product`. The
    data-parallel training step asks for it; elsewhere they keep ``lax.dot_general`` (the same
    speed on one device, measured) and forward-mode differentiation."""
    token = _kernel_layout.set(enabled)
    try:
        yield
    finally:
        _kernel_layout.reset(token)


def dense(features: int, weight_init: str | float, name: str | None = None) -> nn.Dense:
    """``nn.Dense`` with the model's weight initialization (and :func:`kernel_layout_gradients`)."""
    return nn.Dense(features, kernel_init=kernel_init(weight_init), name=name,
                    dot_general=dense_product if _kernel_layout.get() else None)


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` along the last axis, with the bias gradient summed blockwise
    (:func:`fgsm_repro.column_sum.sum_leading_axes`): XLA's own reduction took 33 ms of a conv
    maxout training step for the first layer's bias (batch 128), this 3 ms."""
    return y + bias


def _add_bias_fwd(y, bias):
    return y + bias, None


def _add_bias_bwd(_, g):
    return g, sum_leading_axes(g)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Conv(nn.Module):
    """``nn.Conv(features, (k, k), padding=[(p, p), (p, p)])`` on NHWC maps — the same parameters
    (an HWIO ``kernel`` and a ``bias``) and initialization — whose gradients run fast on XLA's
    CPU backend (:func:`conv_nhwc`, :func:`add_bias`)."""

    features: int
    kernel_size: int
    padding: int
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x):
        k, p = self.kernel_size, self.padding
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
        return add_bias(conv_nhwc(x, kernel, ((p, p), (p, p))), bias)


def max_pool(x: jax.Array, window: int, stride: int) -> jax.Array:
    """``nn.max_pool(x, (window, window), strides=(stride, stride))`` (VALID) on NHWC maps, computed
    per axis and, when `window` is a multiple of `stride`, as a max over non-overlapping blocks of
    `stride` followed by a stride-1 max over ``window // stride`` neighbouring blocks (a window
    [s·i, s·i + m·s) is blocks i … i + m − 1). Same values; its gradient is elementwise selects,
    where XLA's CPU backend runs the select-and-scatter of ``nn.max_pool`` as a windowed
    reduction with index tuples and a scatter (0.28 s of a conv maxout training step on batch
    128, against 0.07 s here). The gradient goes to the winning input, as ``nn.max_pool``'s does
    (ties, of probability zero with real-valued inputs, are split)."""
    if window % stride:
        return nn.max_pool(x, (window, window), strides=(stride, stride))
    per_window = window // stride  # blocks per window
    for axis in (1, 2):
        blocks = x.shape[axis] // stride
        x = lax.slice_in_dim(x, 0, blocks * stride, axis=axis)
        x = x.reshape(*x.shape[:axis], blocks, stride, *x.shape[axis + 1:])
        x = functools.reduce(jnp.maximum, [lax.index_in_dim(x, d, axis + 1, keepdims=False) for d in range(stride)])
        out = blocks - per_window + 1
        x = functools.reduce(jnp.maximum, [lax.slice_in_dim(x, d, d + out, axis=axis) for d in range(per_window)])
    return x


def dropout_scale(key: jax.Array, keep: float, shape: tuple[int, ...], scale: float) -> jax.Array:
    """A dropout mask as float32 factors: `scale` with probability `keep`, else 0.

    Written as sqrt(scale² or 0) on purpose. XLA's CPU fusion recomputes a cheap elementwise
    producer inside each of its consumers, even one that reads every element several times: the
    maxout gradient reads a unit's mask once per piece, so its threefry bits were drawn five
    times a step. XLA does not duplicate an expensive op such as sqrt into such a consumer, so
    the mask is drawn once and stored: the 240-unit net's training epoch measured 6% faster, its
    adversarial epoch 9%. The values are those of a plain select: sqrt(fl(s·s)) = s exactly in
    IEEE arithmetic.
    """
    kept = jax.random.bernoulli(key, keep, shape)
    return jnp.sqrt(jnp.where(kept, jnp.float32(scale) ** 2, jnp.float32(0.0)))


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

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = input_dropout(self, x.reshape(x.shape[0], -1), self.input_keep, train)
        for i in range(self.layers):
            if i:
                h = hidden_dropout(self, h, self.hidden_keep, train)
            z = dense(self.units * self.pieces, self.weight_init, name=f"maxout{i}")(h)
            h = maxout(z, self.pieces)
        h = hidden_dropout(self, h, self.hidden_keep, train)
        return dense(self.num_classes, self.weight_init, name="softmax")(h)


class ConvGeometry(NamedTuple):
    """A stride-1 conv layer on (height, width, channels) input maps with `filters` kernels of
    kernel × kernel and zero padding `pad` on every side."""
    height: int
    width: int
    channels: int
    filters: int
    kernel: int
    pad: int

    @property
    def out_height(self) -> int:
        return self.height + 2 * self.pad - self.kernel + 1

    @property
    def out_width(self) -> int:
        return self.width + 2 * self.pad - self.kernel + 1


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

    def conv_layers(self, height: int, width: int, in_channels: int) -> tuple[list[ConvGeometry], tuple[int, int, int]]:
        """Each conv layer's geometry on (height, width, in_channels) input, and the (height,
        width, channels) of the maps the dense layers flatten."""
        layers = []
        for c, k, p, (window, stride) in zip(self.channels, self.kernels, self.pads, self.pools, strict=True):
            layer = ConvGeometry(height, width, in_channels, c * self.pieces, k, p)
            layers.append(layer)
            height, width = (layer.out_height - window) // stride + 1, (layer.out_width - window) // stride + 1
            in_channels = c
        return layers, (height, width, in_channels)

    def layer_shapes(self, height: int, width: int, in_channels: int) -> list[tuple[int, int, int]]:
        """Per layer, (output positions, dense-equivalent in × out): conv i is a
        (k·k·C_in) × (C_out) product at every output position, a dense layer one position."""
        convs, (h, w, c) = self.conv_layers(height, width, in_channels)
        shapes = [(g.out_height * g.out_width, g.kernel ** 2 * g.channels, g.filters) for g in convs]
        return [*shapes, (1, h * w * c, self.units * self.unit_pieces), (1, self.units, self.num_classes)]

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
        z = dense(self.units * self.unit_pieces, self.weight_init, name="maxout")(h)
        h = hidden_dropout(self, maxout(z, self.unit_pieces), self.hidden_keep, train)
        return dense(self.num_classes, self.weight_init, name="softmax")(h)


class ModelSpec(NamedTuple):
    module: type[nn.Module]
    objective: Objective


MODELS: dict[str, ModelSpec] = {
    "softmax_regression": ModelSpec(SoftmaxRegression, SOFTMAX),
    "logistic_regression": ModelSpec(LogisticRegression, LOGISTIC),
    "maxout_mlp": ModelSpec(MaxoutMLP, SOFTMAX),
    "conv_maxout": ModelSpec(ConvMaxout, SOFTMAX),
}


def build_model(name: str, options: dict[str, Any]) -> tuple[nn.Module, Objective]:
    spec = MODELS[name]
    try:
        return spec.module(**options), spec.objective
    except TypeError as e:
        raise ReproError(f"model {name}: bad options {options} ({e})") from None
