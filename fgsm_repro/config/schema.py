"""The experiment config's schema: pydantic models of every section, validated field by field.

An :class:`ExperimentConfig` is one experiment at one profile, as :func:`fgsm_repro.config.load.load_config`
merges it from its YAML. Attack settings are parsed by the attack's own spec
(:mod:`fgsm_repro.attacks.base`), model options by the model kind's schema; a user's module named
by either is searched in the config's folder, which loading passes as the validation context.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from fgsm_repro.attacks.base import AttackSpec, NotBool, parse_attack
from fgsm_repro.config import hashing
from fgsm_repro.errors import NestedFieldError, ReproError, field_problem

PROFILES = ("paper", "fast", "ci")
OWN_CLAIM = "X."  # claim IDs of measured numbers with no paper value, declared by a config alone

MAX_INT = 2**31 - 1  # counts and sizes index int32 arrays on the device
MAX_SEED = 2**32 - 1  # JAX's PRNG keys hold 32-bit seeds
PositiveInt = Annotated[int, NotBool, Field(gt=0, le=MAX_INT)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    dataset: Literal["mnist", "cifar10"] = "mnist"
    # A binary task on two classes: the first gets y = -1, the second y = +1.
    classes: tuple[Annotated[int, NotBool], Annotated[int, NotBool]] | None = None
    # The last `validation_size` examples of the official training set are held out for
    # validation (the pylearn2 recipes use the last 10,000 of MNIST); with `last_per_class`, the
    # last validation_size / 10 of each class, for a copy stored in class order (the CIFAR-10 JPEG
    # mirror), whose last 10,000 would be two classes.
    validation_size: Annotated[int, NotBool, Field(ge=0, le=MAX_INT)] = 10_000
    validation: Literal["last", "last_per_class"] = "last"
    # `gcn_zca`: the CIFAR-10 recipe's global contrast normalization (scale 55) and ZCA whitening
    # (bias .1) fitted on all official training images (fgsm_repro.data.preprocess).
    preprocessing: Literal["none", "gcn_zca"] = "none"
    # Only the first N training (after the validation split) and test examples of each class: a
    # balanced subset for small runs (ci profiles). None: all.
    train_per_class: PositiveInt | None = None
    test_per_class: PositiveInt | None = None

    @field_validator("classes")
    @classmethod
    def _distinct_classes(cls, v):
        if v is not None and (v[0] == v[1] or min(v) < 0 or max(v) > 9):
            raise ValueError("must be two different class labels in 0..9")
        return v

    @model_validator(mode="after")
    def _per_class_validation_splits_evenly(self):
        if self.validation == "last_per_class" and self.validation_size % 10:
            raise NestedFieldError(("validation_size",), "must be a multiple of the 10 classes with "
                                   "validation: last_per_class")
        return self


def options_schema(model: str, folders=()) -> type[BaseModel] | None:
    """The options model of the model kind `model` (None: unknown here, or a user's kind without
    one; the runner names an unknown kind)."""
    from fgsm_repro.models import find_model

    try:
        return find_model(model, folders).options
    except ReproError:
        return None


class ModelConfig(_Strict):
    name: str
    # Checked by the kind's options model (fgsm_repro.models.ModelSpec.options) where it has one.
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _options_of_the_kind(self, info: ValidationInfo):
        kind = options_schema(self.name, (info.context or {}).get("folders", ()))
        if kind is None:
            return self
        try:
            checked = kind.model_validate(self.options)
        except ValidationError as e:
            problem = field_problem(e)
            msg = f"unknown option (the options of {self.name}: {', '.join(kind.model_fields)})" \
                if problem.unknown_key else problem.msg + problem.got
            raise NestedFieldError(("options", *problem.loc), msg) from None
        # As checked (a YAML list stays a list): the same dict, so the config hash is unchanged.
        object.__setattr__(self, "options", checked.model_dump(mode="json", exclude_unset=True))
        return self


class OptimizerConfig(_Strict):
    # sgd / adam: optax's. classical_momentum: pylearn2's v ← m·v − lr·g, θ ← θ + v, with the lr
    # divided by lr_decay_factor after every update (not below min_learning_rate), or decaying
    # linearly per epoch to linear_decay_to × itself at epoch linear_decay_epochs (pylearn2's
    # LinearDecayOverEpoch), and the momentum rising linearly to final_momentum at epoch
    # momentum_saturate_epoch.
    name: Literal["sgd", "adam", "classical_momentum"] = "sgd"
    learning_rate: PositiveFloat
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.0
    lr_decay_factor: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0
    min_learning_rate: NonNegativeFloat = 0.0
    linear_decay_to: Annotated[float, Field(gt=0, le=1)] | None = None
    linear_decay_epochs: PositiveInt | None = None
    final_momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    momentum_saturate_epoch: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_decay(self):
        if (self.linear_decay_to is None) != (self.linear_decay_epochs is None):
            raise ValueError("linear_decay_to and linear_decay_epochs go together")
        if self.linear_decay_to is not None and (self.name != "classical_momentum" or self.lr_decay_factor != 1):
            raise ValueError("the linear decay is classical_momentum's, instead of lr_decay_factor")
        return self


# The paper's short form of the adversarial-training perturbation, as the attack it names.
PERTURBATIONS = {"fgsm": "fgsm", "random_sign": "random_sign", "uniform": "uniform_noise"}


def _attack_in_context(value: Any, info: ValidationInfo) -> AttackSpec:
    """An attack setting, its user module searched in the config's folder (the validation context)."""
    return parse_attack(value, (info.context or {}).get("folders", ()))


