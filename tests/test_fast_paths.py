"""The fast paths compile and train as intended: the dense kernel gradients in the kernel's layout
only where asked, the conv programs in XLA's fast forms, and the CPU tunings of
fgsm_repro.cpu_tuning (same random bits, same training up to float rounding). That each op of
fgsm_repro.ops computes what its reference does: tests/test_ops.py."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro import cpu_tuning
from fgsm_repro.errors import ReproError
from fgsm_repro.models import ConvMaxout, MaxoutMLP
from fgsm_repro.ops.dense import dense_product
from fgsm_repro.runtime import Runtime


def test_kernel_layout_gradients_only_where_asked():
    model = MaxoutMLP(units=3, pieces=2, num_classes=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    params = model.init(jax.random.PRNGKey(1), x)["params"]
    jax.jvp(lambda x_: model.apply({"params": params}, x_), (x,), (x,))  # forward mode, as for any Flax model
    laid_out = model.clone(dot_general=dense_product)  # as the data-parallel training step asks
    with pytest.raises(TypeError, match="custom_vjp"):  # the dense layers run through dense_product
        jax.jvp(lambda x_: laid_out.apply({"params": params}, x_), (x,), (x,))
    inside = jax.grad(lambda p: laid_out.apply({"params": p}, x).sum())(params)
    outside = jax.grad(lambda p: model.apply({"params": p}, x).sum())(params)
    for a, b in zip(jax.tree.leaves(inside), jax.tree.leaves(outside), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


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
    from fgsm_repro.runtime import Runtime
    Runtime.from_env(compilation_cache=False).apply()
    import json, jax, jax.numpy as jnp, numpy as np
    from fgsm_repro import cpu_tuning
    from fgsm_repro.models import MaxoutMLP
    from fgsm_repro.objectives import SOFTMAX
    from fgsm_repro.train import Data, Trainer, fit
    from tests.test_maxout import _recipe
    rng = np.random.default_rng(0)
    x = rng.random((300, 6), dtype=np.float32); y = rng.integers(0, 4, 300).astype(np.int32)
    # A small max-norm limit, so that the constraint binds on most columns from the first steps.
    cfg = _recipe(epochs=3, stage2=None, early_stopping_patience=None, max_col_norm=0.3)
    params = fit(Trainer(MaxoutMLP(units=5, pieces=2, num_classes=4), SOFTMAX, cfg),
                 Data(x[:200], y[:200], x[200:], y[200:]), [0])[0].params
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


@pytest.mark.slow  # a subprocess or a long training
def test_cpu_tuning_changes_speed_not_results():
    tuned, plain = _run("1"), _run("0")
    assert plain["applied"] == [] and plain["loop_in_bernoulli"]
    assert set(tuned["applied"]) == {cpu_tuning.REDUCE_FLAG, "threefry_unrolled"}
    assert not tuned["loop_in_bernoulli"]  # the unrolled lowering is the one compiled
    assert tuned["bits"] == plain["bits"] and tuned["uniform"] == plain["uniform"]  # the same random bits
    for a, b in zip(tuned["params"], plain["params"], strict=True):  # max-norm binding, dropout, FGSM term
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.fixture
def tunings(monkeypatch):
    """cpu_tuning's state restored after the test (the session's runtime applied them all)."""
    monkeypatch.setattr(cpu_tuning, "_applied", [])
    monkeypatch.setattr(cpu_tuning, "_selected", cpu_tuning.selected())
    monkeypatch.setattr(cpu_tuning, "unroll_threefry", lambda: None)  # registered once per process


def test_xla_flag_leaves_a_users_setting_alone(monkeypatch, tunings):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=dot")
    cpu_tuning.configure(cpu_tuning.parse("1"))
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=dot"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    cpu_tuning.configure(cpu_tuning.parse("0"))
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"
    cpu_tuning.configure(cpu_tuning.parse("1"))
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=2 {cpu_tuning.REDUCE_FLAG}"
    assert cpu_tuning.applied() == [cpu_tuning.REDUCE_FLAG]


@pytest.mark.parametrize("value, conv, attack", [("1", True, True), ("0", False, False), ("conv", True, False),
                                                 ("attack, reduce", False, True), ("threefry", False, False)])
def test_cpu_tunings_are_picked_by_name(monkeypatch, tunings, value, conv, attack):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    Runtime.from_env({"FGSM_REPRO_CPU_TUNING": value}, compilation_cache=False).apply()
    assert (cpu_tuning.compiler_options(ConvMaxout(channels=(2, 3, 2), units=3)) is not None) == conv
    assert (cpu_tuning.compiler_options(MaxoutMLP(units=3), attack=True) is not None) == attack
    assert cpu_tuning.compiler_options(MaxoutMLP(units=3)) is None  # dense training: never
    assert (cpu_tuning.REDUCE_FLAG in os.environ.get("XLA_FLAGS", "")) == ("reduce" in value or value == "1")


def test_unknown_cpu_tuning_is_refused():
    with pytest.raises(ReproError, match="unknown tuning fast"):
        Runtime.from_env({"FGSM_REPRO_CPU_TUNING": "reduce,fast"})


@pytest.mark.slow  # a subprocess or a long training
def test_importing_the_package_changes_nothing_global():
    """No XLA flag, no lowering rule, no tuning until a Runtime is applied."""
    code = ("import os, sys; import fgsm_repro.cli, fgsm_repro.models, fgsm_repro.attacks, fgsm_repro.train, "
            "fgsm_repro.evaluation, fgsm_repro.experiments.runner; from fgsm_repro import cpu_tuning; "
            "print(repr(os.environ.get('XLA_FLAGS')), cpu_tuning.applied(), sorted(cpu_tuning.selected()))")
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_COMPILATION_CACHE_DIR")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["None", "[]", "[]"]
