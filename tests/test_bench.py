"""The benchmark compares like with like: the PyTorch side computes what ours computes (same
logits, same recipe update, same FGSM examples). Timing itself is never tested."""

import json
import re
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgsm_repro.attacks import fgsm
from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.config import TrainConfig
from fgsm_repro.models import ConvMaxout, MaxoutMLP
from fgsm_repro.objectives import SOFTMAX
from fgsm_repro.train import init_state, make_optimizer, make_train_epoch

pytestmark = pytest.mark.bench  # needs PyTorch and torchattacks (make bench-deps)
torch = pytest.importorskip("torch")
torchattacks = pytest.importorskip("torchattacks")
from fgsm_repro.bench import WORKLOADS, BenchSettings  # noqa: E402
from fgsm_repro.bench.torch_side import ConvMaxout as TorchConvMaxout  # noqa: E402
from fgsm_repro.bench.torch_side import Maxout, Recipe, train_epoch  # noqa: E402
from fgsm_repro.bench.workloads import PAPER_RECIPE  # noqa: E402

NO_DROPOUT = dict(input_keep=1.0, hidden_keep=1.0)


def _data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def _pair(units=7, **kw):
    model = MaxoutMLP(units=units, weight_init=0.3, **kw)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    return model, params, Maxout(units, weight_init=0.3, **kw).load_flax(params)


def test_torch_maxout_computes_the_flax_logits():
    model, params, twin = _pair()
    x, _ = _data(16)
    expected = np.asarray(model.apply({"params": params}, x))
    got = twin.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("adversarial", [None, (0.5, 0.25)])