class AdversarialTrainingConfig(_Strict):
    """J̃ = α·J(x) + (1−α)·J(x̃), x̃ = `attack`'s examples of the batch, regenerated every step and
    treated as constants (§6 with any attack: PGD's is Madry et al.'s adversarial training).

    The paper's short form names a perturbation of size `eps` instead of an attack: ``fgsm``
    x̃ = x + ε·sign(∇ₓJ) (§6, the default), or the noise controls ``random_sign`` (±ε per pixel)
    and ``uniform`` (U(−ε, ε)) of S6.noise_*: the attacks fgsm, random_sign and uniform_noise.
    """

    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5
    eps: NonNegativeFloat = 0.25
    perturbation: Literal["fgsm", "random_sign", "uniform"] = "fgsm"
    attack: SerializeAsAny[AttackSpec] | None = None
    # "mix": the α-mix above. "trades" (Zhang et al. 2019): J(x) + β·KL(p(x) ‖ p(x̃)), x̃ the
    # attack's examples on the KL from the clean prediction (the model in inference mode), alpha unused.
    objective: Literal["mix", "trades"] = "mix"
    beta: NonNegativeFloat = 6.0  # TRADES' β = 1/λ (their CIFAR-10 setting)

    _attack_by_name = field_validator("attack", mode="before")(_attack_in_context)

    @model_validator(mode="after")
    def _attack_or_short_form(self):
        if self.attack is not None and {"eps", "perturbation"} & self.model_fields_set:
            raise ValueError("give either attack or the short form's eps / perturbation, not both")
        if self.objective == "trades" and "alpha" in self.model_fields_set:
            raise ValueError("alpha weighs the mix's terms; TRADES weighs its KL term with beta")
        return self

    @model_serializer(mode="wrap")
    def _one_form(self, handler):
        # Dumped as given: the short form, or the attack (so that a dump validates again).
        out = handler(self)
        if isinstance(out, dict):
            for key in ("eps", "perturbation") if self.attack is not None else ("attack",):
                out.pop(key, None)
        return out

    def training_attack(self) -> AttackSpec:
        """The attack that makes the training's adversarial examples."""
        if self.attack is not None:
            return self.attack
        return parse_attack({"name": PERTURBATIONS[self.perturbation], "eps": self.eps})

    def validation_attack(self) -> AttackSpec:
        """What ``early_stopping_on: adversarial_error`` measures: the training's attack, or FGSM of
        the short form's ε (the noise controls too)."""
        return self.attack if self.attack is not None else parse_attack({"name": "fgsm", "eps": self.eps})


class RubbishTrainingConfig(_Strict):
    """Appendix A's training on Gaussian rubbish: every minibatch gains `per_batch` draws of
    N(0, I) in the input space, labelled `label` — an extra "no class" output of the model (a
    network with one more class than the data)."""

    per_batch: PositiveInt = 10
    label: Annotated[int, NotBool, Field(ge=0, le=MAX_INT)] = 10


