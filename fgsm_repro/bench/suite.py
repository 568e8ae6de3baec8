"""The benchmark suite: each workload timed in our JAX implementation and in an equivalent eager
PyTorch one (torchattacks for the attacks), interleaved in one run after warm-up, with medians,
the speed ratio, and achieved GFLOP/s against the machine's measured matmul peak.

Each repetition runs both sides back to back (an ensemble member by member, the two sides
alternating, and which side goes first alternating between repetitions); the speed ratio is the
median over the repetitions of the ratio within each, so that a slow stretch of the machine
slows both sides of a ratio rather than one side's median. A data-parallel run adds a third side,
the same JAX workload on one device, to the same repetitions; its scaling is likewise the median
of the ratios within them. An attack, and the conv epoch, add their products alone
(:func:`products_calls`) as a side, to show how close to the bound JAX's matrix products and
convolutions come here by themselves (one device; not in data-parallel runs). Extra sides run
after the JAX and PyTorch pair. A short workload gets more repetitions (:func:`timed_reps`): one
run is noisy on this machine.

FLOPs count the dense matrix products only (2·m·k·n each): a training step is a forward pass,
the backward pass to the activations and to the weights (the first layer's input gradient is
not needed, except when the adversarial objective needs ∇ₓ); an attack step is a forward pass
and the backward pass to the input. A conv layer counts as its dense-equivalent product at every
output position, each of its gradients as much as its forward pass (the conv net's input
gradients as compiled, forward convolutions of the padded gradient, do ~1% more in all). The
arithmetic bound of a workload is its FLOPs at the matmul peak — no implementation can beat it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fgsm_repro import cpu_tuning
from fgsm_repro.bench.geometry import conv_layers, layer_shapes
from fgsm_repro.config import FGSM, PGD, CarliniWagnerL2, DeepFool, TrainConfig
from fgsm_repro.errors import ReproError
from fgsm_repro.ops.host import host_aligned, host_empty
from fgsm_repro.sharding import data_mesh
from fgsm_repro.train import seeds_together_by_default

PAPER_RECIPE = dict(
    batch_size=100, max_col_norm=1.9365,
    optimizer=dict(name="classical_momentum", learning_rate=0.1, lr_decay_factor=1.000004, min_learning_rate=1e-6,
                   momentum=0.5, final_momentum=0.7, momentum_saturate_epoch=250))
ADVERSARIAL = (0.5, 0.25)  # alpha, eps of §6
ATTACK_EPS, PGD_STEPS = 0.25, 10
# The attacks as the project runs them (fgsm_repro.evaluation.adversarial_examples), clipped to the
# pixel range like torchattacks; PGD with step eps/4 and a random start, like torchattacks.PGD below.
# PGD-L2: torchattacks.PGDL2's defaults (eps 1, step .2) with its random start; DeepFool:
# torchattacks.DeepFool's (L2, 50 steps, overshoot .02); C&W: torchattacks.CW's settings, which
# have no search over c (one c = 1, 50 Adam steps of .01), run by a plain PyTorch loop on the
# torch side (torch_side.cw_l2) because torchattacks.CW's early stop makes its work vary.
L2_EPS, CW_STEPS = 1.0, 50
ATTACKS = {"fgsm": FGSM(eps=ATTACK_EPS, clip=(0.0, 1.0)),
           "pgd": PGD(eps=ATTACK_EPS, steps=PGD_STEPS, step_size=ATTACK_EPS / 4, clip=(0.0, 1.0)),
           "pgd_l2": PGD(eps=L2_EPS, norm=2, steps=PGD_STEPS, step_size=0.2, clip=(0.0, 1.0)),
           "deepfool": DeepFool(norm=2, overshoot=0.02, max_iter=50, clip=(0.0, 1.0)),
           "cw": CarliniWagnerL2(initial_const=1.0, binary_search_steps=1, steps=CW_STEPS, learning_rate=0.01)}
ATTACK_KINDS = ("fgsm", "pgd", "pgd_l2", "deepfool", "cw", "ensemble_fgsm")
TARGET_SPEEDUP, TARGET_ROOFLINE = 1.5, 0.9
PEAK_REPS = 5  # matmuls per peak measurement beside each timed repetition
MAX_REPS = 25  # however short the workload (each repetition also pauses SETTLE_S per side)
# A pause before each timed run: the other side's worker threads spin for a while after its last
# call (PyTorch's OpenMP pool slowed the next 240-unit JAX epoch by ~10%, measured).
SETTLE_S = 0.5


@dataclass(frozen=True)
class BenchSettings:
    examples: int = 10_000  # training examples per timed epoch (the report scales to 50k)
    test_examples: int = 10_000  # images attacked per timed attack
    conv_examples: int = 512  # CIFAR-sized training examples per timed conv epoch (4 batches of 128)
    reps: int = 5  # timed repetitions per side, after warm-up: at least this many ...
    min_timed_seconds: float = 5.0  # ... and more for a short workload, until its JAX side is timed this long
    minimal_examples: int = 1_000  # images per timed DeepFool / C&W (torchattacks runs DeepFool image by image)
    ensemble: int = 12
    unit_scale: float = 1.0  # < 1 shrinks the networks (smoke runs of the suite itself)
    threads: int | None = None  # torch intra-op threads; None: torch's default
    data_parallel: bool = False  # JAX side split across all devices (fgsm_repro.sharding)

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(examples=400, test_examples=400, conv_examples=256, reps=1, min_timed_seconds=0.0, ensemble=3,
                   unit_scale=0.05, minimal_examples=40)


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    units: int
    # "clean", "adversarial", "ensemble", "fgsm", "pgd", "pgd_l2", "deepfool", "cw", "ensemble_fgsm"
    # (FGSM against a whole ensemble), "conv", "cifar" (the CIFAR-10 recipe's epoch), "mpdbm" (the
    # MP-DBM's multi-prediction epoch; `units` is its first hidden layer, the others follow its config)
    kind: str

    @property
    def convolutional(self) -> bool:
        return self.kind in ("conv", "cifar")

    def width(self, s: BenchSettings) -> int:
        return max(2, round(self.units * s.unit_scale))

    def model(self, s: BenchSettings):
        from fgsm_repro.models import ConvMaxout, MaxoutMLP

        if self.kind == "mpdbm":
            return mpdbm_model(s.unit_scale)
        if self.convolutional:
            return ConvMaxout(channels=tuple(max(2, round(c * s.unit_scale)) for c in ConvMaxout.channels),
                              units=self.width(s))
        return MaxoutMLP(units=self.width(s))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        from fgsm_repro.data.sources import IMAGE_SHAPE

        return IMAGE_SHAPE["cifar10" if self.convolutional else "mnist"]

    def examples(self, s: BenchSettings) -> int:
        return {"fgsm": s.test_examples, "pgd": s.test_examples, "pgd_l2": s.test_examples,
                "ensemble_fgsm": s.test_examples, "deepfool": s.minimal_examples, "cw": s.minimal_examples,
                "conv": s.conv_examples,
                "cifar": s.conv_examples}.get(self.kind, s.examples)

    def dense_shapes(self, s: BenchSettings) -> list[tuple[int, int]]:
        """(in, out) of each layer's dense product per example (a conv's: at every position)."""
        if self.convolutional:
            return [(pos * k, n) for pos, k, n in layer_shapes(self.model(s), *self.image_shape)]
        units, pieces, d_in, classes = self.width(s), 5, 784, 10
        return [(d_in, units * pieces), (units, units * pieces), (units, classes)]

    def flops(self, s: BenchSettings) -> float | None:
        """The workload's dense-product FLOPs; None for DeepFool, whose steps per image vary."""
        if self.kind == "deepfool":
            return None
        if self.kind == "mpdbm":  # every product of the unrolled inference, and both its gradients
            return float(3 * mpdbm_forward_flops(self.model(s)) * self.examples(s))
        shapes = self.dense_shapes(s)
        forward = sum(2 * k * n for k, n in shapes)  # per example
        first_input_grad = 2 * shapes[0][0] * shapes[0][1]
        train = 3 * forward - first_input_grad
        per_example = {"clean": train, "conv": train, "cifar": train, "ensemble": s.ensemble * train,
                       "adversarial": 2 * train + first_input_grad, "fgsm": 2 * forward,
                       "pgd": PGD_STEPS * 2 * forward, "pgd_l2": PGD_STEPS * 2 * forward,
                       "cw": CW_STEPS * 2 * forward, "ensemble_fgsm": s.ensemble * 2 * forward}[self.kind]
        return float(per_example * self.examples(s))


