"""Run an experiment config for every seed, aggregate, and write its results file."""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from fgsm_repro.config import (
    OWN_CLAIM,
    ExperimentConfig,
    experiment_configs,
    load_config,
    read_yaml,
    train_overrides,
)
from fgsm_repro.curves import learning_curves
from fgsm_repro.data import make_splits
from fgsm_repro.errors import NestedFieldError, ReproError
from fgsm_repro.experiments import find_experiment
from fgsm_repro.experiments.common import Context, Outcome, experiment_options, save_figure
from fgsm_repro.models import build_model, find_model
from fgsm_repro.processes import require_data_parallel, writes_files
from fgsm_repro.reference import claim_ids
from fgsm_repro.results import (
    ResultRecord,
    config_gone,
    git_state,
    provenance,
    read_results,
    stale_reason,
    write_result,
)
from fgsm_repro.sampling import samples_of
from fgsm_repro.sharding import data_mesh
from fgsm_repro.train import seeds_together_by_default

# Two-sided 95% Student-t quantiles for n-1 degrees of freedom (n = number of seeds).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 11: 2.201, 12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042}


def _t95(dof: int) -> float:
    return _T95.get(dof) or _T95[max(k for k in _T95 if k <= dof)]


def aggregate(outcomes: list[Outcome]) -> tuple[dict, dict]:
    """Mean over seeds of every numeric metric, and its 95% confidence half-width (n > 1)."""
    mean, ci95 = {}, {}
    for claim, metrics in outcomes[0].measured.items():
        mean[claim], ci95[claim] = {}, {}
        for key, first in metrics.items():
            values = [o.measured[claim].get(key) for o in outcomes]
            if len(values) > 1 and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
                arr = np.asarray(values, np.float64)
                mean[claim][key] = float(arr.mean())
                ci95[claim][key] = float(_t95(len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
            else:
                mean[claim][key] = first
    return mean, {c: v for c, v in ci95.items() if v}


def check_names(cfg: ExperimentConfig, config_path: str | Path) -> None:
    """The names `cfg` uses (its experiment, models) exist, each model's task is the data's, the
    attack's target and the rubbish label are classes of the models (one-line errors; what `train`
    checks)."""
    try:
        find_experiment(cfg.experiment, [cfg.folder])
    except ReproError as e:
        raise ReproError(f"{config_path}: field 'experiment': {e}") from None
    for name, model in cfg.model_specs().items():
        field = "model" if cfg.model is not None else f"models.{name}"
        try:
            binary = find_model(model.name, [cfg.folder]).objective.binary
        except ReproError as e:
            raise ReproError(f"{config_path}: field '{field}.name': {e}") from None
        if binary != (cfg.data.classes is not None):
            raise ReproError(f"{config_path}: field 'data.classes': model {model.name} needs " + (
                "a binary task (data.classes: [a, b])" if binary else "all classes (no data.classes)"))
        if not binary and cfg.attack is not None:
            try:
                cfg.attack.check_classes(_num_classes(cfg, model))
            except NestedFieldError as e:
                raise ReproError(f"{config_path}: field 'attack.{'.'.join(map(str, e.loc))}': {e.msg}") from None
    for name, training in cfg.training_specs().items():
        rubbish = None if training.reuse else cfg.train_of(name, training.points()[0]).rubbish
        if rubbish is None:
            continue
        classes = _num_classes(cfg, cfg.model_of(name))
        data_classes = 2 if cfg.data.classes else 10
        if not (rubbish.label == data_classes and classes == data_classes + 1):
            raise ReproError(f"{config_path}: field 'trainings.{name}.train.rubbish.label': the rubbish class must be "
                             f"the model's extra class, {data_classes} of num_classes {data_classes + 1} (the data has "
                             f"{data_classes} classes; the model {classes})")


def _num_classes(cfg: ExperimentConfig, model) -> int | None:
    return getattr(build_model(model.name, model.options, [cfg.folder])[0], "num_classes", None)


def experiment_module(cfg: ExperimentConfig, config_path: str | Path):
    """The experiment module `cfg` names, after checking the names it uses and what the experiment
    needs of the config (one-line errors)."""
    check_names(cfg, config_path)
    module = find_experiment(cfg.experiment, [cfg.folder])
    experiment_options(cfg, getattr(module, "Options", None), config_path)
    missing = [t for t in module.TRAININGS if t not in cfg.training_specs()]
    if missing:
        raise ReproError(f"{config_path}: field 'trainings': experiment {cfg.experiment} needs the trainings "
                         f"{', '.join(missing)} (it has {', '.join(cfg.training_specs())})")
    return module


def run_config(config_path: str | Path, profile: str, ctx: Context, data_parallel: bool | None = None) -> Path:
    """Run `config_path` with `profile` for each of its seeds and write its results file;
    `data_parallel` (if given) overrides the config's ``train.data_parallel``."""
    cfg = load_config(config_path, profile, **train_overrides(data_parallel))
    module = experiment_module(cfg, config_path)
    require_data_parallel(cfg.train.data_parallel, config_path)
    git = git_state()  # at the start: the code that runs, even if the tree changes meanwhile
    start = time.perf_counter()
    splits = make_splits(cfg.data, ctx.data_dir, batch_size=cfg.largest_batch_size())
    ctx = dataclasses.replace(ctx, mesh=data_mesh() if cfg.train.data_parallel else None, histories={})
    together = cfg.seeds_together if cfg.seeds_together is not None else seeds_together_by_default()
    if together and len(cfg.seeds) > 1 and hasattr(module, "run_seeds"):
        outcomes = module.run_seeds(cfg, splits, cfg.seeds, ctx)
    else:
        outcomes = [module.run(cfg, splits, seed, ctx) for seed in cfg.seeds]
    measured, ci95 = aggregate(outcomes)
    figures = dict(outcomes[0].figures)
    if ctx.histories:
        adversarial = cfg.train.early_stopping_on == "adversarial_error"
        fig = learning_curves(ctx.histories, f"{cfg.name} [{cfg.profile}]: learning curves", adversarial)
        figures["learning curves"] = save_figure(fig, f"{cfg.name}.learning", cfg.profile, ctx)
    record = ResultRecord(**{
        "name": cfg.name,
        "experiment": cfg.experiment,
        "description": cfg.description,
        "claims": cfg.claims,
        "measured": measured,
        "ci95": ci95,
        # One run's rates and means: how many examples each is of (the report's 95% intervals).
        "samples": samples_of(outcomes[0].measured) if len(outcomes) == 1 else {},
        "per_seed": {str(s): o.measured for s, o in zip(cfg.seeds, outcomes, strict=True)} if len(outcomes) > 1
        else {},
        "tables": outcomes[0].tables,
        "figures": figures,
        "deviations": cfg.deviations,
        "profile_note": cfg.profile_note,
        "notes": outcomes[0].notes,
        "sensitivity": outcomes[0].sensitivity,
        "provenance": provenance(cfg, config_path, splits.info, time.perf_counter() - start, git),
    })
    return write_result(record, ctx.results_dir)


def is_config_path(arg: str | Path) -> bool:
    """Whether a command-line argument names a config file (it ends in .yaml or .yml, or is an
    existing file) rather than a claim ID."""
    return str(arg).endswith((".yaml", ".yml")) or Path(arg).is_file()


def configs_for(ids: list[str] | None, config_dir: Path | None = None) -> list[Path]:
    """The experiment configs that `ids` name: config files (:func:`is_config_path`) as they are,
    claim IDs by the configs of `config_dir` (default: the workdir's configs/) that measure them;
    every config of `config_dir` when `ids` is empty."""
    from fgsm_repro import workdir

    ids = list(ids or [])
    chosen = []
    for arg in ids:
        if is_config_path(arg):
            if not Path(arg).is_file():
                raise ReproError(f"config file not found: {arg}")
            if Path(arg).resolve() not in chosen:
                chosen.append(Path(arg).resolve())
    claims = [arg for arg in ids if not is_config_path(arg)]
    if ids and not claims:
        return chosen
    if config_dir is None:
        workdir.current()  # none found: one line that says so, not "no experiment yet"
    configs = experiment_configs(config_dir) if config_dir else experiment_configs()
    if not ids:
        return list(configs.values())
    claims_of = {name: read_yaml(path).get("claims", []) for name, path in configs.items()}
    known = set(claim_ids())
    for claim in claims:
        if claim not in known and not claim.startswith(OWN_CLAIM):  # a config's own X. claims: by its configs
            raise ReproError(f"unknown claim ID {claim!r}; see `fgsm-repro report --list`")
        names = [n for n, claims in claims_of.items() if claim in claims]
        if not names:
            raise ReproError(f"claim {claim} has no experiment yet (implemented: "
                             f"{', '.join(sorted(c for cs in claims_of.values() for c in cs))})")
        chosen += [configs[n] for n in names if configs[n] not in chosen]
    return chosen


def skipped_at(configs: list[Path], profile: str) -> dict[Path, str]:
    """Of `configs`, those that `profile` does not run (their ``skip``), with the reason each gives."""
    reasons = {config: load_config(config, profile).skip for config in configs}
    return {config: reason for config, reason in reasons.items() if reason}


def stale_configs(configs: list[Path], profile: str, results_dir: Path, data_dir: Path | None = None) -> list[Path]:
    """Of `configs`, those whose results file of `profile` in `results_dir` is stale
    (:func:`fgsm_repro.results.stale_reason`); configs without a results file are not stale. A stale
    result whose config is gone (deleted or renamed) has nothing to re-run it: said on stderr."""
    stale = set()
    for rec in read_results(results_dir):
        if rec["provenance"]["profile"] == profile and (reason := stale_reason(rec, data_dir=data_dir)):
            stale.add(rec["name"])
            if config_gone(rec) and writes_files():
                print(f"warning: {rec['_file']} is stale ({reason}): no config is left to re-run it; restore "
                      "its config, or delete the results file", file=sys.stderr)
    return [c for c in configs if Path(c).stem in stale]
