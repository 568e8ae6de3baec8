"""The benchmark's workloads, one class for each kind: training epochs (:class:`Epoch` and its
subclasses) and attacks (:class:`Attack` and its subclasses). A workload says what it computes —
its network, its data, its FLOPs — and builds each side that the suite times: the JAX side (the
project's own code paths), the PyTorch side (:mod:`fgsm_repro.bench.torch_side`, imported only
then) and, where it has one, its products alone (:mod:`fgsm_repro.bench.products`).

FLOPs count the dense matrix products only (2·m·k·n each): a training step is a forward pass,
the backward pass to the activations and to the weights (the first layer's input gradient is
not needed, except when the adversarial objective needs ∇ₓ); an attack step is a forward pass
and the backward pass to the input. A conv layer counts as its dense-equivalent product at every
output position, each of its gradients as much as its forward pass (the conv net's input
gradients as compiled, forward convolutions of the padded gradient, do a little more). The
arithmetic bound of a workload is its FLOPs at the matmul peak — no implementation can beat it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fgsm_repro.attacks.apgd import APGD
from fgsm_repro.attacks.autoattack import AutoAttack
from fgsm_repro.attacks.cw import CarliniWagnerL2
from fgsm_repro.attacks.deepfool import DeepFool
from fgsm_repro.attacks.fgsm import FGSM
from fgsm_repro.attacks.jsma import JSMA
from fgsm_repro.attacks.pgd import PGD
from fgsm_repro.attacks.square import Square
from fgsm_repro.bench.geometry import layer_shapes
from fgsm_repro.bench.products import Products, attack_products, conv_epoch_products
from fgsm_repro.bench.settings import BenchSettings
from fgsm_repro.bench.timing import Calls
from fgsm_repro.config import TrainConfig
from fgsm_repro.ops.host import host_aligned, host_empty
from fgsm_repro.sharding import data_mesh
from fgsm_repro.train import seeds_together_by_default

PAPER_RECIPE = dict(
    batch_size=100, max_col_norm=1.9365,
    optimizer=dict(name="classical_momentum", learning_rate=0.1, lr_decay_factor=1.000004, min_learning_rate=1e-6,
                   momentum=0.5, final_momentum=0.7, momentum_saturate_epoch=250))
CONV_BATCH = 128  # the CIFAR-10 recipe's
ATTACK_EPS, PGD_STEPS = 0.25, 10
L2_EPS, CW_STEPS = 1.0, 50
APGD_STEPS, SQUARE_QUERIES = 100, 1000  # AutoAttack's APGD; Square: a fifth of AutoAttack's queries
PGD_TRAIN_EPS, PGD_TRAIN_STEPS = 0.3, 10


def synthetic(n: int, seed: int, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Random images, in memory laid out as :func:`fgsm_repro.data.splits.make_splits` lays out
    real ones: the timing does not depend on the pixel values."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32, out=host_empty((n, *shape), np.float32))
    return x, host_aligned(rng.integers(0, 10, n).astype(np.int32))


def _dense_flops(shapes: list[tuple[int, int]]) -> int:
    return sum(2 * k * n for k, n in shapes)


@dataclass(frozen=True)
class Workload(ABC):
    """A timed workload on a network of `units` units (at ``unit_scale`` 1)."""

    name: str
    description: str
    units: int

    data_seed: ClassVar[int] = 0

    def width(self, s: BenchSettings) -> int:
        return max(2, round(self.units * s.unit_scale))

    def model(self, s: BenchSettings):
        from fgsm_repro.models import MaxoutMLP

        return MaxoutMLP(units=self.width(s))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        from fgsm_repro.data.sources import IMAGE_SHAPE

        return IMAGE_SHAPE["mnist"]

    @abstractmethod
    def examples(self, s: BenchSettings) -> int:
        """The images (training examples, or images attacked) it runs on."""

    def data(self, s: BenchSettings) -> tuple[np.ndarray, np.ndarray]:
        """The workload's synthetic images and labels (each side gets its own copy)."""
        return synthetic(self.examples(s), self.data_seed, self.image_shape)

    def dense_shapes(self, s: BenchSettings) -> list[tuple[int, int]]:
        """(in, out) of each layer's dense product per example (a conv's: at every position)."""
        units, pieces, d_in, classes = self.width(s), 5, 784, 10
        return [(d_in, units * pieces), (units, units * pieces), (units, classes)]

    @abstractmethod
    def flops(self, s: BenchSettings) -> float | None:
        """The workload's dense-product FLOPs; None where its amount of work varies."""

    @abstractmethod
    def jax_calls(self, s: BenchSettings) -> Calls:
        """The JAX side: the workload as a list of calls (one per ensemble member trained in turn, else one)."""

    @abstractmethod
    def torch_calls(self, s: BenchSettings) -> Calls:
        """The PyTorch side, like :meth:`jax_calls`."""

    def products(self, s: BenchSettings) -> Products | None:
        """The workload's products alone (:mod:`fgsm_repro.bench.products`), if it is timed with them."""
        return None

    def record_fields(self, s: BenchSettings) -> dict[str, Any]:
        """What the workload adds to its row of the record."""
        return {}