WORKLOADS = {w.name: w for w in [
    Workload("maxout240_clean_epoch", "training epoch, maxout 2x240x5, faithful recipe", 240, "clean"),
    Workload("maxout240_adv_epoch", "adversarial-training epoch (alpha .5, eps .25), maxout 240", 240, "adversarial"),
    Workload("maxout1600_clean_epoch", "training epoch, maxout 2x1600x5, faithful recipe", 1600, "clean"),
    Workload("maxout1600_adv_epoch", "adversarial-training epoch, maxout 1600", 1600, "adversarial"),
    Workload("ensemble12_epoch", "training epoch of a 12-member ensemble of maxout 240", 240, "ensemble"),
    Workload("fgsm_test", "FGSM eps .25 (clipped to [0,1]) on the test images, maxout 240", 240, "fgsm"),
    Workload("pgd10_test", "PGD-10 eps .25, step eps/4, random start, on the test images, maxout 240", 240, "pgd"),
    Workload("pgd_l2_test", "PGD-10 L2 eps 1, step .2, random start, on the test images, maxout 240", 240, "pgd_l2"),
    Workload("deepfool_test", "DeepFool L2 (50 steps at most, overshoot .02) on 1,000 test images, maxout 240",
             240, "deepfool"),
    Workload("cw_test", "Carlini-Wagner L2, c = 1, 50 Adam steps of .01, on 1,000 test images, maxout 240", 240,
             "cw"),
    Workload("ensemble12_fgsm_test", "FGSM eps .25 (clipped to [0,1]) against a 12-member mean-probability "
             "ensemble of maxout 240 (S9.ens_all), on the test images", 240, "ensemble_fgsm"),
    Workload("convmaxout_cifar_epoch", "training epoch, conv maxout with the CIFAR-10 recipe's layers on CIFAR-sized "
             "input, batch 128, the maxout recipe's optimizer, max-norm 1.9365 on every layer, dropout", 500, "conv"),
    Workload("convmaxout_cifar_recipe_epoch", "training epoch of the CIFAR-10 recipe as T1.convmaxout trains it: "
             "the same net, random crops (pad 8) and flips, conv lr scale .05, per-layer max-norms, linearly "
             "decaying lr, dropout", 500, "cifar"),
    Workload("mpdbm_epoch", "multi-prediction training epoch of the MNIST MP-DBM as S9.mpdbm trains it "
             "(784-2087-3200-10, 14 mean-field sweeps backpropagated, sampled pixels and targets, the "
             "recipe's momentum, linear decay and max-norms)", 2087, "mpdbm"),
]}
CONV_BATCH = 128  # the CIFAR-10 recipe's


