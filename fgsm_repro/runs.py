"""Run directories: a config's model trained for one seed, its final parameters and a run record,
and the way back from a run directory to the trained model. `fgsm-repro train` writes one per
command; every training inside an experiment leaves one beside its checkpoints.

A run directory holds ``checkpoints/`` (orbax, for resuming), ``final/`` (the trained parameters)
and ``run.json`` (what was trained, on which data, and how well). Both files appear in one rename
each: an interrupted run never leaves a half-written ``final/`` or record.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from pydantic import ValidationError

from fgsm_repro import trainings
from fgsm_repro.config import (
    ExperimentConfig,
    deep_merge,
    experiment_configs,
    load_config,
    point_tag,
    train_overrides,
)
from fgsm_repro.curves import save_history
from fgsm_repro.data import Splits, make_splits
from fgsm_repro.errors import ReproError
from fgsm_repro.evaluation import evaluate
from fgsm_repro.files import check_writable, write_json
from fgsm_repro.objectives import Objective
from fgsm_repro.processes import require_data_parallel, sync, writes_files
from fgsm_repro.sharding import data_mesh
from fgsm_repro.train import Checkpoints, FitResult, Trainer, fit

RECORD, FINAL = "run.json", "final"


def default_run_dir(config: str | Path, profile: str, seed: int) -> Path:
    return Path("runs") / f"{Path(config).stem}.{profile}.seed{seed}"


@dataclass
class TrainedRun:
    """A trained model read back from its run directory, with the config and data it was trained on."""

    run_dir: Path
    record: dict
    cfg: ExperimentConfig
    model: nn.Module
    objective: Objective
    params: Any
    splits: Splits

    @property
    def mesh(self):
        return _mesh(self.cfg)


def _mesh(cfg: ExperimentConfig):
    """The evaluation mesh of a data-parallel config (None: one device)."""
    return data_mesh() if cfg.train.data_parallel else None


def train_run(config: str | Path, profile: str, *, training: str | None = None, seed: int | None = None,
              run_dir: Path | None = None, fresh: bool = False, data_parallel: bool | None = None,
              data_dir: Path | None = None, on_epoch=None) -> dict:
    """Train training `training` of `config` (default: its only or "model" training) for one seed
    into `run_dir`, resuming from its checkpoints, and return the run record written to
    ``run.json``. A grid trains every point and keeps the one with the lowest validation error.
    `on_epoch(record, params)` follows the training."""
    cfg = load_config(config, profile, **train_overrides(data_parallel))
    training = training or cfg.default_training()
    spec = trainings.training(cfg, training)
    if spec.reuse:  # trained as the other config trains it, in its run folder
        trainings.reused_config(cfg, training)
        return train_run(experiment_configs(cfg.folder)[spec.reuse.config], profile, training=spec.reuse.training,
                         seed=seed, run_dir=run_dir, fresh=fresh, data_parallel=data_parallel, data_dir=data_dir,
                         on_epoch=on_epoch)
    require_data_parallel(cfg.train.data_parallel, config)
    seed = cfg.seeds[0] if seed is None else seed
    run_dir = Path(run_dir or default_run_dir(config, profile, seed)).resolve()
    if writes_files():  # before any work: a run dir that cannot be written must not cost the training
        check_writable(run_dir, "run dir")
    if fresh and run_dir.exists() and writes_files():
        shutil.rmtree(run_dir)
    sync("fresh run dir")
    start = time.perf_counter()
    splits = make_splits(cfg.data, data_dir)
    model, objective = trainings.build_model_of(cfg, training)
    points, fits = spec.points(), []
    for point in points:
        folder = "checkpoints" + (f"-{point_tag(point)}" if len(points) > 1 else "")
        key = f"{cfg.training_hash(training, point)}-seed{seed}"
        fits += fit(Trainer(model, objective, cfg.train_of(training, point)), splits, [seed], on_epoch=on_epoch,
                    checkpoints=Checkpoints(lambda _, folder=folder: run_dir / folder, key))
    kept = trainings.kept_point(fits)
    point, result = points[kept], fits[kept]
    if writes_files():
        save_history(run_dir, result.history)
    return write_run(run_dir, config, cfg, training, point, seed, result, splits, mesh=_mesh(cfg),
                     wall_time_s=round(time.perf_counter() - start, 2), always=True)


def write_run(run_dir: Path, config: str | Path, cfg: ExperimentConfig, training: str, point: dict, seed: int,
              result: FitResult, splits: Splits, *, mesh=None, wall_time_s: float | None = None,
              always: bool = False) -> dict:
    """Make `run_dir` a run directory of training `training` (grid point `point`) of `cfg` for
    `seed`: the trained parameters in ``final/`` and the record in ``run.json``, which `fgsm-repro
    attack` and :func:`load_run` read. Unless `always`, a run dir already holding this very
    training (same hash, seed and best epoch) is left as it is. Returns the record."""
    run_dir = Path(run_dir).resolve()
    config_file = Path(config).resolve()
    record = {"config": str(config_file), "config_from_run_dir": os.path.relpath(config_file, run_dir),
              "config_name": cfg.name, "resolved_config": cfg.model_dump(mode="json"), "profile": cfg.profile,
              "training": training, "point": point,
              "seed": seed, "run_dir": str(run_dir), "config_hash": cfg.hash(),
              "training_hash": cfg.training_hash(training, point), "model": cfg.model_of(training).name,
              "dataset": splits.info.as_dict(), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
              "val_error": result.best_val_error}
    if not always and _holds(run_dir, record):
        return json.loads((run_dir / RECORD).read_text())
    model, objective = trainings.build_model_of(cfg, training)
    record["test_error"] = evaluate(model, objective, result.params, splits.x_test, splits.y_test, mesh=mesh)["error"]
    record["wall_time_s"] = wall_time_s
    _save_params(run_dir, result.params)
    if writes_files():
        write_json(run_dir / RECORD, record)
    sync("run written")  # no process ends before the run is complete on disk
    return record


def _holds(run_dir: Path, record: dict) -> bool:
    """Whether `run_dir` already holds the trained run `record` describes (its parameters and record)."""
    try:
        kept = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return False
    same = ("training_hash", "seed", "point", "best_epoch", "epochs_run", "config_hash")
    return (run_dir / FINAL).is_dir() and all(kept.get(k) == record[k] for k in same)


def _save_params(run_dir: Path, params) -> None:
    """Write the final parameters beside, then swap them in: never a half-written ``final/``."""
    final, staged = run_dir / FINAL, run_dir / f"{FINAL}.partial"
    if writes_files():
        shutil.rmtree(staged, ignore_errors=True)
    sync("final.partial cleared")
    with ocp.StandardCheckpointer() as ckptr:  # every process takes part; orbax writes once
        ckptr.save(staged, params)
    if writes_files():
        shutil.rmtree(final, ignore_errors=True)
        staged.rename(final)


def _config_of_run(run_dir: Path, record: dict, data_parallel: bool | None) -> ExperimentConfig:
    """The config `run_dir` was trained with: its file where it was, or where it is from the run
    dir (the project moved), or the project's config of that name (the file moved), or else the
    config as resolved when the run was trained (kept in the run record)."""
    profile, overrides = record["profile"], train_overrides(data_parallel)
    name = record.get("config_name") or Path(record["config"]).stem
    candidates = [Path(record["config"])]
    if record.get("config_from_run_dir"):
        candidates.append(run_dir.resolve() / record["config_from_run_dir"])
    candidates.append(experiment_configs().get(name, Path("/nonexistent")))
    for path in candidates:
        if path.is_file():
            return load_config(path, profile, **overrides)
    if not record.get("resolved_config"):
        raise ReproError(f"{run_dir}: its config {record['config']} is gone (moved or deleted) and the run record "
                         "does not hold a copy; put it back or train again")
    try:
        resolved = deep_merge(record["resolved_config"], overrides)
        return ExperimentConfig.model_validate(resolved)
    except ValidationError as e:
        raise ReproError(f"{run_dir}/{RECORD}: the config kept in the run record no longer loads "
                         f"({e.errors()[0]['msg']}); train again") from None


def load_run(run_dir: str | Path, *, data_parallel: bool | None = None, data_dir: Path | None = None) -> TrainedRun:
    """The trained model of `run_dir`, refused (one line) when its config's training part changed."""
    run_dir = Path(run_dir)
    record_path = run_dir / RECORD
    if not record_path.is_file():
        raise ReproError(f"{run_dir}: not a trained run (no {RECORD}); train one with `fgsm-repro train CONFIG`, or "
                         "run its experiment with `fgsm-repro reproduce`")
    try:
        record = json.loads(record_path.read_text())
        config, trained_hash = record["config"], record["training_hash"]
        record["profile"]  # noqa: B018 (a record without it is unreadable)
    except (ValueError, KeyError) as e:
        raise ReproError(f"{record_path}: unreadable run record ({type(e).__name__}: {e}); train again") from None
    cfg = _config_of_run(run_dir, record, data_parallel)
    training = record.get("training") or cfg.default_training()
    if training not in cfg.training_specs() or cfg.training_hash(training, record.get("point")) != trained_hash:
        raise ReproError(f"the data/model/train sections of {config} changed since {run_dir} was trained; "
                         "train again or restore the config")
    splits = make_splits(cfg.data, data_dir)
    model, objective = trainings.build_model_of(cfg, training)
    # The parameters' shapes without computing them: orbax restores into this tree.
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.asarray(splits.x_test[:1])))["params"]
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(run_dir.resolve() / FINAL, template)
    except Exception as e:  # orbax raises many types for missing or damaged checkpoints
        raise ReproError(f"{run_dir}/{FINAL}: cannot restore the trained parameters ({type(e).__name__}); "
                         "train again") from None
    return TrainedRun(run_dir, record, cfg, model, objective, params, splits)
