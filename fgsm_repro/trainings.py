"""A config's named trainings, resolved: the model each trains, the config that a reused training
comes from, and which grid point is kept. Shared by the experiments and `fgsm-repro train`."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from fgsm_repro.config import ExperimentConfig, TrainingConfig, experiment_configs, load_config, train_overrides
from fgsm_repro.errors import ReproError
from fgsm_repro.models import build_model
from fgsm_repro.objectives import Objective
from fgsm_repro.train import FitResult


def training(cfg: ExperimentConfig, name: str, *, kept: bool = True) -> TrainingConfig:
    """Training `name` of `cfg`; with `kept`, one whose grid keeps one point (not ``choose: all``)."""
    specs = cfg.training_specs()
    if name not in specs:
        raise ReproError(f"{cfg.name}: no training {name!r} under 'trainings' (it has {', '.join(specs)})")
    if kept and specs[name].choose == "all" and len(specs[name].points()) > 1:
        raise ReproError(f"{cfg.name}: training {name!r} keeps every grid point (choose: all): it is a sweep, "
                         "not one trained model")
    return specs[name]


def build_model_of(cfg: ExperimentConfig, name: str) -> tuple[nn.Module, Objective]:
    """The model (and its output objective) that training `name` of `cfg` trains."""
    model = cfg.model_of(name)
    return build_model(model.name, model.options, [cfg.folder])


def reused_config(cfg: ExperimentConfig, name: str) -> ExperimentConfig:
    """The config whose training `name` of `cfg` reuses: from the same folder, in the same profile
    and with the same data-parallel setting; its data must be `cfg`'s."""
    ref = cfg.training_specs()[name].reuse
    configs = experiment_configs(cfg.folder)
    if ref.config not in configs:
        raise ReproError(f"{cfg.name}: trainings.{name}.reuse: no config {ref.config!r} in {cfg.folder}")
    other = load_config(configs[ref.config], cfg.profile, **train_overrides(cfg.train.data_parallel))
    if other.data != cfg.data:
        raise ReproError(f"{cfg.name}: trainings.{name} reuses {ref.config}, which trains on other data")
    training(other, ref.training, kept=False)  # a sweep too: an experiment may run another's sweep
    return other


def kept_point(fits: Sequence[FitResult]) -> int:
    """Which of a grid's runs is kept: the first with the lowest validation error (the only one
    without a choice)."""
    if len(fits) == 1:
        return 0
    return min(range(len(fits)), key=lambda i: fits[i].best_val_error)


def reused_training_hashes(cfg: ExperimentConfig) -> dict[str, str]:
    """For each training of `cfg` that reuses another config's: the training hash of what it
    finally trains (following reuse through other configs), so that a result can tell when a
    recipe it was built on has changed. A grid's points are joined."""
    def resolve(config: ExperimentConfig, name: str) -> str:
        spec = config.training_specs()[name]
        if spec.reuse:
            return resolve(reused_config(config, name), spec.reuse.training)
        return "+".join(config.training_hash(name, point) for point in spec.points())

    return {name: resolve(cfg, name) for name, spec in cfg.training_specs().items() if spec.reuse}