def _synthetic(n: int, seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Random images, in memory laid out as :func:`fgsm_repro.data.splits.make_splits` lays out
    real ones: the timing does not depend on the pixel values."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32, out=host_empty((n, *shape), np.float32))
    return x, host_aligned(rng.integers(0, 10, n).astype(np.int32))


def _recipe(w: Workload) -> dict:
    return PAPER_RECIPE | ({"batch_size": CONV_BATCH} if w.kind == "conv" else {})


def cifar_recipe() -> TrainConfig:
    """The train section of ``configs/t1_convmaxout.yaml`` (its paper profile): the CIFAR workload
    times the recipe the experiment runs."""
    from fgsm_repro.config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / "t1_convmaxout.yaml").train


def mpdbm_config():
    """``configs/s9_mpdbm.yaml`` at its paper profile: the MP-DBM workload times what S9.mpdbm trains."""
    from fgsm_repro.config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / "s9_mpdbm.yaml")


def mpdbm_model(unit_scale: float = 1.0):
    """S9.mpdbm's MP-DBM, its hidden layers times `unit_scale`."""
    from fgsm_repro.models import build_model

    options = dict(mpdbm_config().model_of("mpdbm").options)
    options["units"] = [max(2, round(u * unit_scale)) for u in options["units"]]
    return build_model("mpdbm", options)[0]


def mpdbm_forward_flops(model) -> int:
    """Per example, the dense products of the MP-DBM's training inference
    (:func:`fgsm_repro.mpdbm.mean_field` with ``label_first``): the doubled pass, h¹ again with the
    label's input, then each later sweep's six products."""
    (n0, n1), d, k = model.units, model.visible, model.num_classes
    sweep = 2 * d * n0 + 2 * n0 * n1 + 2 * n1 * k
    return 2 * (d * n0 + n0 * n1 + n0 * n1 + n1 * k + (model.steps - 1) * sweep)