class L1Config(_Strict):
    layer: str  # parameter collection name, e.g. maxout0 (the first maxout layer)
    coefficient: NonNegativeFloat


class AugmentConfig(_Strict):
    """Random translations by up to `crop_pad` pixels (crops of the zero-padded image) and, with
    `flip`, horizontal reflections, drawn for every training batch (fgsm_repro.data.augment)."""

    crop_pad: Annotated[int, NotBool, Field(ge=0, le=MAX_INT)] = 8
    flip: bool = True


class Stage2Config(_Strict):
    """pylearn2's second stage: continue from the best stage-1 state on train + validation until
    the objective on the former validation part falls to stage 1's best training objective."""

    max_epochs: PositiveInt


class RobustMonitorConfig(_Strict):
    """Catastrophic overfitting, watched (Wong, Rice & Kolter 2020): after every stage-1 epoch, the
    error under `attack` of the model (inference mode) on the first `examples` images of the
    validation split (of the training split without one), kept in the history as
    ``robust_error``. With `stop_rise`, training stops at the epoch whose error rose by more than
    `stop_rise` points over the epoch before, and keeps that epoch's starting parameters (their
    remedy: early stopping on the robust error of a minibatch)."""

    attack: SerializeAsAny[AttackSpec]
    examples: PositiveInt = 512
    stop_rise: PositiveFloat | None = None

    _attack_by_name = field_validator("attack", mode="before")(_attack_in_context)


class TrainConfig(_Strict):
    epochs: PositiveInt
    batch_size: PositiveInt = 100
    optimizer: OptimizerConfig
    # L2 penalty weight_decay/2·‖w‖² on the weights (adds weight_decay·w to their gradient); biases excluded.
    weight_decay: NonNegativeFloat = 0.0
    # Stop after this many epochs without a new best validation error; keep the best
    # parameters. None: train for `epochs` and keep the last parameters.
    early_stopping_patience: PositiveInt | None = None
    # What early stopping watches: clean validation error, or the validation error under FGSM
    # with the adversarial-training ε (T2.adv1600).
    early_stopping_on: Literal["error", "adversarial_error"] = "error"
    checkpoint_every: PositiveInt = 5
    # Measure the validation error every this many epochs (and after the last): a long run's
    # evaluation costs little. How often it is watched changes no parameter, so it is not hashed.
    validate_every: PositiveInt = 1
    # Max-norm constraint on every weight column (a conv kernel's: each filter), or per layer
    # ({layer: limit}; layers not named are not constrained).
    max_col_norm: PositiveFloat | dict[str, PositiveFloat] | None = None
    # A layer's learning rate times this (pylearn2's W_lr_scale and b_lr_scale), by layer name.
    lr_scale: dict[str, PositiveFloat] = Field(default_factory=dict)
    # L1 penalty coefficient·Σ|W| on the weights of one layer (§5's control; None: no penalty).
    l1: L1Config | None = None
    adversarial: AdversarialTrainingConfig | None = None
    robust_monitor: RobustMonitorConfig | None = None
    rubbish: RubbishTrainingConfig | None = None
    augment: AugmentConfig | None = None
    stage2: Stage2Config | None = None
    # After stage 1, train afresh on train + validation for the best epoch's number of epochs
    # (the paper's protocol for the 1600-unit adversarially trained network, §6).
    retrain_on_all: bool = False
    # Split every minibatch across all devices (fgsm_repro.sharding): the same training up to
    # float rounding, so not part of the config hash.
    data_parallel: bool = False

    @model_validator(mode="after")
    def _one_second_stage(self):
        if self.stage2 and self.retrain_on_all:
            raise ValueError("stage2 and retrain_on_all exclude each other")
        if self.validate_every > 1 and (self.early_stopping_patience or self.stage2 or self.retrain_on_all):
            raise ValueError("early stopping, stage 2 and retraining watch every epoch: validate_every must be 1")
        return self


