"""The dense layers' product with its kernel gradient in the kernel's own layout."""

from __future__ import annotations

import functools

import jax
from jax import lax


def dense_product_reference(x: jax.Array, kernel: jax.Array, dimension_numbers, precision=None) -> jax.Array:
    """``lax.dot_general``, as ``nn.Dense`` calls it."""
    return lax.dot_general(x, kernel, dimension_numbers, precision=precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def dense_product(x: jax.Array, kernel: jax.Array, dimension_numbers, precision=None) -> jax.Array:
    """:func:`dense_product_reference` for ``nn.Dense`` (inputs (…, in) times an (in, out) kernel),
    whose kernel gradient is one dot written in the kernel's own (in, out) layout.

    JAX's rule writes that gradient as the transpose of an (out, in) dot. On one device XLA folds
    the transpose into the dot; with the batch split across devices the gradient's all-reduce lands
    between the two, and the transpose was left inside the optimizer update, reading the gradient
    column by column. Other products take JAX's own rule. Reverse mode only (a custom VJP): the
    data-parallel training step gives it to the models as their ``dot_general``; elsewhere they
    keep ``lax.dot_general`` (as fast on one device) and forward-mode differentiation.
    """
    return dense_product_reference(x, kernel, dimension_numbers, precision)


def _dense_fwd(x, kernel, dimension_numbers, precision):
    return dense_product(x, kernel, dimension_numbers, precision), (x, kernel)


def _dense_bwd(dimension_numbers, precision, residuals, g):
    x, kernel = residuals
    if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or kernel.ndim != 2:  # not nn.Dense's product
        return jax.vjp(lambda x_, k_: dense_product_reference(x_, k_, dimension_numbers, precision), x, kernel)[1](g)
    batch_axes = tuple(range(x.ndim - 1))
    dx = lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), precision=precision)
    dkernel = lax.dot_general(x, g, ((batch_axes, batch_axes), ((), ())), precision=precision)
    return dx, dkernel


dense_product.defvjp(_dense_fwd, _dense_bwd)