def test_torch_recipe_makes_the_same_updates_as_ours(adversarial):
    # Dropout off (the masks cannot match); large learning rate so that max-norm binds.
    recipe = {**PAPER_RECIPE, "optimizer": {**PAPER_RECIPE["optimizer"], "learning_rate": 2.0,
                                            "momentum_saturate_epoch": 2}, "max_col_norm": 1.0}
    cfg = TrainConfig(epochs=1, **recipe, adversarial=dict(zip(("alpha", "eps"), adversarial, strict=True))
                      if adversarial else None)
    model, params, twin = _pair(**NO_DROPOUT)
    x, y = _data(300)
    tx = make_optimizer(cfg, steps_per_epoch=3)
    state = init_state(model, tx, x, 0).replace(params=jax.tree.map(jnp.copy, params))  # the epoch donates it
    epoch = make_train_epoch(model, SOFTMAX, tx, cfg)
    torch_recipe = Recipe.from_config(twin, cfg, steps_per_epoch=3)  # as the benchmark builds it
    # Same batches: ours shuffles with its key; the torch epoch is given the data in that order.
    for _ in range(2):  # two epochs: the momentum schedule moves
        order = np.asarray(jax.random.permutation(jax.random.split(state.rng)[1], len(x)))
        state, _ = epoch(state, jnp.asarray(x), jnp.asarray(y))
        train_epoch(twin, torch_recipe, torch.from_numpy(x[order]).permute(0, 3, 1, 2),
                    torch.from_numpy(y[order]).long(), adversarial=adversarial, shuffle=False)
    for name in ("maxout0", "softmax"):  # it moved, and max-norm bound
        assert np.abs(np.asarray(state.params[name]["kernel"]) - np.asarray(params[name]["kernel"])).max() > 0.01
    norms = np.linalg.norm(np.asarray(state.params["maxout0"]["kernel"]), axis=0)
    assert norms.max() <= 1.0 + 1e-4 and np.mean(np.isclose(norms, 1.0, rtol=1e-4)) > 0.5
    for name, layer in zip(["maxout0", "maxout1", "softmax"], twin.layers(), strict=True):
        np.testing.assert_allclose(layer.weight.detach().numpy().T, np.asarray(state.params[name]["kernel"]),
                                   rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(layer.bias.detach().numpy(), np.asarray(state.params[name]["bias"]),
                                   rtol=1e-3, atol=1e-4)


SMALL_CONV = dict(channels=(4, 6, 5), units=7, weight_init=0.1)


def _conv_pair(**kw):
    model = ConvMaxout(**SMALL_CONV, **kw)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["params"]
    return model, params, TorchConvMaxout(**SMALL_CONV, **kw).load_flax(params)


def _cifar(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def test_torch_conv_maxout_computes_the_flax_logits():
    model, params, twin = _conv_pair()
    x, _ = _cifar(8)
    expected = np.asarray(model.apply({"params": params}, x))
    got = twin.eval()(torch.from_numpy(x).permute(0, 3, 1, 2)).detach().numpy()
    assert np.abs(expected).max() > 1e-3  # not trivially zero
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_torch_conv_recipe_makes_the_same_updates_as_ours():
    recipe = {**PAPER_RECIPE, "batch_size": 16, "max_col_norm": 0.5,
              "optimizer": {**PAPER_RECIPE["optimizer"], "learning_rate": 1.0}}
    cfg = TrainConfig(epochs=1, **recipe)
    model, params, twin = _conv_pair(**NO_DROPOUT)
    x, y = _cifar(48)
    tx = make_optimizer(cfg, steps_per_epoch=3)
    state = init_state(model, tx, x, 0).replace(params=jax.tree.map(jnp.copy, params))
    torch_recipe = Recipe(twin, steps_per_epoch=3, learning_rate=1.0, max_col_norm=0.5)
    order = np.asarray(jax.random.permutation(jax.random.split(state.rng)[1], len(x)))
    state, _ = make_train_epoch(model, SOFTMAX, tx, cfg)(state, jnp.asarray(x), jnp.asarray(y))
    train_epoch(twin, torch_recipe, torch.from_numpy(x[order]).permute(0, 3, 1, 2), torch.from_numpy(y[order]).long(),
                batch_size=16, shuffle=False)
    filter_norms = np.linalg.norm(np.asarray(state.params["conv1"]["kernel"]).reshape(-1, 12), axis=0)
    assert np.isclose(filter_norms, 0.5, rtol=1e-4).any()  # the kernel-norm constraint bound
    for i, conv in enumerate(twin.convs):
        np.testing.assert_allclose(conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                                   np.asarray(state.params[f"conv{i}"]["kernel"]), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(twin.maxout.weight.detach().numpy().T, np.asarray(state.params["maxout"]["kernel"]),
                               rtol=1e-3, atol=1e-4)


def test_torch_cifar_recipe_makes_the_same_updates_as_ours():
    # The CIFAR-10 recipe's extras: a linearly decaying lr, lr scales on the conv layers and
    # per-layer max-norms (augmentation off: its draws cannot match).
    cfg = TrainConfig(epochs=1, batch_size=16, lr_scale={"conv0": 0.05, "conv1": 0.05, "conv2": 0.05},
                      max_col_norm={"conv0": 0.3, "conv1": 0.5, "maxout": 0.6},
                      optimizer={"name": "classical_momentum", "learning_rate": 1.0, "linear_decay_to": 0.1,
                                 "linear_decay_epochs": 2, "momentum": 0.5, "final_momentum": 0.65,
                                 "momentum_saturate_epoch": 2})
    model, params, twin = _conv_pair(**NO_DROPOUT)
    x, y = _cifar(48)
    tx = make_optimizer(cfg, steps_per_epoch=3)
    state = init_state(model, tx, x, 0).replace(params=jax.tree.map(jnp.copy, params))
    epoch = make_train_epoch(model, SOFTMAX, tx, cfg)
    torch_recipe = Recipe.from_config(twin, cfg, steps_per_epoch=3)
    for _ in range(2):  # the lr decays and the momentum rises between the epochs
        order = np.asarray(jax.random.permutation(jax.random.split(state.rng)[1], len(x)))
        state, _ = epoch(state, jnp.asarray(x), jnp.asarray(y))
        train_epoch(twin, torch_recipe, torch.from_numpy(x[order]).permute(0, 3, 1, 2),
                    torch.from_numpy(y[order]).long(), batch_size=16, shuffle=False)
    filter_norms = np.linalg.norm(np.asarray(state.params["conv0"]["kernel"]).reshape(-1, 8), axis=0)
    assert np.isclose(filter_norms, 0.3, rtol=1e-4).any()  # conv0's own limit bound
    for i, conv in enumerate(twin.convs):
        np.testing.assert_allclose(conv.weight.detach().numpy().transpose(2, 3, 1, 0),
                                   np.asarray(state.params[f"conv{i}"]["kernel"]), rtol=1e-3, atol=1e-5)
    for name in ("maxout", "softmax"):
        np.testing.assert_allclose(getattr(twin, name).weight.detach().numpy().T,
                                   np.asarray(state.params[name]["kernel"]), rtol=1e-3, atol=1e-5)


def test_torch_augmentation_crops_the_padded_image_and_mirrors_it():
    from fgsm_repro.bench.torch_side import random_crop_flip

    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6) + 1
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        out = random_crop_flip(x, 2, True)
        assert out.shape == x.shape
        padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
        for i in range(len(x)):  # each output is one window of the padded image, maybe mirrored
            windows = {(dy, dx, flip) for dy in range(5) for dx in range(5) for flip in (False, True)
                       if torch.equal(out[i], (lambda v: v.flip(2) if flip else v)(padded[i, :, dy:dy + 6, dx:dx + 6]))}
            assert windows
            seen |= windows
    assert any(f for *_, f in seen) and any(not f for *_, f in seen) and len({(dy, dx) for dy, dx, _ in seen}) > 5


def test_torchattacks_fgsm_gives_our_clipped_fgsm_examples():
    from fgsm_repro.bench.torch_side import torchattack

    model, params, twin = _pair()
    x, y = _data(64)

    def loss_fn(x_, y_):
        return SOFTMAX.loss(model.apply({"params": params}, x_), y_).sum()

    ours = np.asarray(fgsm(loss_fn, jnp.asarray(x), jnp.asarray(y), 0.25, clip=(0.0, 1.0)))
    theirs = torchattack(twin.eval(), FGSM(eps=0.25, clip=(0.0, 1.0)))(torch.from_numpy(x).permute(0, 3, 1, 2),
                                                                       torch.from_numpy(y).long())
    theirs = theirs.permute(0, 2, 3, 1).numpy()
    assert np.mean(np.isclose(ours, theirs, atol=1e-6)) > 0.999  # a gradient within rounding of 0 may flip


def test_the_torch_side_attacks_with_each_workloads_settings():
    from fgsm_repro.bench.torch_side import torchattack

    net = Maxout(7).eval()
    expected = {"pgd10_test": (torchattacks.PGD, dict(eps=0.25, alpha=0.0625, steps=10, random_start=True)),
                "pgd_l2_test": (torchattacks.PGDL2, dict(eps=1.0, alpha=0.2, steps=10, random_start=True)),
                "deepfool_test": (torchattacks.DeepFool, dict(steps=50, overshoot=0.02)),
                "apgd_ce_test": (torchattacks.APGD, dict(eps=0.25, steps=100, n_restarts=1, loss="ce")),
                "square_test": (torchattacks.Square, dict(eps=0.25, n_queries=1000, n_restarts=1, p_init=0.8)),
                "jsma_test": (torchattacks.JSMA, dict(theta=1.0, gamma=0.125, targeted=True))}
    for name, (cls, settings) in expected.items():
        attack = torchattack(net, WORKLOADS[name].spec)
        assert type(attack) is cls and {k: getattr(attack, k) for k in settings} == settings, name
    # AutoAttack: the reference's standard sequence from torchattacks' attacks (its own AutoAttack runs 10 steps)
    sequence = torchattack(net, WORKLOADS["autoattack_test"].spec)
    assert type(sequence) is torchattacks.MultiAttack
    assert [(type(a).__name__, getattr(a, "steps", None) or a.n_queries, a.eps) for a in sequence.attacks] == [
        ("APGD", 100, 0.25), ("APGDT", 100, 0.25), ("FAB", 100, 0.25), ("Square", 5000, 0.25)]
    # C&W: the plain loop with every step run (torchattacks.CW stops early)
    assert torchattack(net, WORKLOADS["cw_test"].spec).keywords == dict(c=1.0, steps=50, lr=0.01)


def test_the_pgd_training_epochs_torch_side_makes_torchattacks_pgd_examples_and_trains_on_them():
    from fgsm_repro.bench.torch_side import epoch_calls, pgd_examples

    net = Maxout(7, weight_init=0.3).eval()
    x, y = _data(32)
    xt, yt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long()
    torch.manual_seed(3)
    ours = pgd_examples(net, xt, yt, 0.3, 5, 0.075)
    torch.manual_seed(3)
    theirs = torchattacks.PGD(net, eps=0.3, alpha=0.075, steps=5, random_start=True)(xt, yt)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    workload = WORKLOADS["maxout240_pgd_epoch"]
    call, = epoch_calls(MaxoutMLP(units=7), 1, workload.train_config(BenchSettings.quick()), x, y)
    assert call.keywords["pgd"] == (0.3, 10, 0.075) and call.args[5] is None  # no α-mix


def test_torchattacks_fgsm_on_the_torch_ensemble_gives_our_ensemble_fgsm_examples():
    from fgsm_repro.bench.torch_side import MeanProbabilityEnsemble as TorchEnsemble
    from fgsm_repro.evaluation import adversarial_examples
    from fgsm_repro.models import MeanProbabilityEnsemble, stack_members

    model = MaxoutMLP(units=7, weight_init=0.3)
    params = [model.init(jax.random.PRNGKey(i), jnp.zeros((1, 28, 28, 1)))["params"] for i in range(3)]
    twin = TorchEnsemble([Maxout(7, weight_init=0.3).load_flax(p) for p in params]).eval()
    x, y = _data(64)
    ours = adversarial_examples(MeanProbabilityEnsemble(model, 3), SOFTMAX, stack_members(params), x, y,
                                FGSM(eps=0.25, clip=(0.0, 1.0)))
    theirs = torchattacks.FGSM(twin, eps=0.25)(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y).long())
    assert np.mean(np.isclose(ours, theirs.permute(0, 2, 3, 1).numpy(), atol=1e-6)) > 0.999


def test_flop_counts_by_hand():
    s = BenchSettings(examples=100, test_examples=10, ensemble=12)
    forward = 2 * (784 * 1200 + 240 * 1200 + 240 * 10)
    assert WORKLOADS["fgsm_test"].flops(s) == 10 * 2 * forward
    assert WORKLOADS["pgd10_test"].flops(s) == 10 * 20 * forward
    clean = 3 * forward - 2 * 784 * 1200
    assert WORKLOADS["maxout240_clean_epoch"].flops(s) == 100 * clean
    assert WORKLOADS["maxout240_adv_epoch"].flops(s) == 100 * (2 * clean + 2 * 784 * 1200)
    assert WORKLOADS["maxout240_pgd_epoch"].flops(s) == 100 * (10 * 2 * forward + clean)  # 10 PGD steps, 1 update
    assert WORKLOADS["ensemble12_epoch"].flops(s) == 12 * 100 * clean
    assert WORKLOADS["ensemble12_fgsm_test"].flops(s) == 12 * 10 * 2 * forward
    # The conv net on 32x32x3: maps 33x33 (pool 4/2 -> 15), 14x14 (-> 6), 8x8 (-> 4), then 4*4*192 = 3072.
    conv = [2 * 33 * 33 * (8 * 8 * 3) * 192, 2 * 14 * 14 * (8 * 8 * 96) * 384, 2 * 8 * 8 * (5 * 5 * 192) * 384,
            2 * 3072 * 2500, 2 * 500 * 10]
    s = BenchSettings(conv_examples=7)
    assert WORKLOADS["convmaxout_cifar_epoch"].flops(s) == 7 * (3 * sum(conv) - conv[0])


def _product_flops(jaxpr, only_products: bool = True) -> int:
    """2·m·k·n of every dot_general in `jaxpr`, a loop's body counted once per iteration; with
    `only_products`, the program must do nothing else."""
    flops = 0
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            flops += eqn.params["length"] * _product_flops(eqn.params["jaxpr"], only_products)
        elif eqn.primitive.name == "dot_general":
            (contracted, _), _ = eqn.params["dimension_numbers"]
            flops += 2 * np.prod(eqn.outvars[0].aval.shape) * eqn.invars[0].aval.shape[contracted[0]]
        elif only_products:  # XLA folds the transposed weights into its dots; the loop counts
            assert eqn.primitive.name == "transpose" or all(v.aval.shape == () for v in eqn.outvars), eqn
    return flops


@pytest.mark.parametrize("name", ["fgsm_test", "pgd10_test", "ensemble12_fgsm_test"])
def test_the_products_alone_side_does_the_products_the_flops_count(name):
    s = BenchSettings(test_examples=2500, unit_scale=0.1)  # a full batch of 2000 and one of 500
    products, calls = WORKLOADS[name].products(s)
    assert len(calls) == 2
    assert sum(_product_flops(products.trace(*args).jaxpr) for args in calls) == WORKLOADS[name].flops(s)
    out = products(*calls[0])
    assert all(bool(jnp.isfinite(o).all()) for o in jax.tree.leaves(out))  # the steps keep the values finite


def _compiled_products(hlo: str) -> Counter:
    """The convolutions and dots of a compiled program: result shape, window, layouts, contraction."""
    found = Counter()
    for line in hlo.splitlines():
        if m := re.search(r"= (f32\[[\d,]*\])\S* (convolution|dot)\(", line):
            attrs = re.findall(r"(window=\{[^}]*\}|dim_labels=[^,\s]+|(?:lhs|rhs)_contracting_dims=\{[^}]*\})", line)
            found[(m.group(2), m.group(1), *attrs)] += 1
    return found


def test_the_conv_products_alone_are_the_epochs_products():
    """The conv epoch's products-alone side compiles to the very convolutions and dots of one
    training step of the epoch (same shapes, windows and layouts; no first-layer input gradient)."""
    from fgsm_repro.bench.workloads import synthetic

    w, s = WORKLOADS["convmaxout_cifar_epoch"], BenchSettings(conv_examples=256, unit_scale=0.1)
    products, calls = w.products(s)
    assert len(calls) == 2  # one call per minibatch of 128
    alone = _compiled_products(products.lower(*calls[0]).compile().as_text())
    cfg, model = w.train_config(s), w.model(s)
    tx, (x, y) = make_optimizer(cfg, 2), synthetic(256, 0, w.image_shape)
    epoch = make_train_epoch(model, SOFTMAX, tx, cfg).lower(init_state(model, tx, x, 0), jnp.asarray(x), jnp.asarray(y))
    in_epoch = _compiled_products(epoch.compile().as_text())
    assert alone == in_epoch and sum(alone.values()) == 3 * 3 - 1 + 3 * 2, alone
    assert all(bool(jnp.isfinite(o).all()) for o in jax.tree.leaves(products(*calls[0])))


def test_short_workloads_get_more_repetitions():
    from fgsm_repro.bench.timing import MAX_REPS, timed_reps

    s = BenchSettings()  # at least 5 repetitions, and 5 s of JAX time
    assert timed_reps(s, 3.6) == 5 and timed_reps(s, 0.4) == 13 and timed_reps(s, 1e-4) == MAX_REPS
    assert timed_reps(BenchSettings(reps=7), 0.4) == 13 and timed_reps(BenchSettings(reps=30), 0.4) == 30
    assert timed_reps(BenchSettings.quick(), 1e-4) == 1


def test_interleaving_alternates_calls_and_sums_each_side():
    from fgsm_repro.bench.timing import time_interleaved

    log = []
    a, b, c = ([lambda i=i, side=side: log.append(f"{side}{i}") for i in range(3)] for side in "abc")
    a_time, b_time = time_interleaved(a, b, settle=0.0)
    assert log == ["a0", "b0", "a1", "b1", "a2", "b2"] and a_time > 0 and b_time > 0
    log.clear()
    time_interleaved(a, b, first=1, settle=0.0)
    assert log == ["b0", "a0", "b1", "a1", "b2", "a2"]
    log.clear()
    time_interleaved(a[:1], b, first=1, settle=0.0)  # one call against three: each side whole
    assert log == ["b0", "b1", "b2", "a0"]
    log.clear()
    assert len(time_interleaved(a, b, c, first=2, settle=0.0)) == 3
    assert log == ["c0", "a0", "b0", "c1", "a1", "b1", "c2", "a2", "b2"]


def test_bench_cli_writes_the_comparison(tmp_path):
    from typer.testing import CliRunner

    from fgsm_repro.cli import app

    names = ["maxout240_adv_epoch", "fgsm_test", "convmaxout_cifar_epoch", "ensemble12_epoch"]
    result = CliRunner().invoke(app, ["bench", "--quick", *names, "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "bench.quick.json").read_text())
    assert [w["name"] for w in record["workloads"]] == names
    for w in record["workloads"]:
        assert w["jax_seconds"] > 0 and w["torch_seconds"] > 0
        # the median of the repetitions' own ratios; the ratio of the medians beside it
        ratios = [t / j for j, t in zip(w["jax_runs"], w["torch_runs"], strict=True)]
        assert w["speedup_runs"] == pytest.approx(ratios)
        assert w["speedup"] == pytest.approx(float(np.median(ratios)))
        assert w["speedup_of_medians"] == pytest.approx(w["torch_seconds"] / w["jax_seconds"])
        # the ensemble's members (3 in --quick) alternate between the sides on a CPU
        assert w["calls_interleaved"] == (3 if w["name"] == "ensemble12_epoch" else 1)
        # the bound at the peak measured beside this workload's repetitions (one per repetition)
        assert len(w["matmul_peak_runs"]) == w["reps"] == record["settings"]["reps"]
        assert w["bound_seconds"] == pytest.approx(w["flops"] / (w["matmul_peak_gflops"] * 1e9))
        # an attack's (the conv epoch's) products alone, timed in the same repetitions
        assert ("products_runs" in w) == (w["name"] in ("fgsm_test", "convmaxout_cifar_epoch"))
        if "products_runs" in w:
            assert len(w["products_runs"]) == w["reps"]
            shares = [p / j for p, j in zip(w["products_runs"], w["jax_runs"], strict=True)]
            assert w["products_share"] == pytest.approx(float(np.median(shares)))
            assert w["products_roofline_fraction"] == pytest.approx(w["bound_seconds"] / w["products_seconds"])
    assert record["provenance"]["machine"]["versions"]["torch"].startswith("2.13.0")
    from fgsm_repro.report import bench_section

    (tmp_path / "bench.json").write_text((tmp_path / "bench.quick.json").read_text())
    section = "\n".join(bench_section(tmp_path))
    assert "{" not in section and "}" not in section  # every field formatted
    for w in record["workloads"]:
        assert f"| {w['speedup']:.2f}x | {w['speedup_of_medians']:.2f}x |" in section
        products = f"{100 * w['products_roofline_fraction']:.0f}%" if "products_seconds" in w else "—"
        assert f"{100 * w['torch_roofline_fraction']:.0f}% | {products} | {w['jax_compile_seconds']:.2f} |" in section
    bad = CliRunner().invoke(app, ["bench", "--quick", "nope", "--results-dir", str(tmp_path)])
    assert bad.exit_code != 0


def test_bench_compiles_rather_than_loading_the_compilation_cache(tmp_path, no_jax_cache_env):
    import os
    import subprocess
    import sys

    env = {**os.environ, "FGSM_REPRO_JAX_CACHE": str(tmp_path / "jax-cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "fgsm_repro.cli", "bench", "--quick", "fgsm_test",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    # The other commands fill the cache (tests/test_cli.py); the bench's compile column measures compiling.
    cache = tmp_path / "jax-cache"
    assert not cache.exists() or not any(cache.iterdir())


def test_data_parallel_bench_times_one_device_in_the_same_run(tmp_path):
    from typer.testing import CliRunner

    from fgsm_repro.cli import app
    from fgsm_repro.report import bench_section

    names = ["maxout240_clean_epoch", "ensemble12_epoch"]
    result = CliRunner().invoke(app, ["bench", "--quick", "--data-parallel", *names, "--results-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / f"bench.quick.dp{jax.device_count()}.json").read_text())
    for w in record["workloads"]:
        assert len(w["one_device_runs"]) == w["reps"]
        ratios = [one / split for one, split in zip(w["one_device_runs"], w["jax_runs"], strict=True)]
        assert w["scaling"] == pytest.approx(float(np.median(ratios)))
        assert w["one_device_seconds"] == pytest.approx(float(np.median(w["one_device_runs"])))
    (tmp_path / "bench.json").write_text(json.dumps(record))
    (tmp_path / "bench.dp2.json").write_text(json.dumps(record))
    section = "\n".join(bench_section(tmp_path))
    assert "{" not in section and "}" not in section
    for w in record["workloads"]:
        assert f"| {w['name']} | {record['devices']} | {w['jax_seconds']:.3f} | {w['one_device_seconds']:.3f} | " \
               f"{w['scaling']:.2f}x |" in section


def test_torch_mpdbm_cost_is_ours_on_the_same_weights_and_targets():
    from fgsm_repro.bench.torch_side import MPDBM as TorchMPDBM
    from fgsm_repro.mpdbm import MPDBM, Targets, multi_prediction_cost

    model = MPDBM(units=(12, 9), steps=4, sparse_init=(None, None, None), weight_init=0.3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))["params"]
    params = {**params, "visible": {"bias": jnp.linspace(-1, 1, 784)}}
    twin = TorchMPDBM((12, 9), steps=4)
    with torch.no_grad():
        for name, layer in twin.named_layers().items():
            layer.weight.copy_(torch.from_numpy(np.asarray(params[name]["kernel"]).T.copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"]).copy()))
        twin.visible_bias.copy_(torch.from_numpy(np.asarray(params["visible"]["bias"]).copy()))
    rng = np.random.default_rng(0)
    v = rng.integers(0, 2, (5, 784)).astype(np.float32)
    free, label_free = rng.integers(0, 2, (5, 784)).astype(np.float32), np.array([1, 0, 1, 1, 0], np.float32)
    y = rng.integers(0, 10, 5)
    ours = multi_prediction_cost(params, jnp.asarray(v), jnp.asarray(y), Targets(free, label_free), 4)
    theirs = twin.cost_of(*(torch.from_numpy(a) for a in (v, free, label_free)), torch.from_numpy(y).long())
    np.testing.assert_allclose(theirs.detach().numpy(), ours, rtol=1e-5)


def test_mpdbm_flops_are_the_products_of_its_training_inference():
    from fgsm_repro.bench.workloads import mpdbm_forward_flops
    from fgsm_repro.mpdbm import mean_field

    w, s = WORKLOADS["mpdbm_epoch"], BenchSettings(examples=100, unit_scale=0.01)
    model = w.model(s)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 784)))["params"]
    v, y = jnp.zeros((1, 784)), jnp.zeros((1, 10))
    traced = jax.make_jaxpr(lambda p: mean_field(p, v, v, y, jnp.ones((1, 1)), model.steps, label_first=True))(params)
    assert _product_flops(traced.jaxpr, only_products=False) == mpdbm_forward_flops(model)
    assert w.flops(s) == 3 * 100 * mpdbm_forward_flops(model)