class RunRef(_Strict):
    """A training of another experiment config, reused as it was trained there (same profile and
    seeds; trained there first if it has not been)."""

    config: str  # the other config's name: its file's stem, in the same folder as this config
    training: str = "model"


# Short names of train settings in the tags of grid points (checkpoint folders, tables). A grid
# key may name a nested setting with dots, e.g. optimizer.learning_rate.
GRID_TAGS = {"weight_decay": "wd", "optimizer.learning_rate": "lr"}


class TrainingConfig(_Strict):
    """One trained model of an experiment: a model of the experiment's `models`, trained with the
    experiment's `train` section with this `train` merged over it.

    A `grid` of train settings trains one run per point: with ``choose: validation`` the point with
    the lowest validation error is kept (settings the paper leaves unstated, chosen on the
    validation split), with ``choose: all`` every point is kept (a sweep, which experiments run
    without checkpoints). `measure_epochs` trains each point for the last of them without early
    stopping, and the experiment measures the model after each (how training length moves a
    number). `reuse` takes the trained run of another config's training instead of training here.
    """

    model: str = "model"
    train: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] = Field(default_factory=dict)
    choose: Literal["validation", "all"] = "validation"
    measure_epochs: list[PositiveInt] = Field(default_factory=list)
    reuse: RunRef | None = None

    @model_validator(mode="after")
    def _reuse_alone(self):
        if self.reuse and (self.train or self.grid or self.measure_epochs or "model" in self.model_fields_set):
            raise ValueError("reuse takes the other config's training as it is: no model, train, grid or "
                             "measure_epochs beside it")
        return self

    def points(self) -> list[dict[str, Any]]:
        """The grid's points (train settings), in order; one empty point without a grid."""
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def overrides(self, point: dict[str, Any]) -> dict[str, Any]:
        """What this training (at grid `point`) merges over the experiment's train section."""
        extra = {"epochs": max(self.measure_epochs), "early_stopping_patience": None} if self.measure_epochs else {}
        return deep_merge(deep_merge(self.train, _nested(point)), extra)


def _nested(point: dict[str, Any]) -> dict[str, Any]:
    """``{"optimizer.learning_rate": .01}`` -> ``{"optimizer": {"learning_rate": .01}}``."""
    out: dict[str, Any] = {}
    for key, value in point.items():
        *parents, last = key.split(".")
        for p in reversed(parents):
            value = {last: value}
            last = p
        out = deep_merge(out, {last: value})
    return out


def point_tag(point: dict[str, Any]) -> str:
    """A short name for a grid point, e.g. ``wd0.0001``."""
    return "-".join(f"{GRID_TAGS.get(k, k)}{v:g}" if isinstance(v, float | int) and not isinstance(v, bool)
                    else f"{GRID_TAGS.get(k, k)}{v}" for k, v in point.items())


