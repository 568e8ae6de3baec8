"""The fast paths compute what the straightforward ones do: the maxout gradient rule, the conv
kernel gradient, the dense kernel gradient in the kernel's layout, and the CPU tunings of
fgsm_repro.cpu_tuning (same random bits, same training up to float rounding)."""

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fgsm_repro import cpu_tuning
from fgsm_repro.column_sum import sum_leading_axes
from fgsm_repro.errors import ReproError
from fgsm_repro.models import (
    NHWC,
    Conv,
    ConvMaxout,
    MaxoutMLP,
    conv_nhwc,
    dense_product,
    kernel_layout_gradients,
    max_pool,
    maxout,
)


def _plain_maxout(z, pieces):
    return z.reshape(*z.shape[:-1], z.shape[-1] // pieces, pieces).max(axis=-1)


def test_maxout_gradient_is_the_max_gradient_without_ties():
    z = jax.random.normal(jax.random.PRNGKey(0), (7, 12))
    w = jax.random.normal(jax.random.PRNGKey(1), (7, 4))
    ours = jax.grad(lambda z_: (maxout(z_, 3) * w).sum())(z)
    plain = jax.grad(lambda z_: (_plain_maxout(z_, 3) * w).sum())(z)
    np.testing.assert_array_equal(maxout(z, 3), _plain_maxout(z, 3))
    np.testing.assert_array_equal(ours, plain)
    assert int((ours != 0).sum()) == 7 * 4  # one winning piece per unit
    # Forward mode works too (a custom JVP, not a custom VJP), and agrees.
    dz = jax.random.normal(jax.random.PRNGKey(2), z.shape)
    np.testing.assert_allclose(jax.jvp(lambda z_: maxout(z_, 3), (z,), (dz,))[1],
                               jax.jvp(lambda z_: _plain_maxout(z_, 3), (z,), (dz,))[1], rtol=1e-6)


def test_maxout_gradient_reaches_every_tied_piece_as_in_theano():
    z = jnp.array([[1.0, 3.0, 3.0, 0.0, 0.0, 0.0]])
    grad = jax.grad(lambda z_: (maxout(z_, 3) * jnp.array([[2.0, 5.0]])).sum())(z)
    np.testing.assert_array_equal(grad, [[0.0, 2.0, 2.0, 5.0, 5.0, 5.0]])


@pytest.mark.parametrize("shape", [
    dict(n=3, hw=9, cin=2, k=4, pad=((2, 2), (2, 2)), cout=5),
    dict(n=2, hw=5, cin=4, k=3, pad=((2, 1), (0, 3)), cout=3),  # uneven padding
    dict(n=2, hw=6, cin=3, k=2, pad=((3, 3), (0, 0)), cout=2),  # padding > kernel - 1: XLA's input gradient
])
def test_conv_gradients_are_laxs(shape):
    n, hw, cin, k, pad, cout = shape.values()
    x = jax.random.normal(jax.random.PRNGKey(0), (n, hw, hw + 1, cin))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, cin, cout))
    ours = lambda x_, w_: conv_nhwc(x_, w_, pad)  # noqa: E731
    plain = lambda x_, w_: lax.conv_general_dilated(x_, w_, (1, 1), pad, dimension_numbers=NHWC)  # noqa: E731
    np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-5, atol=1e-5)
    probe = jax.random.normal(jax.random.PRNGKey(2), plain(x, w).shape)
    for got, want in zip(jax.grad(lambda *a: (ours(*a) * probe).sum(), argnums=(0, 1))(x, w),
                         jax.grad(lambda *a: (plain(*a) * probe).sum(), argnums=(0, 1))(x, w), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x_shape, dims", [
    ((7, 5), (((1,), (0,)), ((), ()))),  # nn.Dense on a batch
    ((2, 3, 5), (((2,), (0,)), ((), ()))),  # nn.Dense on a batch of sequences
    ((5, 7), (((0,), (0,)), ((), ()))),  # another product: JAX's own rule
])
def test_dense_product_gradients_are_laxs(x_shape, dims):
    x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
    w = jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    plain = lambda x_, w_: lax.dot_general(x_, w_, dims)  # noqa: E731
    np.testing.assert_array_equal(dense_product(x, w, dims), plain(x, w))
    probe = jax.random.normal(jax.random.PRNGKey(2), plain(x, w).shape)
    for got, want in zip(jax.grad(lambda *a: (dense_product(*a, dims) * probe).sum(), argnums=(0, 1))(x, w),
                         jax.grad(lambda *a: (plain(*a) * probe).sum(), argnums=(0, 1))(x, w), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_kernel_layout_gradients_only_where_asked():
    model = MaxoutMLP(units=3, pieces=2, num_classes=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    f = lambda x_: model.apply({"params": params}, x_)  # noqa: E731
    jax.jvp(f, (x,), (x,))  # forward mode, as for any Flax model
    with kernel_layout_gradients():
        with pytest.raises(TypeError, match="custom_vjp"):  # the dense layers run through dense_product
            jax.jvp(f, (x,), (x,))
        inside = jax.grad(lambda p: model.apply({"params": p}, x).sum())(params)
    outside = jax.grad(lambda p: model.apply({"params": p}, x).sum())(params)
    for a, b in zip(jax.tree.leaves(inside), jax.tree.leaves(outside), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_conv_module_is_flax_conv():
    """Same parameters from the same key, same outputs, same gradients (input, kernel, bias)."""
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 9, 10, 4))
    ours, flax_conv = Conv(6, 3, 2), nn.Conv(6, (3, 3), padding=[(2, 2), (2, 2)])
    params = ours.init(jax.random.PRNGKey(1), x)
    jax.tree.map(np.testing.assert_array_equal, params, flax_conv.init(jax.random.PRNGKey(1), x))
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)  # bias != 0
    np.testing.assert_allclose(ours.apply(params, x), flax_conv.apply(params, x), rtol=1e-5, atol=1e-5)
    probe = jax.random.normal(jax.random.PRNGKey(3), flax_conv.apply(params, x).shape)
    grads = [jax.grad(lambda p, x_, m=m: (m.apply(p, x_) * probe).sum(), argnums=(0, 1))(params, x)
             for m in (ours, flax_conv)]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)
    model = ConvMaxout(channels=(2, 3, 2), units=3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    assert params["conv0"]["kernel"].shape == (8, 8, 3, 4) and params["maxout"]["kernel"].shape == (4 * 4 * 2, 15)


@pytest.mark.parametrize("shape", [(139392, 5), (96, 3), (25, 4), (4, 6, 6, 7)])
def test_blockwise_sum_over_leading_axes(shape):  # 16 blocks, 2 blocks, 1 block, a 4-d array
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    np.testing.assert_allclose(sum_leading_axes(x), np.asarray(x, np.float64).reshape(-1, shape[-1]).sum(0),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("shape,window,stride", [
    ((2, 33, 33, 3), 4, 2), ((2, 14, 15, 2), 4, 2), ((3, 8, 8, 2), 2, 2), ((2, 9, 9, 2), 3, 2), ((1, 10, 10, 1), 6, 3),
])
def test_max_pool_is_flax_max_pool(shape, window, stride):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    plain = lambda x_: nn.max_pool(x_, (window, window), strides=(stride, stride))  # noqa: E731
    np.testing.assert_array_equal(max_pool(x, window, stride), plain(x))
    probe = jax.random.normal(jax.random.PRNGKey(1), plain(x).shape)
    np.testing.assert_allclose(jax.grad(lambda x_: (max_pool(x_, window, stride) * probe).sum())(x),
                               jax.grad(lambda x_: (plain(x_) * probe).sum())(x), rtol=1e-5, atol=1e-6)


def test_conv_programs_compile_to_the_fast_forms():
    """The conv net's training epoch compiles without YNNPACK, and every convolution in it — the
    forward passes and both gradients — in XLA's canonical (Eigen) form; attacks compile without
    YNNPACK, dense training with XLA's defaults."""
    from fgsm_repro.config import TrainConfig
    from fgsm_repro.objectives import SOFTMAX
    from fgsm_repro.train import init_state, make_optimizer, make_train_epoch

    assert cpu_tuning.compiler_options(MaxoutMLP(units=3)) is None  # dense training keeps XLA's defaults
    assert cpu_tuning.compiler_options(MaxoutMLP(units=3), attack=True) == cpu_tuning.WITHOUT_YNNPACK
    model = ConvMaxout(channels=(2, 3, 2), units=3)
    cfg = TrainConfig(epochs=1, batch_size=2, max_col_norm=1.9365, optimizer=dict(learning_rate=0.1))
    tx = make_optimizer(cfg, 2)
    x, y = jnp.zeros((4, 32, 32, 3)), jnp.zeros((4,), jnp.int32)
    state = init_state(model, tx, np.zeros((1, 32, 32, 3), np.float32), 0)
    hlo = make_train_epoch(model, SOFTMAX, tx, cfg).lower(state, x, y).compile().as_text()
    convolutions = [line for line in hlo.splitlines() if " convolution(" in line]
    assert len(convolutions) == 3 * 3 - 1  # the first layer's input gradient is not needed
    assert all("dim_labels=b01f_01io->b01f" in c and "rhs_reversal" not in c for c in convolutions)
    assert "ynn" not in hlo.lower() and cpu_tuning.CONV_TUNING in cpu_tuning.applied()


SCRIPT = textwrap.dedent('''
    import json, jax, jax.numpy as jnp, numpy as np
    from fgsm_repro import cpu_tuning
    from fgsm_repro.models import MaxoutMLP
    from fgsm_repro.objectives import SOFTMAX
    from fgsm_repro.train import fit
    from tests.test_maxout import _recipe
    rng = np.random.default_rng(0)
    x = rng.random((300, 6), dtype=np.float32); y = rng.integers(0, 4, 300).astype(np.int32)
    # A small max-norm limit, so that the constraint binds on most columns from the first steps.
    cfg = _recipe(epochs=3, stage2=None, early_stopping_patience=None, max_col_norm=0.3)
    params = fit(MaxoutMLP(units=5, pieces=2, num_classes=4), SOFTMAX, cfg, x[:200], y[:200], x[200:], y[200:],
                 seed=0).params
    bits = jax.jit(lambda k: jax.random.bernoulli(k, 0.8, (50, 33)))
    print(json.dumps({
        "applied": cpu_tuning.applied(),
        "loop_in_bernoulli": "while" in bits.lower(jax.random.PRNGKey(3)).compile().as_text(),
        "bits": np.asarray(bits(jax.random.PRNGKey(3))).astype(int).tolist(),
        "uniform": np.asarray(jax.random.uniform(jax.random.PRNGKey(4), (20,))).tolist(),
        "params": [np.asarray(p).tolist() for p in jax.tree.leaves(params)],
    }))
''')


def _run(tuning: str) -> dict:
    env = {**os.environ, "FGSM_REPRO_CPU_TUNING": tuning, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_cpu_tuning_changes_speed_not_results():
    tuned, plain = _run("1"), _run("0")
    assert plain["applied"] == [] and plain["loop_in_bernoulli"]
    assert set(tuned["applied"]) == {cpu_tuning.REDUCE_FLAG, "threefry_unrolled"}
    assert not tuned["loop_in_bernoulli"]  # the unrolled lowering is the one compiled
    assert tuned["bits"] == plain["bits"] and tuned["uniform"] == plain["uniform"]  # the same random bits
    for a, b in zip(tuned["params"], plain["params"], strict=True):  # max-norm binding, dropout, FGSM term
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_xla_flag_leaves_a_users_setting_alone(monkeypatch):
    monkeypatch.setattr(cpu_tuning, "_applied", [])
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    cpu_tuning.set_xla_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    monkeypatch.setenv("FGSM_REPRO_CPU_TUNING", "0")
    cpu_tuning.set_xla_flags()
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    monkeypatch.setenv("FGSM_REPRO_CPU_TUNING", "1")
    cpu_tuning.set_xla_flags()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {cpu_tuning.REDUCE_FLAG}"
    assert cpu_tuning.applied() == [cpu_tuning.REDUCE_FLAG]


@pytest.mark.parametrize("value, conv, attack", [("1", True, True), ("0", False, False), ("conv", True, False),
                                                 ("attack, reduce", False, True), ("threefry", False, False)])
def test_cpu_tunings_are_picked_by_name(monkeypatch, value, conv, attack):
    monkeypatch.setattr(cpu_tuning, "_applied", [])
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("FGSM_REPRO_CPU_TUNING", value)
    assert (cpu_tuning.compiler_options(ConvMaxout(channels=(2, 3, 2), units=3)) is not None) == conv
    assert (cpu_tuning.compiler_options(MaxoutMLP(units=3), attack=True) is not None) == attack
    assert cpu_tuning.compiler_options(MaxoutMLP(units=3)) is None  # dense training: never
    cpu_tuning.set_xla_flags()
    assert (cpu_tuning.REDUCE_FLAG in os.environ.get("XLA_FLAGS", "")) == ("reduce" in value or value == "1")


def test_unknown_cpu_tuning_is_refused(monkeypatch):
    monkeypatch.setattr(cpu_tuning, "_applied", [])
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("FGSM_REPRO_CPU_TUNING", "reduce,fast")
    cpu_tuning.set_xla_flags()  # at import: leaves XLA alone, the CLI reports the error
    assert os.environ["XLA_FLAGS"] == "" and cpu_tuning.applied() == []
    with pytest.raises(ReproError, match="unknown tuning fast"):
        cpu_tuning.compiler_options(MaxoutMLP(units=3), attack=True)