# --- training epochs ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Epoch(Workload):
    """A clean training epoch of the maxout MLP with the paper's recipe."""

    recipe: ClassVar[dict] = PAPER_RECIPE
    adversarial: ClassVar[dict | None] = None  # the adversarial objective's alpha and eps

    def examples(self, s: BenchSettings) -> int:
        return s.examples

    def members(self, s: BenchSettings) -> int:
        """The networks trained, one after another or together (:meth:`seeds_together`)."""
        return 1

    def seeds_together(self) -> bool:
        return False

    def train_config(self, s: BenchSettings) -> TrainConfig:
        return TrainConfig(epochs=1, **self.recipe, data_parallel=s.data_parallel, adversarial=self.adversarial)

    def step_flops(self, s: BenchSettings) -> int:
        """A training step's FLOPs per example and member."""
        shapes = self.dense_shapes(s)
        return 3 * _dense_flops(shapes) - _dense_flops(shapes[:1])  # no input gradient of the first layer

    def flops(self, s: BenchSettings) -> float:
        return float(self.members(s) * self.step_flops(s) * self.examples(s))

    def jax_calls(self, s: BenchSettings) -> Calls:
        from fgsm_repro.objectives import SOFTMAX
        from fgsm_repro.train import init_state, make_optimizer, make_train_epoch

        model, cfg = self.model(s), self.train_config(s)
        x, y = self.data(s)
        x_dev, y_dev = jnp.asarray(x), jnp.asarray(y)
        tx = make_optimizer(cfg, len(x) // cfg.batch_size)
        together = self.seeds_together()
        epoch = make_train_epoch(model, SOFTMAX, tx, cfg, seeds_together=together)
        states = [init_state(model, tx, x, seed) for seed in range(self.members(s))]
        box = [jax.tree.map(lambda *a: jnp.stack(a), *states)] if together else states

        def member_epoch(i: int):
            def run():
                box[i], loss = epoch(box[i], x_dev, y_dev)
                return jax.block_until_ready(loss)  # the whole program: every output is ready with it

            return run

        return [member_epoch(i) for i in range(len(box))]

    def torch_calls(self, s: BenchSettings) -> Calls:
        from fgsm_repro.bench import torch_side

        return torch_side.epoch_calls(self.model(s), self.members(s), self.train_config(s), *self.data(s),
                                      threads=s.threads)


@dataclass(frozen=True)
class AdversarialEpoch(Epoch):
    """An adversarial-training epoch (§6): α·J(x) + (1−α)·J(x + ε·sign ∇ₓJ(x))."""

    adversarial: ClassVar[dict | None] = {"alpha": 0.5, "eps": 0.25}

    def step_flops(self, s: BenchSettings) -> int:
        return 2 * super().step_flops(s) + _dense_flops(self.dense_shapes(s)[:1])  # and ∇ₓ


@dataclass(frozen=True)
class PgdEpoch(Epoch):
    """A PGD adversarial-training epoch (Madry et al. 2018): the loss on PGD examples alone, made
    afresh for every minibatch from a random start, PGD_TRAIN_STEPS steps of ε/4 at ε = .3 (MNIST's).
    JAX attacks the training network with one set of dropout masks for all the steps; the PyTorch
    side, eager, draws new masks every pass (the same work)."""

    adversarial: ClassVar[dict | None] = {"alpha": 0.0, "attack": {
        "name": "pgd", "eps": PGD_TRAIN_EPS, "steps": PGD_TRAIN_STEPS, "step_size": PGD_TRAIN_EPS / 4,
        "clip": (0.0, 1.0)}}

    def step_flops(self, s: BenchSettings) -> int:
        return PGD_TRAIN_STEPS * 2 * _dense_flops(self.dense_shapes(s)) + super().step_flops(s)  # and each ∇ₓ


@dataclass(frozen=True)
class EnsembleEpoch(Epoch):
    """A training epoch of ``s.ensemble`` networks, trained as the project trains several seeds on
    this backend: vmapped together on accelerators, one after another on a CPU
    (:func:`fgsm_repro.train.seeds_together_by_default`)."""

    def members(self, s: BenchSettings) -> int:
        return s.ensemble

    def seeds_together(self) -> bool:
        return seeds_together_by_default()

    def record_fields(self, s: BenchSettings) -> dict[str, Any]:
        return {"jax_ensemble": "vmapped" if self.seeds_together() else "one member after another"}


@dataclass(frozen=True)
class ConvEpoch(Epoch):
    """A training epoch of the conv maxout net on CIFAR-sized input, in batches of CONV_BATCH; its
    products alone are timed beside it."""

    recipe: ClassVar[dict] = PAPER_RECIPE | {"batch_size": CONV_BATCH}

    def model(self, s: BenchSettings):
        from fgsm_repro.models import ConvMaxout

        return ConvMaxout(channels=tuple(max(2, round(c * s.unit_scale)) for c in ConvMaxout.channels),
                          units=self.width(s))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        from fgsm_repro.data.sources import IMAGE_SHAPE

        return IMAGE_SHAPE["cifar10"]

    def examples(self, s: BenchSettings) -> int:
        return s.conv_examples

    def dense_shapes(self, s: BenchSettings) -> list[tuple[int, int]]:
        return [(pos * k, n) for pos, k, n in layer_shapes(self.model(s), *self.image_shape)]

    def products(self, s: BenchSettings) -> Products:
        batch = self.train_config(s).batch_size
        return conv_epoch_products(self.model(s), self.image_shape, self.dense_shapes(s), batch,
                                   self.examples(s) // batch)


def project_config(file: str):
    """The experiment config ``configs/<file>`` of the project folder at its paper profile: a
    workload times its recipe."""
    from fgsm_repro import workdir
    from fgsm_repro.config import load_config

    return load_config(workdir.config_dir() / file)


def cifar_recipe() -> TrainConfig:
    """The train section of ``configs/t1_convmaxout.yaml``."""
    return project_config("t1_convmaxout.yaml").train


@dataclass(frozen=True)
class CifarRecipeEpoch(ConvEpoch):
    """A training epoch of the CIFAR-10 recipe as T1.convmaxout trains it (:func:`cifar_recipe`)."""

    def train_config(self, s: BenchSettings) -> TrainConfig:
        return cifar_recipe().model_copy(update={"epochs": 1, "data_parallel": s.data_parallel})


def mpdbm_config():
    """``configs/s9_mpdbm.yaml``: the MP-DBM workload times what S9.mpdbm trains."""
    return project_config("s9_mpdbm.yaml")


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


@dataclass(frozen=True)
class MpdbmEpoch(Epoch):
    """A multi-prediction training epoch of S9.mpdbm's MP-DBM (:func:`mpdbm_config`); `units` is its
    first hidden layer, the others follow its config."""

    def model(self, s: BenchSettings):
        return mpdbm_model(s.unit_scale)

    def train_config(self, s: BenchSettings) -> TrainConfig:
        return mpdbm_config().train_of("mpdbm").model_copy(update={"epochs": 1, "data_parallel": s.data_parallel})

    def step_flops(self, s: BenchSettings) -> int:
        return 3 * mpdbm_forward_flops(self.model(s))  # every product of the unrolled inference, and both its gradients


# --- attacks ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Attack(Workload):
    """The attack `spec` as the project runs it (:func:`fgsm_repro.evaluation.adversarial_examples`)
    on ``s.test_examples`` images of the maxout MLP, `steps` attack steps each (None: the steps
    vary per image); the PyTorch side runs torchattacks' attack with the spec's settings
    (:func:`fgsm_repro.bench.torch_side.torchattack`). Its products alone are timed beside it."""

    spec: Any
    steps: int | None = 1
    # Label the images by the network's own predictions, so that every image starts classified
    # right: attacks whose work depends on which images are still right (torchattacks' APGD,
    # Square and AutoAttack attack only those) then do the same work on both sides, which share
    # the network's weights.
    own_labels: bool = False

    data_seed: ClassVar[int] = 1

    def examples(self, s: BenchSettings) -> int:
        return s.test_examples

    def params(self, s: BenchSettings, x: np.ndarray):
        """The attacked network's parameters (one network: its initialisation from key 0)."""
        return self.model(s).init(jax.random.PRNGKey(0), jnp.asarray(x[:1]))["params"]

    def data(self, s: BenchSettings) -> tuple[np.ndarray, np.ndarray]:
        x, y = super().data(s)
        if not self.own_labels:
            return x, y
        logits = self.model(s).apply({"params": self.params(s, x)}, jnp.asarray(x))
        return x, host_aligned(np.asarray(jnp.argmax(logits, -1)).astype(np.int32))

    def ensemble(self, s: BenchSettings) -> int | None:
        """The size of the ensemble attacked; None: one network."""
        return None

    def flops(self, s: BenchSettings) -> float | None:
        if self.steps is None:
            return None
        return float((self.ensemble(s) or 1) * self.steps * 2 * _dense_flops(self.dense_shapes(s)) * self.examples(s))

    def victim(self, s: BenchSettings, x: np.ndarray):
        """The network attacked, its parameters, and the mesh the attack is split over (or None)."""
        return self.model(s), self.params(s, x), data_mesh() if s.data_parallel else None

    def jax_calls(self, s: BenchSettings) -> Calls:
        from fgsm_repro.evaluation import adversarial_examples
        from fgsm_repro.objectives import SOFTMAX

        x, y = self.data(s)
        model, params, mesh = self.victim(s, x)
        return [lambda: adversarial_examples(model, SOFTMAX, params, x, y, self.spec, mesh=mesh)]

    def torch_calls(self, s: BenchSettings) -> Calls:
        from fgsm_repro.bench import torch_side
        from fgsm_repro.evaluation import EVAL_BATCH

        x, y = self.data(s)
        return torch_side.attack_calls(self.model(s), self.ensemble(s), self.spec, x, y, batch=EVAL_BATCH,
                                       threads=s.threads, params=self.params(s, x) if self.own_labels else None)

    def products(self, s: BenchSettings) -> Products | None:
        if self.steps is None:
            return None
        return attack_products(self.model(s), self.dense_shapes(s) * (self.ensemble(s) or 1), self.steps,
                               self.examples(s))


@dataclass(frozen=True)
class MinimalAttack(Attack):
    """A minimal-perturbation attack, on ``s.minimal_examples`` images."""

    def examples(self, s: BenchSettings) -> int:
        return s.minimal_examples


@dataclass(frozen=True)
class FewImagesAttack(Attack):
    """An attack torchattacks runs for seconds per image (JSMA: a Python loop over the images, ten
    backward passes and the n² saliency map per step), on a hundredth of ``s.minimal_examples``."""

    def examples(self, s: BenchSettings) -> int:
        return max(1, s.minimal_examples // 100)


@dataclass(frozen=True)
class EnsembleAttack(Attack):
    """The attack against a mean-probability ensemble of ``s.ensemble`` maxout MLPs (S9.ens_all),
    every member's products counted; the ensemble runs on one device."""

    def ensemble(self, s: BenchSettings) -> int:
        return s.ensemble

    def victim(self, s: BenchSettings, x: np.ndarray):
        from fgsm_repro.models import MeanProbabilityEnsemble, stack_members

        model = self.model(s)
        params = stack_members([model.init(jax.random.PRNGKey(i), jnp.asarray(x[:1]))["params"]
                                for i in range(s.ensemble)])
        return MeanProbabilityEnsemble(model, s.ensemble), params, None


# The attacks clip to the pixel range like torchattacks. PGD: step eps/4 and a random start, like
# torchattacks.PGD; PGD-L2: torchattacks.PGDL2's defaults (eps 1, step .2) with its random start;
# DeepFool: torchattacks.DeepFool's (L2, 50 steps, overshoot .02); C&W: torchattacks.CW's settings,
# which have no search over c (one c = 1, 50 Adam steps of .01). APGD, Square and AutoAttack:
# AutoAttack's standard settings, on images labelled by the network (own_labels); their work
# depends on when the examples fall.
# JSMA: γ = .125 (49 pairs both ways: torchattacks rounds ⌈γn/2⌉ up, the authors' code down) toward
# the least likely class, which the random network never reaches, so every image takes every step.
WORKLOADS = {w.name: w for w in [
    Epoch("maxout240_clean_epoch", "training epoch, maxout 2x240x5, faithful recipe", 240),
    AdversarialEpoch("maxout240_adv_epoch", "adversarial-training epoch (alpha .5, eps .25), maxout 240", 240),
    PgdEpoch("maxout240_pgd_epoch", "PGD adversarial-training epoch (PGD-10, eps .3, step eps/4, random start), "
             "maxout 240", 240),
    Epoch("maxout1600_clean_epoch", "training epoch, maxout 2x1600x5, faithful recipe", 1600),
    AdversarialEpoch("maxout1600_adv_epoch", "adversarial-training epoch, maxout 1600", 1600),
    EnsembleEpoch("ensemble12_epoch", "training epoch of a 12-member ensemble of maxout 240", 240),
    Attack("fgsm_test", "FGSM eps .25 (clipped to [0,1]) on the test images, maxout 240", 240,
           FGSM(eps=ATTACK_EPS, clip=(0.0, 1.0))),
    Attack("pgd10_test", "PGD-10 eps .25, step eps/4, random start, on the test images, maxout 240", 240,
           PGD(eps=ATTACK_EPS, steps=PGD_STEPS, step_size=ATTACK_EPS / 4, clip=(0.0, 1.0)), steps=PGD_STEPS),
    Attack("pgd_l2_test", "PGD-10 L2 eps 1, step .2, random start, on the test images, maxout 240", 240,
           PGD(eps=L2_EPS, norm=2, steps=PGD_STEPS, step_size=0.2, clip=(0.0, 1.0)), steps=PGD_STEPS),
    MinimalAttack("deepfool_test", "DeepFool L2 (50 steps at most, overshoot .02) on 1,000 test images, maxout 240",
                  240, DeepFool(norm=2, overshoot=0.02, max_iter=50, clip=(0.0, 1.0)), steps=None),
    MinimalAttack("cw_test", "Carlini-Wagner L2, c = 1, 50 Adam steps of .01, on 1,000 test images, maxout 240", 240,
                  CarliniWagnerL2(initial_const=1.0, binary_search_steps=1, steps=CW_STEPS, learning_rate=0.01),
                  steps=CW_STEPS),
    Attack("apgd_ce_test", "APGD-CE eps .25, 100 steps, one start, on the test images, maxout 240", 240,
           APGD(eps=ATTACK_EPS, steps=APGD_STEPS, clip=(0.0, 1.0)), steps=APGD_STEPS, own_labels=True),
    MinimalAttack("square_test", f"Square Attack L-inf eps .25, {SQUARE_QUERIES} queries at most, on 1,000 test "
                  "images, maxout 240", 240, Square(eps=ATTACK_EPS, queries=SQUARE_QUERIES, clip=(0.0, 1.0)),
                  steps=None, own_labels=True),
    MinimalAttack("autoattack_test", "AutoAttack's standard L-inf sequence (APGD-CE, APGD-T, FAB-T, Square) eps .25, "
                  "on 1,000 test images, maxout 240", 240, AutoAttack(eps=ATTACK_EPS, clip=(0.0, 1.0)), steps=None,
                  own_labels=True),
    FewImagesAttack("jsma_test", "JSMA (theta 1, gamma .125: 49 pixel pairs) toward the least likely class, on 10 "
                    "test images, maxout 240", 240, JSMA(theta=1.0, gamma=0.125, target="least_likely"),
                    steps=None),
    EnsembleAttack("ensemble12_fgsm_test", "FGSM eps .25 (clipped to [0,1]) against a 12-member mean-probability "
                   "ensemble of maxout 240 (S9.ens_all), on the test images", 240,
                   FGSM(eps=ATTACK_EPS, clip=(0.0, 1.0))),
    ConvEpoch("convmaxout_cifar_epoch", "training epoch, conv maxout with the CIFAR-10 recipe's layers on "
              "CIFAR-sized input, batch 128, the maxout recipe's optimizer, max-norm 1.9365 on every layer, dropout",
              500),
    CifarRecipeEpoch("convmaxout_cifar_recipe_epoch", "training epoch of the CIFAR-10 recipe as T1.convmaxout "
                     "trains it: the same net, random crops (pad 8) and flips, conv lr scale .05, per-layer "
                     "max-norms, linearly decaying lr, dropout", 500),
    MpdbmEpoch("mpdbm_epoch", "multi-prediction training epoch of the MNIST MP-DBM as S9.mpdbm trains it "
               "(784-2087-3200-10, 14 mean-field sweeps backpropagated, sampled pixels and targets, the "
               "recipe's momentum, linear decay and max-norms)", 2087),
]}
