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
from fgsm_repro.checksums import tree_sha256
from fgsm_repro.config import (
    PROFILES,
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
from fgsm_repro.files import check_writable, disk_problem, remove_orbax_temporaries, write_atomic, write_json
from fgsm_repro.locks import folder_lock
from fgsm_repro.objectives import Objective
from fgsm_repro.processes import require_data_parallel, sync, writes_files
from fgsm_repro.sharding import data_mesh
from fgsm_repro.train import Checkpoints, FitResult, Trainer, fit

RECORD, FINAL = "run.json", "final"
CHECKSUM = "params.sha256"  # in final/: tree_sha256 of the parameters, renamed into place with them


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
    with folder_lock(run_dir, wait=False):  # one process per run dir, until its run is written
        if fresh and run_dir.exists() and writes_files():
            shutil.rmtree(run_dir)
        sync("fresh run dir")
        start = time.perf_counter()
        splits = make_splits(cfg.data, data_dir, batch_size=cfg.largest_batch_size([training]))
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
    # One writer at a time; another process of the same experiment waits, then finds it written.
    with folder_lock(run_dir, wait=True):
        if not always and _holds(run_dir, record, result.params):
            return json.loads((run_dir / RECORD).read_text())
        model, objective = trainings.build_model_of(cfg, training)
        record["test_error"] = evaluate(model, objective, result.params, splits.x_test, splits.y_test,
                                        mesh=mesh)["error"]
        record["wall_time_s"] = wall_time_s
        _save_params(run_dir, result.params)
        if writes_files():
            write_json(run_dir / RECORD, record)
        sync("run written")  # no process ends before the run is complete on disk
    return record


def _holds(run_dir: Path, record: dict, params) -> bool:
    """Whether `run_dir` already holds the trained run `record` describes: its record, and in
    ``final/`` exactly `params` (read back and compared: not damaged, nor of another training)."""
    try:
        kept = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    same = ("training_hash", "seed", "point", "best_epoch", "epochs_run", "config_hash")
    if not isinstance(kept, dict) or not all(kept.get(k) == record[k] for k in same):
        return False
    checksum = tree_sha256(params)
    try:
        if (run_dir / FINAL / CHECKSUM).read_text().strip() != checksum:
            return False
        with ocp.StandardCheckpointer() as ckptr:
            return tree_sha256(ckptr.restore(run_dir / FINAL, params)) == checksum
    except Exception:  # missing or damaged: written again
        return False


def _save_params(run_dir: Path, params) -> None:
    """Write the final parameters and their checksum beside, then swap them in: never a
    half-written ``final/``. A full disk is one line and leaves nothing half-written behind."""
    final, staged = run_dir / FINAL, run_dir / f"{FINAL}.partial"

    def clear(settle_s: float = 0.0) -> None:
        if writes_files():
            shutil.rmtree(staged, ignore_errors=True)
            remove_orbax_temporaries(run_dir, staged.name, settle_s=settle_s)

    clear()
    sync("final.partial cleared")
    checksum = tree_sha256(params)
    try:
        with ocp.StandardCheckpointer() as ckptr:  # every process takes part; orbax writes once
            ckptr.save(staged, params)
        if writes_files():
            write_atomic(staged / CHECKSUM, checksum + "\n")
    except Exception as e:
        clear(settle_s=0.5)  # orbax's background writes may outlast the failed save
        if isinstance(e, ReproError) or (problem := disk_problem(e)) is None:
            raise
        raise ReproError(f"cannot write the trained parameters {final}: {problem}; free some space and run the same "
                         "command again (the checkpoints are kept)") from None
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


# The fields of run.json that are read back, and their types (None: may be null or absent).
RECORD_FIELDS: dict[str, tuple] = {
    "config": (str,), "profile": (str,), "training_hash": (str,), "config_hash": (str,), "seed": (int,),
    "training": (str, None), "point": (dict, None), "config_name": (str, None), "config_from_run_dir": (str, None),
    "resolved_config": (dict, None)}


@dataclass
class RunInfo:
    """What a run directory's record says was trained, checked against the config as it is now:
    no data or parameters loaded (:func:`read_run`)."""

    run_dir: Path
    record: dict
    cfg: ExperimentConfig
    training: str


def read_run(run_dir: str | Path, *, data_parallel: bool | None = None) -> RunInfo:
    """Read and check `run_dir`'s ``run.json`` and find the config it was trained with, without
    loading data or parameters. One line naming the file when the record is unreadable or of the
    wrong shape; refused (one line) when the config's training part changed since."""
    run_dir = Path(run_dir)
    record_path = run_dir / RECORD
    if not record_path.is_file():
        raise ReproError(f"{run_dir}: not a trained run (no {RECORD}); train one with `fgsm-repro train CONFIG`, or "
                         "run its experiment with `fgsm-repro reproduce`")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # their messages are one line
        raise ReproError(f"{record_path}: unreadable run record ({type(e).__name__}: {e}); train again") from None
    if problem := _record_problem(record):
        raise ReproError(f"{record_path}: not a run record of fgsm-repro ({problem}); train again")
    cfg = _config_of_run(run_dir, record, data_parallel)
    training = record.get("training") or cfg.default_training()
    try:
        changed = training not in cfg.training_specs() or \
            cfg.training_hash(training, record.get("point")) != record["training_hash"]
    except (ValidationError, ValueError, TypeError, AttributeError):  # a grid point the config cannot take
        changed = True
    if changed:
        raise ReproError(f"the data/model/train sections of {record['config']} changed since {run_dir} was trained; "
                         "train again or restore the config")
    return RunInfo(run_dir, record, cfg, training)


def _record_problem(record: Any) -> str | None:
    """What makes `record` no run record (None: its fields that are read back have their types)."""
    if not isinstance(record, dict):
        return f"JSON {json.dumps(record)[:40]}, not an object"
    for key, types in RECORD_FIELDS.items():
        value = record.get(key)
        if value is None and None in types:
            continue
        if key not in record:
            return f"field {key!r} is missing"
        classes = tuple(t for t in types if t is not None)
        if not isinstance(value, classes) or isinstance(value, bool):
            return f"field {key!r} is {json.dumps(value)[:40]}, not {' or '.join(t.__name__ for t in classes)}"
    if record["profile"] not in PROFILES:
        return f"field 'profile' is {record['profile']!r}, not one of {', '.join(PROFILES)}"
    return None


def load_run(run_dir: str | Path, *, data_parallel: bool | None = None, data_dir: Path | None = None) -> TrainedRun:
    """The trained model of `run_dir` (:func:`read_run`, then its data and parameters), refused in
    one line when its parameters are damaged (they do not match the checksum saved with them)."""
    info = read_run(run_dir, data_parallel=data_parallel)
    run_dir, cfg = info.run_dir, info.cfg
    splits = make_splits(cfg.data, data_dir)
    model, objective = trainings.build_model_of(cfg, info.training)
    # The parameters' shapes without computing them: orbax restores into this tree.
    template = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.asarray(splits.x_test[:1])))["params"]
    final = run_dir.resolve() / FINAL
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(final, template)
    except Exception as e:  # orbax raises many types for missing or damaged checkpoints
        raise ReproError(f"{run_dir}/{FINAL}: cannot restore the trained parameters ({type(e).__name__}); "
                         "train again") from None
    if (final / CHECKSUM).exists():  # runs trained before checksums were saved have none
        try:
            expected = (final / CHECKSUM).read_text().strip()
        except (OSError, ValueError):
            expected = None
        if expected != tree_sha256(params):
            raise ReproError(f"{run_dir}/{FINAL}: the trained parameters are damaged (they do not match the checksum "
                             f"saved with them); train again: `fgsm-repro train CONFIG --run-dir {run_dir} --fresh`, "
                             "or for an experiment's run, `fgsm-repro reproduce` of its claims")
    return TrainedRun(run_dir, info.record, cfg, model, objective, params, splits)