class ExperimentConfig(_Strict):
    name: str = ""  # the config file's stem, set on load: names results/<name>.<profile>.json and runs/
    experiment: str  # the experiment module (several configs may share one)
    claims: list[str] = Field(min_length=1)
    description: str = ""
    profile: Literal["paper", "fast", "ci"] = "paper"
    profile_note: str = ""
    # Non-empty: this profile does not run the experiment, and this says why (e.g. a network too
    # large to tell anything at the fast profile's length is left to the paper profile).
    skip: str = ""
    # Where this experiment knowingly departs from the paper (shown in the report).
    deviations: list[str] = Field(default_factory=list)
    data: DataConfig = DataConfig()
    # One model (named "model"), or several by name under `models`.
    model: ModelConfig | None = None
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    train: TrainConfig
    attack: SerializeAsAny[AttackSpec]
    seeds: list[Annotated[int, NotBool, Field(ge=0, le=MAX_SEED)]] = Field(default=[0], min_length=1)
    # Train the seeds together in one vmapped program (experiments that support it) rather than
    # one after another: the same runs up to float rounding, so not part of the config hash.
    # None (auto): together on accelerators, one after another on a CPU, where the vmapped epoch
    # is the slower one (the bench's ensemble workload; docs/performance.md).
    seeds_together: bool | None = None
    # The experiment's own settings (e.g. an ensemble's size), checked by its module's `Options`.
    options: dict[str, Any] = Field(default_factory=dict)
    # The trained models, by name (experiments refer to them by these names); none: one training
    # of "model" with `train` as it is.
    trainings: dict[str, TrainingConfig] = Field(default_factory=dict)
    # The folder the config was loaded from: `reuse` finds the configs it names there.
    _folder: Path | None = PrivateAttr(default=None)

    @property
    def folder(self) -> Path:
        """The config's folder; for a config not loaded from a file (a record's, or while it is
        validated), the workdir's configs/, or outside a project folder the current folder."""
        from fgsm_repro import workdir

        found = workdir.current(required=False)
        return self._folder or (found.configs if found else Path.cwd())

    _attack_by_name = field_validator("attack", mode="before")(_attack_in_context)

    @field_validator("claims")
    @classmethod
    def _known_claims(cls, v):
        from fgsm_repro.reference import claim_ids

        unknown = [c for c in v if c not in claim_ids() and not c.startswith(OWN_CLAIM)]
        if unknown:
            raise ValueError(f"unknown claim ID(s) {unknown}: the paper's are listed by `fgsm-repro report --list`; "
                             f"a number of your own with no paper value is named {OWN_CLAIM}<name>")
        return v

    @model_validator(mode="after")
    def _models_and_trainings(self):
        if (self.model is None) == (not self.models):
            raise ValueError("give either model (one model) or models (several, by name)")
        models = self.model_specs()
        for name, training in self.training_specs().items():
            if training.reuse:
                continue
            if training.model not in models:
                raise NestedFieldError(("trainings", name, "model"), f"{training.model!r} is not one of the models "
                                       f"({', '.join(models)})")
            for point in training.points():
                try:
                    self.train_of(name, point)
                except ValidationError as e:
                    err = e.errors()[0]
                    raise NestedFieldError(("trainings", name, "train", *err["loc"]), err["msg"]) from None
            if training.choose == "validation" and len(training.points()) > 1 and self.data.validation_size == 0:
                raise NestedFieldError(("trainings", name, "grid"), "choosing on validation needs a validation set "
                                       "(data.validation_size > 0)")
        return self

    def model_specs(self) -> dict[str, ModelConfig]:
        """The models by name (a single `model` is named "model")."""
        return dict(self.models) or {"model": self.model}

    def training_specs(self) -> dict[str, TrainingConfig]:
        """The trainings by name (without `trainings`: one, "model", with `train` as it is)."""
        return dict(self.trainings) or {"model": TrainingConfig()}

    def default_training(self) -> str:
        """The training that `fgsm-repro train` trains unless told: "model", else the first."""
        specs = self.training_specs()
        return "model" if "model" in specs else next(iter(specs))

    def train_of(self, training: str | None = None, point: dict[str, Any] | None = None) -> TrainConfig:
        """The train section of `training` (default: :meth:`default_training`) at grid `point`."""
        overrides = self.training_specs()[training or self.default_training()].overrides(point or {})
        if not overrides:
            return self.train
        return TrainConfig.model_validate(deep_merge(self.train.model_dump(), overrides),
                                          context={"folders": [self.folder]})

    def largest_batch_size(self, trainings: list[str] | None = None) -> int:
        """The largest batch among `trainings` (default: all) that this config trains itself (at
        every grid point): the training set must hold it."""
        names = trainings or list(self.training_specs())
        specs = {n: self.training_specs()[n] for n in names}
        return max((self.train_of(n, p).batch_size for n, spec in specs.items() if not spec.reuse
                    for p in spec.points()), default=1)

    def model_of(self, training: str | None = None) -> ModelConfig:
        return self.model_specs()[self.training_specs()[training or self.default_training()].model]

    def hash(self) -> str:
        """The hash of what this config runs (:func:`fgsm_repro.config.hashing.config_hash`)."""
        return hashing.config_hash(self)

    def training_hash(self, training: str | None = None, point: dict[str, Any] | None = None) -> str:
        """The hash of what trains `training` at `point` (:func:`fgsm_repro.config.hashing.training_hash`)."""
        return hashing.training_hash(self, training, point)


def deep_merge(base: dict, override: dict) -> dict:
    """Recursively merge `override` into a copy of `base` (lists and scalars are replaced)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
