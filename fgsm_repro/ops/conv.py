"""Stride-1 convolutions of NHWC maps whose gradients XLA's CPU backend runs on its fast path."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from fgsm_repro.ops.column_sum import sum_leading_axes

NHWC = ("NHWC", "HWIO", "NHWC")


def conv_nhwc_reference(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """A stride-1 convolution of NHWC maps with an HWIO kernel and explicit `padding`
    ((top, bottom), (left, right))."""
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv_nhwc(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
    """:func:`conv_nhwc_reference`, with both gradients written as canonical forward convolutions,
    the form XLA's CPU backend runs fast (on its Eigen path).

    - kernel gradient: XLA writes it as a convolution in a non-canonical layout (batch as the
      feature dimension, often with the kernel reversed), and inside a loop such as the training
      epoch's scan it runs that as a naive loop. Here it is a VALID forward convolution of the
      padded, transposed input.
    - input gradient: XLA writes a transposed convolution (the reversed kernel folded into the
      op); here it is a forward convolution of the output gradient with the flipped kernel.

    Reverse mode only (a custom VJP).
    """
    return conv_nhwc_reference(x, kernel, padding)


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
        dx = jax.vjp(lambda x_: conv_nhwc_reference(x_, kernel, padding), x)[1](g)[0]
    # dW[i, j, c, o] = Σ_{n,h,w} x_pad[n, h+i, w+j, c] g[n, h, w, o]: a VALID forward convolution
    # of x_pad as (C, H, W, N) "images" with g as an (h, w, N, O) kernel. The barrier keeps XLA
    # from folding the pad and transposes back into the convolution (its slow forms).
    x_padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0))).transpose(3, 1, 2, 0)
    x_padded, g_kernel = lax.optimization_barrier((x_padded, g.transpose(1, 2, 0, 3)))
    dkernel = lax.conv_general_dilated(x_padded, g_kernel, (1, 1), ((0, 0), (0, 0)), dimension_numbers=NHWC)
    dkernel = dkernel.transpose(1, 2, 0, 3)
    return dx, dkernel


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


def add_bias_reference(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` along the last axis."""
    return y + bias


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """:func:`add_bias_reference`, with the bias gradient summed blockwise
    (:func:`fgsm_repro.ops.column_sum.sum_leading_axes`) rather than by XLA's slow reduction over
    the leading axes."""
    return add_bias_reference(y, bias)


def _add_bias_fwd(y, bias):
    return y + bias, None


def _add_bias_bwd(_, g):
    return g, sum_leading_axes(g)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Conv(nn.Module):
    """``nn.Conv(features, (k, k), padding=[(p, p), (p, p)])`` on NHWC maps (:func:`conv_reference`)
    — the same parameters (an HWIO ``kernel`` and a ``bias``) and initialization — whose gradients
    run fast on XLA's CPU backend (:func:`conv_nhwc`, :func:`add_bias`)."""

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


def conv_reference(conv: Conv) -> nn.Conv:
    """The ``nn.Conv`` that `conv` computes."""
    k, p = conv.kernel_size, conv.padding
    return nn.Conv(conv.features, (k, k), padding=[(p, p), (p, p)], kernel_init=conv.kernel_init)