def _train_config(w: Workload, s: BenchSettings) -> TrainConfig:
    if w.kind == "cifar":
        return cifar_recipe().model_copy(update={"epochs": 1, "data_parallel": s.data_parallel})
    if w.kind == "mpdbm":
        return mpdbm_config().train_of("mpdbm").model_copy(update={"epochs": 1, "data_parallel": s.data_parallel})
    return TrainConfig(epochs=1, **_recipe(w), data_parallel=s.data_parallel,
                       adversarial=dict(zip(("alpha", "eps"), ADVERSARIAL, strict=True))
                       if w.kind == "adversarial" else None)


# --- the JAX side: the project's own code paths -------------------------------------------------

def _jax_side(w: Workload, s: BenchSettings) -> list[Callable[[], Any]]:
    """The workload as a list of calls (one per ensemble member trained in turn, else one)."""
    from fgsm_repro.evaluation import adversarial_examples
    from fgsm_repro.objectives import SOFTMAX
    from fgsm_repro.train import init_state, make_optimizer, make_train_epoch

    model = w.model(s)
    if w.kind == "ensemble_fgsm":
        from fgsm_repro.models import MeanProbabilityEnsemble, stack_members

        x, y = _synthetic(s.test_examples, 1, w.image_shape)
        params = stack_members([model.init(jax.random.PRNGKey(i), jnp.asarray(x[:1]))["params"]
                                for i in range(s.ensemble)])
        ensemble = MeanProbabilityEnsemble(model, s.ensemble)
        return [lambda: adversarial_examples(ensemble, SOFTMAX, params, x, y, ATTACKS["fgsm"])]
    if w.kind in ATTACK_KINDS:
        x, y = _synthetic(w.examples(s), 1, w.image_shape)
        params = model.init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]
        attack = ATTACKS[w.kind]
        mesh = data_mesh() if s.data_parallel else None
        return [lambda: adversarial_examples(model, SOFTMAX, params, x, y, attack, mesh=mesh)]
    cfg = _train_config(w, s)
    x, y = _synthetic(w.examples(s), 0, w.image_shape)
    x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
    tx = make_optimizer(cfg, len(x) // cfg.batch_size)
    # An ensemble trains as the project trains several seeds on this backend: vmapped together
    # on accelerators, one after another on a CPU (fgsm_repro.train.seeds_together_by_default).
    together = w.kind == "ensemble" and seeds_together_by_default()
    epoch = make_train_epoch(model, SOFTMAX, tx, cfg, seeds_together=together)
    states = [init_state(model, tx, x, seed) for seed in range(s.ensemble if w.kind == "ensemble" else 1)]
    box = [jax.tree.map(lambda *a: jnp.stack(a), *states)] if together else states

    def member_epoch(i: int) -> Callable[[], Any]:
        def run():
            box[i], loss = epoch(box[i], x_dev, y_dev)
            return jax.block_until_ready(loss)  # the whole program: every output is ready with it

        return run

    return [member_epoch(i) for i in range(len(box))]


def products_calls(w: Workload, s: BenchSettings) -> tuple[Callable, list[tuple]]:
    """An attack's dense products alone, as a jitted program and the arguments of each call (one
    per batch, like the attack's): at every attack step, each layer's forward product and its
    backward product to the layer's input — the shapes that :meth:`Workload.flops` counts — on
    random operands, compiled with the attack programs' options. Timed, it is how fast the
    attack would be if everything else (maxout, softmax, sign, clipping, transfers) were free.
    For the conv workload: :func:`conv_products_calls`."""
    from fgsm_repro.evaluation import EVAL_BATCH

    if w.convolutional:
        return conv_products_calls(w, s)
    steps = {"pgd": PGD_STEPS, "pgd_l2": PGD_STEPS, "cw": CW_STEPS}.get(w.kind, 1)

    @functools.partial(jax.jit, compiler_options=cpu_tuning.compiler_options(w.model(s), attack=True))
    def products(inputs, output_grads, weights):
        def step(_, operands):  # each step's products take the last step's: nothing to hoist out of the loop
            inputs, output_grads = operands
            return ([g @ m.T for g, m in zip(output_grads, weights, strict=True)],
                    [a @ m for a, m in zip(inputs, weights, strict=True)])

        return jax.lax.fori_loop(0, steps, step, (inputs, output_grads))

    # Against an ensemble, every member's products (of its own weights).
    members = s.ensemble if w.kind == "ensemble_fgsm" else 1
    shapes, key, n = w.dense_shapes(s) * members, jax.random.PRNGKey(0), w.examples(s)
    # Scaled so that a forward and a backward product keep the operands' magnitude over the steps.
    weights = [jax.random.normal(key, (k, m)) * (k * m) ** -0.25 for k, m in shapes]
    sizes = [min(EVAL_BATCH, n - start) for start in range(0, n, EVAL_BATCH)]
    operands = {b: ([jax.random.normal(key, (b, k)) for k, _ in shapes],
                    [jax.random.normal(key, (b, m)) for _, m in shapes]) for b in set(sizes)}
    return products, [(*operands[b], weights) for b in sizes]


def conv_products_calls(w: Workload, s: BenchSettings) -> tuple[Callable, list[tuple]]:
    """The conv net's training products alone, one call per minibatch: each conv layer's forward
    convolution and its gradients to the kernel and (but for the first layer) to the input, in
    the forms the model's training runs (:func:`fgsm_repro.ops.conv.conv_nhwc`), and the dense
    layers' three products, on random operands, compiled with the conv programs' options. Timed,
    it is how fast the epoch would be if maxout, pooling, dropout, the softmax and the optimizer
    were free."""
    from fgsm_repro.ops.conv import conv_nhwc

    model = w.model(s)
    convs, _ = conv_layers(model, *w.image_shape)
    dense = w.dense_shapes(s)[len(convs):]

    @functools.partial(jax.jit, compiler_options=cpu_tuning.compiler_options(model))
    def products(maps, kernels, map_grads, inputs, weights, output_grads):
        outputs = []
        for i, (x, kernel, g, layer) in enumerate(zip(maps, kernels, map_grads, convs, strict=True)):
            pad = ((layer.pad, layer.pad), (layer.pad, layer.pad))
            y, vjp = jax.vjp(lambda x_, k_, pad=pad: conv_nhwc(x_, k_, pad), x, kernel)
            dx, dkernel = vjp(g)
            outputs += [y, dkernel] + ([dx] if i else [])  # the first layer's input gradient is not needed
        for a, m, g in zip(inputs, weights, output_grads, strict=True):
            outputs += [a @ m, g @ m.T, a.T @ g]
        return outputs

    key, batch = jax.random.PRNGKey(0), CONV_BATCH
    maps = [jax.random.normal(key, (batch, g.height, g.width, g.channels)) for g in convs]
    kernels = [jax.random.normal(key, (g.kernel, g.kernel, g.channels, g.filters)) * 0.01 for g in convs]
    map_grads = [jax.random.normal(key, (batch, g.out_height, g.out_width, g.filters)) for g in convs]
    inputs = [jax.random.normal(key, (batch, k)) for k, _ in dense]
    weights = [jax.random.normal(key, shape) for shape in dense]
    output_grads = [jax.random.normal(key, (batch, n)) for _, n in dense]
    return products, [(maps, kernels, map_grads, inputs, weights, output_grads)] * (w.examples(s) // batch)


def _products_side(w: Workload, s: BenchSettings) -> list[Callable[[], Any]]:
    products, calls = products_calls(w, s)
    return [lambda: jax.block_until_ready([products(*args) for args in calls])]


# --- the PyTorch side ---------------------------------------------------------------------------

def _torch_side(w: Workload, s: BenchSettings) -> list[Callable[[], Any]]:
    """The workload as a list of calls, like :func:`_jax_side` (one per ensemble member)."""
    import torch
    import torchattacks

    from fgsm_repro.bench.torch_side import (
        MPDBM,
        ConvMaxout,
        Maxout,
        MeanProbabilityEnsemble,
        Recipe,
        cw_l2,
        train_epoch,
    )
    from fgsm_repro.evaluation import EVAL_BATCH

    if s.threads:
        torch.set_num_threads(s.threads)
    torch.manual_seed(0)
    if w.kind in ATTACK_KINDS:
        x, y = (torch.from_numpy(a) for a in _synthetic(w.examples(s), 1, w.image_shape))
        y = y.long()
        x = x.permute(0, 3, 1, 2).contiguous()  # torchattacks expects NCHW in [0, 1]
        model = (MeanProbabilityEnsemble([Maxout(w.width(s)) for _ in range(s.ensemble)]) if w.kind == "ensemble_fgsm"
                 else Maxout(w.width(s))).eval()
        attack = {"fgsm": lambda: torchattacks.FGSM(model, eps=ATTACK_EPS),
                  "ensemble_fgsm": lambda: torchattacks.FGSM(model, eps=ATTACK_EPS),
                  "pgd": lambda: torchattacks.PGD(model, eps=ATTACK_EPS, alpha=ATTACK_EPS / 4, steps=PGD_STEPS,
                                                  random_start=True),
                  "pgd_l2": lambda: torchattacks.PGDL2(model, eps=L2_EPS, alpha=0.2, steps=PGD_STEPS),
                  "deepfool": lambda: torchattacks.DeepFool(model, steps=50, overshoot=0.02),
                  # torchattacks.CW stops early when the cost rises: the same loop with every step run.
                  "cw": lambda: functools.partial(cw_l2, model, c=1.0, steps=CW_STEPS, lr=0.01)}[w.kind]()
        return [lambda: [attack(x[i:i + EVAL_BATCH], y[i:i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]]
    x, y = (torch.from_numpy(a) for a in _synthetic(w.examples(s), 0, w.image_shape))
    y = y.long()
    if w.convolutional:
        flax_model = w.model(s)
        x = x.permute(0, 3, 1, 2).contiguous()
        members = [ConvMaxout(flax_model.channels, units=flax_model.units)]
    elif w.kind == "mpdbm":
        flax_model = w.model(s)
        members = [MPDBM(flax_model.units, flax_model.visible, flax_model.num_classes, flax_model.steps,
                         flax_model.weight_init)]
    else:
        members = [Maxout(w.width(s)) for _ in range(s.ensemble if w.kind == "ensemble" else 1)]
    cfg = _train_config(w, s)
    steps = len(x) // cfg.batch_size
    if w.kind in ("cifar", "mpdbm"):
        opt = cfg.optimizer
        recipes = [Recipe(m, steps, opt.learning_rate, momentum=opt.momentum, final_momentum=opt.final_momentum,
                          momentum_saturate_epoch=opt.momentum_saturate_epoch,
                          linear_decay=(opt.linear_decay_to, opt.linear_decay_epochs), lr_scales=cfg.lr_scale,
                          max_col_norms=cfg.max_col_norm) for m in members]
    else:
        recipes = [Recipe(m, steps) for m in members]
    adversarial = ADVERSARIAL if w.kind == "adversarial" else None
    augment = (cfg.augment.crop_pad, cfg.augment.flip) if cfg.augment else None
    return [functools.partial(train_epoch, m, r, x, y, cfg.batch_size, adversarial, augment=augment)
            for m, r in zip(members, recipes, strict=True)]


# --- timing -------------------------------------------------------------------------------------

def _time(fn: Callable[[], Any], settle: float = 0.0) -> float:
    time.sleep(settle)
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def _run_all(calls: list[Callable[[], Any]]) -> list[Any]:
    return [call() for call in calls]


def time_interleaved(*sides: list[Callable[[], Any]], first: int = 0, settle: float = SETTLE_S) -> list[float]:
    """Run every side once and return their times (a side's time is the sum of its calls, each
    after a `settle` pause). With as many calls on every side (the members of an ensemble), the
    calls alternate — call 0 of each side, then call 1 of each, … — the sides in turn from side
    `first` (a0 b0 a1 b1 …, or b0 a0 b1 a1 … with `first`=1), so that all sides run through the
    same stretches of this shared machine, whose speed changes for seconds at a time; else each
    side runs whole, one after the other from side `first`."""
    if len({len(side) for side in sides}) > 1:
        sides = tuple([functools.partial(_run_all, side)] for side in sides)
    order = [(first + k) % len(sides) for k in range(len(sides))]
    times = [0.0] * len(sides)
    for i in range(len(sides[0])):
        for k in order:
            times[k] += _time(sides[k][i], settle)
    return times


def timed_reps(s: BenchSettings, run_seconds: float) -> int:
    """Repetitions of a workload whose JAX side runs in `run_seconds`: at least ``s.reps``, and
    enough to time it for ``s.min_timed_seconds``, up to MAX_REPS."""
    return max(s.reps, min(MAX_REPS, math.ceil(s.min_timed_seconds / max(run_seconds, 1e-9))))


_matmul = jax.jit(jnp.matmul)


def matmul_peak_gflops(n: int = 1024, reps: int = 20) -> dict[str, float]:
    """Best fp32 (n×n)·(n×n) GFLOP/s of jax and of torch (if installed) on this machine."""
    flops = 2.0 * n ** 3
    a = jax.random.uniform(jax.random.PRNGKey(0), (n, n), jnp.float32)
    jax.block_until_ready(_matmul(a, a))
    out = {"jax": flops / min(_time(lambda: jax.block_until_ready(_matmul(a, a))) for _ in range(reps)) / 1e9}
    try:
        import torch
    except ImportError:
        return out
    t = torch.rand(n, n)
    torch.mm(t, t)
    out["torch"] = flops / min(_time(lambda: torch.mm(t, t)) for _ in range(reps)) / 1e9
    return out


def _scaling_fields(one_device_times: list[float], split_times: list[float]) -> dict:
    """The data-parallel side against the same workload on one device, from the same repetitions."""
    paired = [one / split for one, split in zip(one_device_times, split_times, strict=True)]
    return {"one_device_seconds": statistics.median(one_device_times), "one_device_runs": one_device_times,
            "scaling": statistics.median(paired), "scaling_runs": paired}


def _products_fields(products_times: list[float], jax_times: list[float], bound_s: float) -> dict:
    """The attack's dense products alone (:func:`_products_side`) against the whole attack."""
    products_s = statistics.median(products_times)
    return {"products_seconds": products_s, "products_runs": products_times,
            "products_share": statistics.median(p / j for p, j in zip(products_times, jax_times, strict=True)),
            "products_roofline_fraction": bound_s / products_s}


def _machine() -> dict:
    from fgsm_repro.results import device_info, versions

    info = {**device_info(), "versions": versions(), "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        import torch
        import torchattacks

        info["versions"] |= {"torch": torch.__version__, "torchattacks": torchattacks.__version__}
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


@contextlib.contextmanager
def _compiling_afresh():
    """Without JAX's persistent compilation cache, so that the record's compile times are
    compilations, not loads. JAX decides once per process whether to use the cache: it is reset,
    so that the switch counts (and again after)."""
    from jax.experimental.compilation_cache import compilation_cache

    was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", was_on)
        compilation_cache.reset_cache()


def write_bench(record: dict, results_dir: Path) -> Path:
    """results/bench.json (bench.quick.json for a quick run, bench.dp<N>.json for a data-parallel one)."""
    from fgsm_repro.results import write_json

    settings = record["settings"]
    stem = ("bench" + (".quick" if settings["unit_scale"] < 1 else "")
            + (f".dp{record['devices']}" if settings["data_parallel"] else ""))
    return write_json(record, Path(results_dir) / f"{stem}.json")


def run_bench(names: list[str] | None = None, settings: BenchSettings = BenchSettings(),
              log: Callable[[str], None] = print) -> dict:
    """Time every workload (or `names`) on both sides, interleaved, compiling afresh; returns the
    bench record."""
    with _compiling_afresh():
        return _run_bench(names, settings, log)


def _run_bench(names: list[str] | None, settings: BenchSettings, log: Callable[[str], None]) -> dict:
    try:
        import torch  # noqa: F401
        import torchattacks  # noqa: F401
    except ImportError:
        raise ReproError("the benchmark needs PyTorch and torchattacks: `make bench-deps` (torch==2.13.0, CPU "
                         "build, and torchattacks without its torchvision dependency)") from None
    unknown = sorted(set(names or []) - set(WORKLOADS))
    if unknown:
        raise ReproError(f"unknown workload(s) {unknown}; known: {sorted(WORKLOADS)}")
    from fgsm_repro.results import git_state

    git, start = git_state(), time.perf_counter()
    peak = matmul_peak_gflops()
    rows = []
    for w in (WORKLOADS[n] for n in names) if names else WORKLOADS.values():
        log(f"{w.name}: setting up")
        jax_calls, torch_calls = _jax_side(w, s=settings), _torch_side(w, s=settings)
        sides = {"jax": jax_calls, "torch": torch_calls}
        if settings.data_parallel:  # scaling: the JAX side on one device, interleaved in the same run
            sides["one_device"] = _jax_side(w, s=replace(settings, data_parallel=False))
        if w.flops(settings) is not None and w.kind not in ("clean", "adversarial", "ensemble", "mpdbm") \
                and not settings.data_parallel:  # products alone
            sides["products"] = _products_side(w, settings)
        first_jax = sum(_time(call) for call in jax_calls)  # compiles
        for name in [n for n in sides if n != "jax"]:  # warm-up
            _run_all(sides[name])
        # A second JAX run: warm-up too, and how many repetitions reach min_timed_seconds (the
        # machine's noise is of the order of 5% per run; short workloads get more runs).
        reps = timed_reps(settings, _time(functools.partial(_run_all, jax_calls)))
        runs, peaks = {name: [] for name in sides}, []
        for rep in range(reps):  # interleaved: all sides (and the peak) see the same machine state
            peaks.append(max(matmul_peak_gflops(reps=PEAK_REPS).values()))
            # JAX and PyTorch take turns going first, as with two sides; the extra sides come after them.
            pair = ["jax", "torch"] if rep % 2 == 0 else ["torch", "jax"]
            order = pair + [name for name in sides if name not in pair]
            for name, seconds in zip(order, time_interleaved(*(sides[n] for n in order)), strict=True):
                runs[name].append(seconds)
        jax_times, torch_times = runs["jax"], runs["torch"]
        jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
        # Ratios within repetitions: see the module docstring (this machine's slow stretches).
        paired = [t / j for j, t in zip(jax_times, torch_times, strict=True)]
        flops = w.flops(settings)
        # The machine's speed drifts (a shared VM: the peak moved by 30% within a minute), so the
        # bound uses the peak measured beside this workload's repetitions.
        workload_peak = statistics.median(peaks)
        bound_s = None if flops is None else flops / (workload_peak * 1e9)
        speedup, roofline = statistics.median(paired), None if bound_s is None else bound_s / jax_s
        rows.append({
            "name": w.name, "description": w.description, "units": w.width(settings), "flops": flops, "reps": reps,
            "jax_seconds": jax_s, "torch_seconds": torch_s, "jax_runs": jax_times, "torch_runs": torch_times,
            "jax_first_call_seconds": first_jax, "jax_compile_seconds": max(first_jax - jax_s, 0.0),
            "speedup": speedup, "speedup_runs": paired, "speedup_of_medians": torch_s / jax_s,
            "calls_interleaved": len(jax_calls) if len(jax_calls) == len(torch_calls) else 1,
            "jax_gflops": flops and flops / jax_s / 1e9, "torch_gflops": flops and flops / torch_s / 1e9,
            "matmul_peak_gflops": workload_peak, "matmul_peak_runs": peaks,
            "bound_seconds": bound_s, "jax_roofline_fraction": roofline,
            "torch_roofline_fraction": bound_s and bound_s / torch_s,
            "meets_target": bool(speedup >= TARGET_SPEEDUP or (roofline or 0) >= TARGET_ROOFLINE),
        } | ({"jax_ensemble": "vmapped" if seeds_together_by_default() else "one member after another"}
             if w.kind == "ensemble" else {})
          | (_scaling_fields(runs["one_device"], jax_times) if "one_device" in runs else {})
          | (_products_fields(runs["products"], jax_times, bound_s) if "products" in runs else {}))
        log(f"{w.name}: jax {jax_s:.3f} s, torch {torch_s:.3f} s, speedup {speedup:.2f}x"
            + (f", {100 * roofline:.0f}% of the matmul bound" if roofline is not None else "")
            + (f" (its dense products alone: {100 * rows[-1]['products_roofline_fraction']:.0f}%)"
               if "products" in runs else ""))
    return {
        "kind": "benchmark",
        "target": f"each workload >= {TARGET_SPEEDUP}x faster than PyTorch eager, or >= "
                  f"{100 * TARGET_ROOFLINE:.0f}% of the arithmetic bound where that is lower",
        "settings": asdict(settings),
        "devices": jax.device_count(),
        "matmul_peak_gflops": peak,
        "workloads": rows,
        "provenance": {**git, "machine": _machine(), "wall_time_s": round(time.perf_counter() - start, 2),
                       "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")},
    }
