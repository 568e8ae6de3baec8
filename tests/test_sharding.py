"""Data parallelism over several (forced host) devices, in one process or two, gives the
single-device results."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, run_two_processes

pytestmark = pytest.mark.slow  # every test starts JAX processes of its own

SCRIPT = textwrap.dedent(r'''
    from fgsm_repro.runtime import Runtime
    Runtime.from_env(compilation_cache=False).apply()  # with FGSM_REPRO_DISTRIBUTED=1: before any computation
    import json, re, jax, jax.numpy as jnp, numpy as np
    from fgsm_repro.attacks.fgsm import FGSM
    from fgsm_repro.evaluation import adversarial_examples, predict
    from fgsm_repro.models import MaxoutMLP
    from fgsm_repro.objectives import SOFTMAX
    from fgsm_repro.sharding import data_mesh
    from fgsm_repro.train import Data, Trainer, fit, init_state, make_optimizer, make_train_epoch
    from tests.test_maxout import _recipe
    assert jax.device_count() == 4
    rng = np.random.default_rng(0)
    x = rng.random((400, 6), dtype=np.float32); y = rng.integers(0, 4, 400).astype(np.int32)
    model = MaxoutMLP(units=5, pieces=2, layers=2, num_classes=4)
    out = {"mesh_processes": sorted({d.process_index for d in data_mesh().devices.flat})}
    runs = {}
    for parallel in (False, True):
        cfg = _recipe(epochs=3, stage2=None, early_stopping_patience=None, data_parallel=parallel,
                      adversarial={"alpha": 0.5, "eps": 0.25})
        runs[parallel] = fit(Trainer(model, SOFTMAX, cfg), Data(x[:300], y[:300], x[300:], y[300:]), [0])[0].params
    out["max_param_diff"] = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
                                for a, b in zip(jax.tree.leaves(runs[False]), jax.tree.leaves(runs[True])))
    cfg = _recipe(epochs=1, data_parallel=True)
    tx = make_optimizer(cfg, 15)
    epoch = make_train_epoch(model, SOFTMAX, tx, cfg)
    state = init_state(model, tx, x, 0)
    compiled = epoch.lower(state, jnp.asarray(x), jnp.asarray(y)).compile().as_text()
    out["all_reduce"] = "all-reduce" in compiled
    reduced = " ".join(line.split(" all-reduce(")[0] for line in compiled.splitlines() if " all-reduce(" in line)
    out["reduced_matrices"] = sorted(set(re.findall(r"f32\[\d+,\d+\]", reduced)))
    out["kernels"] = sorted({"f32[%d,%d]" % k.shape for k in jax.tree.leaves(state.params) if k.ndim == 2})
    lowered = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, _, **kw: lowered.append(kw.get("fun_name")) if event.endswith("jaxpr_to_mlir_module_duration")
        else None)
    fresh, state = make_train_epoch(model, SOFTMAX, tx, cfg), init_state(model, tx, x, 1)
    for _ in range(3):
        state, _ = fresh(state, jnp.asarray(x), jnp.asarray(y))
    out["epoch_compiles"] = lowered.count("jit(train_epoch)")
    attack, mesh = FGSM(eps=0.25), data_mesh()
    x, y = x[:398], y[:398]  # batches of 200 split across the devices, and 198 that does not split
    single = adversarial_examples(model, SOFTMAX, runs[False], x, y, attack, batch_size=200)
    split = adversarial_examples(model, SOFTMAX, runs[False], x, y, attack, batch_size=200, mesh=mesh)
    logits = predict(model, SOFTMAX, runs[False], x, batch_size=200, mesh=mesh)[2]
    out["attack_equal"] = float(np.mean(single == split))
    out["logit_diff"] = float(np.abs(logits - predict(model, SOFTMAX, runs[False], x, batch_size=200)[2]).max())
    print(json.dumps(out))
''')


def _check(out: dict, processes: list[int]) -> None:
    assert out["mesh_processes"] == processes  # the mesh spans the devices of every process
    assert out["all_reduce"]  # the gradients really are reduced across the devices
    assert out["reduced_matrices"] == out["kernels"]  # in the kernels' layout (ops.dense.dense_product)
    assert out["epoch_compiles"] == 1  # not again when the state comes back replicated over the mesh
    assert out["max_param_diff"] < 1e-4
    assert out["attack_equal"] > 0.999 and out["logit_diff"] < 1e-5


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu", **extra}


def test_data_parallel_training_and_attacks_match_one_device():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=_env(), timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(json.loads(proc.stdout.strip().splitlines()[-1]), processes=[0])


def test_two_processes_train_and_attack_as_one_device():
    """Two processes of two devices each, as on two hosts."""
    for stdout, _ in run_two_processes([sys.executable, "-c", SCRIPT],
                                       _env(XLA_FLAGS="--xla_force_host_platform_device_count=2")):
        _check(json.loads(stdout.strip().splitlines()[-1]), processes=[0, 1])


def test_a_bad_process_count_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "fgsm_repro.cli", "report", "--list"], capture_output=True,
                          text=True, cwd=REPO, timeout=300,
                          env=_env(FGSM_REPRO_DISTRIBUTED="1", JAX_NUM_PROCESSES="two"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: JAX_NUM_PROCESSES='two' is not a whole number"
