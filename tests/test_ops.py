"""Every op of fgsm_repro.ops computes what its plain reference does: the same values and the same
gradients (up to float rounding where the op adds or convolves in another order)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.models import ConvMaxout
from fgsm_repro.ops.column_sum import (
    column_sum,
    column_sum_reference,
    sum_leading_axes,
    sum_leading_axes_reference,
)
from fgsm_repro.ops.conv import Conv, add_bias, add_bias_reference, conv_nhwc, conv_nhwc_reference, conv_reference
from fgsm_repro.ops.dense import dense_product, dense_product_reference
from fgsm_repro.ops.dropout import dropout_scale, dropout_scale_reference
from fgsm_repro.ops.host import HOST_ALIGNMENT, host_aligned, host_empty
from fgsm_repro.ops.maxout import maxout, maxout_reference
from fgsm_repro.ops.pool import max_pool, max_pool_reference


def _normal(seed, shape):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


def _check(got, want, tol: float | None):
    if tol is None:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def assert_same_as_reference(op, reference, *args, value_tol: float | None = None, grad_tol: float | None = None):
    """`op` and `reference` give the same values, and the same gradients (of a random linear
    function of the output) with respect to every argument: equal, or within the tolerance."""
    want = reference(*args)
    _check(op(*args), want, value_tol)
    probe = _normal(99, want.shape)
    argnums = tuple(range(len(args)))
    got_grads, want_grads = (jax.grad(lambda *a, f=f: (f(*a) * probe).sum(), argnums=argnums)(*args)
                             for f in (op, reference))
    jax.tree.map(lambda got, want: _check(got, want, grad_tol), got_grads, want_grads)


def test_maxout_is_the_max_with_the_max_gradient_without_ties():
    z, w = _normal(0, (7, 12)), _normal(1, (7, 4))
    assert_same_as_reference(lambda z_: maxout(z_, 3), lambda z_: maxout_reference(z_, 3), z)
    assert int((jax.grad(lambda z_: (maxout(z_, 3) * w).sum())(z) != 0).sum()) == 7 * 4  # one winner per unit
    # Forward mode works too (a custom JVP, not a custom VJP), and agrees.
    dz = _normal(2, z.shape)
    np.testing.assert_allclose(jax.jvp(lambda z_: maxout(z_, 3), (z,), (dz,))[1],
                               jax.jvp(lambda z_: maxout_reference(z_, 3), (z,), (dz,))[1], rtol=1e-6)


def test_maxout_gradient_reaches_every_tied_piece_as_in_theano():
    z = jnp.array([[1.0, 3.0, 3.0, 0.0, 0.0, 0.0]])
    grad = jax.grad(lambda z_: (maxout(z_, 3) * jnp.array([[2.0, 5.0]])).sum())(z)
    np.testing.assert_array_equal(grad, [[0.0, 2.0, 2.0, 5.0, 5.0, 5.0]])


@pytest.mark.parametrize("shape", [
    dict(n=3, hw=9, cin=2, k=4, pad=((2, 2), (2, 2)), cout=5),
    dict(n=2, hw=5, cin=4, k=3, pad=((2, 1), (0, 3)), cout=3),  # uneven padding
    dict(n=2, hw=6, cin=3, k=2, pad=((3, 3), (0, 0)), cout=2),  # padding > kernel - 1: XLA's input gradient
])
def test_conv_nhwc_is_the_reference(shape):
    n, hw, cin, k, pad, cout = shape.values()
    x, w = _normal(0, (n, hw, hw + 1, cin)), _normal(1, (k, k, cin, cout))
    assert_same_as_reference(lambda x_, w_: conv_nhwc(x_, w_, pad), lambda x_, w_: conv_nhwc_reference(x_, w_, pad),
                             x, w, value_tol=1e-5, grad_tol=1e-4)


def test_add_bias_is_the_reference():
    assert_same_as_reference(add_bias, add_bias_reference, _normal(0, (3, 9, 10, 4)), _normal(1, (4,)), grad_tol=1e-5)


def test_conv_module_is_flax_conv():
    """Same parameters from the same key, same outputs, same gradients (input, kernel, bias)."""
    x = _normal(0, (3, 9, 10, 4))
    ours = Conv(6, 3, 2)
    flax_conv = conv_reference(ours)
    params = ours.init(jax.random.PRNGKey(1), x)
    jax.tree.map(np.testing.assert_array_equal, params, flax_conv.init(jax.random.PRNGKey(1), x))
    params = jax.tree.map(lambda p: p + _normal(2, p.shape), params)  # bias != 0
    assert_same_as_reference(ours.apply, flax_conv.apply, params, x, value_tol=1e-5, grad_tol=1e-4)
    model = ConvMaxout(channels=(2, 3, 2), units=3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert params["conv0"]["kernel"].shape == (8, 8, 3, 4) and params["maxout"]["kernel"].shape == (4 * 4 * 2, 15)


@pytest.mark.parametrize("x_shape, dims", [
    ((7, 5), (((1,), (0,)), ((), ()))),  # nn.Dense on a batch
    ((2, 3, 5), (((2,), (0,)), ((), ()))),  # nn.Dense on a batch of sequences
    ((5, 7), (((0,), (0,)), ((), ()))),  # another product: JAX's own rule
])
def test_dense_product_is_the_reference(x_shape, dims):
    x, w = _normal(0, x_shape), _normal(1, (5, 4))
    assert_same_as_reference(lambda x_, w_: dense_product(x_, w_, dims),
                             lambda x_, w_: dense_product_reference(x_, w_, dims), x, w, grad_tol=1e-5)


@pytest.mark.parametrize("shape,window,stride", [
    ((2, 33, 33, 3), 4, 2), ((2, 14, 15, 2), 4, 2), ((3, 8, 8, 2), 2, 2), ((2, 9, 9, 2), 3, 2), ((1, 10, 10, 1), 6, 3),
])
def test_max_pool_is_the_reference(shape, window, stride):
    x = _normal(0, shape)
    assert_same_as_reference(lambda x_: max_pool(x_, window, stride), lambda x_: max_pool_reference(x_, window, stride),
                             x, grad_tol=1e-5)


@pytest.mark.parametrize("keep", [0.5, 0.8, 0.3])
@pytest.mark.parametrize("scale_of", ["one", "inverse_keep"])
def test_dropout_scale_is_the_reference_bit_for_bit(keep, scale_of):
    # sqrt(scale²) instead of a select only changes how XLA fuses it, never a value.
    scale = 1.0 if scale_of == "one" else 1.0 / keep
    key = jax.random.PRNGKey(3)
    got = jax.jit(dropout_scale, static_argnums=(1, 2, 3))(key, keep, (64, 50), scale)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), np.asarray(dropout_scale_reference(key, keep, (64, 50), scale)))
    assert 0.0 < float((np.asarray(got) > 0).mean()) < 1.0


@pytest.mark.parametrize("shape", [(139392, 5), (96, 3), (25, 4), (4, 6, 6, 7)])
def test_sum_leading_axes_is_the_reference(shape):  # 16 blocks, 2 blocks, 1 block, a 4-d array
    x = _normal(0, shape)
    np.testing.assert_allclose(sum_leading_axes(x), sum_leading_axes_reference(np.asarray(x, np.float64)),
                               rtol=1e-5, atol=1e-3)
    assert_same_as_reference(sum_leading_axes, sum_leading_axes_reference, x, value_tol=1e-3)


def test_column_sum_is_the_reference():
    p, u = _normal(0, (784, 24)), _normal(1, (784, 24))

    def squares(p_, u_):
        return lambda lo, hi: (p_[lo:hi] + u_[lo:hi]) ** 2

    assert_same_as_reference(lambda p_, u_: column_sum(squares(p_, u_), 784),
                             lambda p_, u_: column_sum_reference(squares(p_, u_), 784), p, u,
                             value_tol=1e-4, grad_tol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.uint8])
def test_host_arrays_are_aligned_and_aliased(dtype):
    x = host_empty((300, 7, 5), dtype)
    assert x.shape == (300, 7, 5) and x.dtype == dtype and x.ctypes.data % HOST_ALIGNMENT == 0
    x[...] = np.arange(x.size).reshape(x.shape)
    assert jax.device_put(x).unsafe_buffer_pointer() == x.ctypes.data  # aliased, not copied
    assert host_aligned(x) is x
    unaligned = np.empty(x.size * x.itemsize + 1, np.uint8)[1:].view(dtype).reshape(x.shape)
    unaligned[...] = x
    copied = host_aligned(unaligned)
    assert copied.ctypes.data % HOST_ALIGNMENT == 0 and copied.flags.c_contiguous
    np.testing.assert_array_equal(copied, x)
