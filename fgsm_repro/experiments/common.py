"""What experiments share: the run context, the outcome record, training with selection on
the validation split, and the FGSM evaluation of a trained model."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh
from pydantic import BaseModel, ValidationError
from rich.console import Console

from fgsm_repro import trainings, workdir
from fgsm_repro.attacks.base import AttackSpec
from fgsm_repro.config import ExperimentConfig, experiment_configs, point_tag
from fgsm_repro.curves import save_history
from fgsm_repro.data import Splits
from fgsm_repro.errors import ReproError, field_problem
from fgsm_repro.evaluation import attack_metrics, evaluate
from fgsm_repro.files import save_figure_atomic
from fgsm_repro.objectives import Objective
from fgsm_repro.pictures import pyplot  # noqa: F401  (the experiments draw with it)
from fgsm_repro.processes import writes_files
from fgsm_repro.progress import Plan, progress
from fgsm_repro.runs import write_run
from fgsm_repro.train import Checkpoints, FitResult, Trainer, fit, seeds_together_by_default


@dataclass
class Context:
    """Where a run reads and writes, and how chatty it is. The folders default to the workdir's
    results/ and runs/ (:mod:`fgsm_repro.workdir`; $FGSM_REPRO_RUNS_DIR puts the checkpoints
    elsewhere), found when the context is made."""

    data_dir: Path | None = None
    results_dir: Path = field(default_factory=workdir.results_dir)
    # Checkpoints of resumable runs.
    runs_dir: Path = field(default_factory=workdir.runs_dir)
    show_progress: bool = True
    console: Console = field(default_factory=lambda: Console(stderr=True))
    # Evaluation and attack batches are split across this mesh's devices (None: one device).
    mesh: Mesh | None = None
    # The experiments of the command running (experiment k of n, the time left); None: one training.
    plan: Plan | None = None
    # Per-epoch records of the trainings of the experiment running, by label (its learning curves).
    histories: dict[str, list[dict]] = field(default_factory=dict)

    @contextlib.contextmanager
    def progress(self, description: str, total: int | None, records_per_epoch: int = 1) -> Iterator[Any]:
        """Progress of one training (:func:`fgsm_repro.progress.progress`); yields ``advance(record)``
        to call once per epoch of each seed (`records_per_epoch` seeds step together)."""
        with progress(description, total, self.console, self.plan, self.show_progress,
                      records_per_epoch) as advance:
            yield advance


@dataclass
class Outcome:
    """What one seed of an experiment measured."""

    measured: dict[str, dict[str, float | None]]  # claim ID -> metric -> value (percent)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # claim ID -> path relative to results/
    notes: list[str] = field(default_factory=list)
    # claim ID -> metric -> how far a sweep of unstated settings moved it (:func:`swept_range`).
    sensitivity: dict[str, dict[str, dict]] = field(default_factory=dict)


@dataclass
class Trained:
    """One seed's trained model of a named training of the experiment."""

    name: str
    model: nn.Module
    objective: Objective
    params: Any
    fit: FitResult
    point: dict[str, Any]  # the grid point kept (the train settings chosen on validation); {} without a grid
    candidates: list[dict]  # one row per grid point: its settings, best epoch, epochs run, validation error


def train(cfg: ExperimentConfig, name: str, splits: Splits, seeds: list[int], ctx: Context,
          measure: Callable[[dict, Any], dict] | None = None) -> list[Trained]:
    """The trained models of training `name` of `cfg`, one per seed (several seeds step together),
    each also left as a run directory (``runs/<config>.<profile>/seed<N>-<training>``, its
    parameters and ``run.json``) that `fgsm-repro attack` reads.

    With a grid, one run per point; each seed keeps the point with the lowest validation error
    (the paper leaves these settings unstated; paper-targets §2 asks for choosing them on the
    validation split). A training that reuses another config's is trained there (its checkpoints,
    its run folder), or restored from it when it has been trained already.

    `measure(record, params)`: numbers measured along the training, kept in its history (see
    :func:`fgsm_repro.train.fit`); a finished run restored from its checkpoints is not re-measured.
    """
    spec = trainings.training(cfg, name)
    if spec.reuse:
        other = trainings.reused_config(cfg, name)
        return [dataclasses.replace(t, name=name)
                for t in train(other, spec.reuse.training, splits, seeds, ctx, measure)]
    model, objective = trainings.build_model_of(cfg, name)
    points = spec.points()
    fits = [fit_in_experiment(cfg, Trainer(model, objective, cfg.train_of(name, point)), splits, seeds, ctx,
                              tag=_tag(name, point),
                              key=cfg.training_hash(name, point), measure=measure)
            for point in points]
    config_file = experiment_configs(cfg.folder).get(cfg.name, cfg.folder / f"{cfg.name}.yaml")
    out = []
    for i, seed in enumerate(seeds):
        results = [runs[i] for runs in fits]
        for point, result in zip(points, results, strict=True):  # a run dir `fgsm-repro attack` reads
            write_run(ctx.runs_dir / f"{cfg.name}.{cfg.profile}" / f"seed{seed}-{_tag(name, point)}", config_file,
                      cfg, name, point, seed, result, splits, mesh=ctx.mesh)
        rows = [{**point, "best_epoch": r.best_epoch, "epochs_run": r.epochs_run, "val_error": r.best_val_error}
                for point, r in zip(points, results, strict=True)]
        kept = trainings.kept_point(results)
        out.append(Trained(name, model, objective, results[kept].params, results[kept], points[kept], rows))
    return out


def _tag(name: str, point: dict) -> str:
    """The folder suffix of training `name` at grid `point` under ``runs/<config>.<profile>/``."""
    return f"{name}-{point_tag(point)}" if point else name


def train_members(cfg: ExperimentConfig, name: str, splits: Splits, seeds: list[int], ctx: Context) -> list[Trained]:
    """Training `name` for each of `seeds` (an ensemble's members): stepped together in one vmapped
    program when the config's ``seeds_together`` says so (by default on accelerators), else one
    after another, as `fgsm-repro bench` measured faster on a CPU. The same runs either way, up
    to float rounding; each resumes from its own checkpoints."""
    together = cfg.seeds_together if cfg.seeds_together is not None else seeds_together_by_default()
    if together:
        return train(cfg, name, splits, seeds, ctx)
    return [train(cfg, name, splits, [seed], ctx)[0] for seed in seeds]


def sweep(cfg: ExperimentConfig, name: str, splits: Splits, seed: int, ctx: Context,
          measure: Callable[[dict, dict, Any], dict]) -> list[dict]:
    """Training `name` (``choose: all``) at every grid point, with ``measure(point, record, params)``
    after each of its `measure_epochs`; one row per point and epoch: the point, the epoch, the
    validation error and what `measure` returns. No checkpoints: a resumed, finished run would
    skip the epochs to measure at."""
    spec = trainings.training(cfg, name, kept=False)
    model, objective = trainings.build_model_of(cfg, name)
    marks, rows = set(spec.measure_epochs), []
    for point in spec.points():
        def at_mark(record, params, point=point):
            if record["epoch"] in marks:
                rows.append({**point, "epochs": record["epoch"], "val_error": record.get("val_error"),
                             **measure(point, record, params)})

        fit_in_experiment(cfg, Trainer(model, objective, cfg.train_of(name, point)), splits, [seed], ctx,
                          tag=f"sweep-{name}-{point_tag(point)}", key=None, on_epoch=at_mark)
    return rows


def sensitivity(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context,
                extra: Callable[[nn.Module, Objective, Any], dict] | None = None,
                name: str = "sensitivity") -> list[dict]:
    """Clean and FGSM test numbers along the config's `sensitivity` training (`name`: a sweep,
    ``choose: all``, measured after each of its `measure_epochs`), never used to choose anything:
    how far the unstated training length and settings move a result; with ``extra(model,
    objective, params)``'s numbers beside them. [] without that training."""
    if name not in cfg.training_specs():
        return []
    x, y = splits.x_test, splits.y_test
    model, objective = trainings.build_model_of(cfg, name)

    def measure(point, record, params) -> dict:
        adv, _ = attack_metrics(model, objective, params, x, y, cfg.attack, mesh=ctx.mesh)
        clean = evaluate(model, objective, params, x, y, mesh=ctx.mesh)
        return {"clean_error": clean["error"], "clean_confidence": clean["confidence_all"], "fgsm_error": adv["error"],
                "fgsm_confidence_mistakes": adv["confidence_mistakes"], "fgsm_confidence_all": adv["confidence_all"],
                **weight_norms(params), **(extra(model, objective, params) if extra else {})}

    return sweep(cfg, name, splits, seed, ctx, measure)


def swept_range(rows: list[dict], column: str, setting: str, kind: str = "setting") -> dict | None:
    """How far a sweep (`rows`, e.g. :func:`sensitivity`'s) moved `column`: the lowest and highest
    value, with `setting` naming what was swept. The report calls a number outside its band an
    unstated choice when the paper's value lies in this range — or, for a sweep of `kind` "seed"
    (networks of one recipe, differing in their seed), sampling error. None without a value."""
    values = [r[column] for r in rows if isinstance(r.get(column), int | float) and np.isfinite(r[column])]
    if not values:
        return None
    return {"setting": setting, "low": float(min(values)), "high": float(max(values)), "points": len(values),
            "kind": kind}


def fit_in_experiment(cfg: ExperimentConfig, trainer: Trainer, splits: Splits, seeds: list[int], ctx: Context,
                      tag: str, *, key: str | None, on_epoch=None, measure=None) -> list[FitResult]:
    """:func:`fgsm_repro.train.fit` with a progress bar and, given a checkpoint `key` (the training
    hash), checkpoints in ``runs/<config>.<profile>/seed<N>-<tag>``, resumed when they are there."""
    run_dir = ctx.runs_dir / f"{cfg.name}.{cfg.profile}"
    label = f"{cfg.name} [{cfg.profile}] seed {','.join(map(str, seeds))} {tag}"
    with ctx.progress(label, trainer.train.epochs * len(seeds), len(seeds)) as advance:
        def callback(record, params):
            advance(record)
            if on_epoch:
                on_epoch(record, params)

        checkpoints = Checkpoints(lambda seed: run_dir / f"seed{seed}-{tag}", f"{key}-{tag}") if key else None
        results = fit(trainer, splits, seeds, on_epoch=callback, checkpoints=checkpoints, measure=measure)
    for seed, result in zip(seeds, results, strict=True):
        ctx.histories[f"{cfg.name} seed {seed} {tag}"] = result.history
        if key and writes_files():  # beside its checkpoints
            save_history(run_dir / f"seed{seed}-{tag}", result.history)
    return results


def experiment_options(cfg: ExperimentConfig, options_type: type[BaseModel] | None,
                       config_path: str | Path | None = None) -> BaseModel | None:
    """`cfg`'s ``options`` as its experiment's `options_type` (the module's ``Options``, a pydantic
    model; an experiment without one takes none), with a one-line error for a wrong one."""
    where = f"{config_path or cfg.name}: field 'options"
    if options_type is None:
        if cfg.options:
            raise ReproError(f"{where}': experiment {cfg.experiment} takes no options")
        return None
    try:
        return options_type.model_validate(cfg.options)
    except ValidationError as e:
        problem = field_problem(e)
        loc = ".".join(str(p) for p in problem.loc)
        raise ReproError(f"{where}{'.' + loc if loc else ''}': {problem.msg}") from None


def weight_norms(params) -> dict[str, float]:
    kernels = [np.asarray(p) for p in jax.tree.leaves(params) if np.ndim(p) > 1]
    return {"weight_l1": float(sum(np.abs(k).sum() for k in kernels)),
            "weight_l2": float(np.sqrt(sum((k ** 2).sum() for k in kernels)))}


def clean_and_attacked(trained: Trained, splits: Splits, attack: AttackSpec, ctx: Context) -> tuple[dict, np.ndarray]:
    """Test-set numbers of a trained model: clean error and confidence, FGSM error and
    confidences (all examples, mistakes only), and — per paper-targets §2 — the same FGSM
    with the examples clipped to [0, 1] beside the configured (by default unclipped) one.

    Returns (row, adversarial test examples of the configured attack).
    """
    clean = evaluate(trained.model, trained.objective, trained.params, splits.x_test, splits.y_test, mesh=ctx.mesh)
    adv, x_adv = attack_metrics(trained.model, trained.objective, trained.params, splits.x_test, splits.y_test,
                                attack, mesh=ctx.mesh)
    other_clip = None if attack.clip else (0.0, 1.0)
    adv_other, _ = attack_metrics(trained.model, trained.objective, trained.params, splits.x_test,
                                  splits.y_test, attack.model_copy(update={"clip": other_clip}), mesh=ctx.mesh)
    suffix = "unclipped" if attack.clip else "clipped"
    row = {
        "clean_error": clean["error"],
        "clean_confidence": clean["confidence_all"],
        "error": adv["error"],
        "confidence_all": adv["confidence_all"],
        "confidence_mistakes": adv["confidence_mistakes"],
        f"error_{suffix}": adv_other["error"],
        f"confidence_mistakes_{suffix}": adv_other["confidence_mistakes"],
        "per_class_error": adv["per_class_error"],
        **weight_norms(trained.params),
    }
    return row, x_adv


def save_figure(fig, claim: str, profile: str, ctx: Context, dpi: int = 100) -> str:
    """Save `fig` as results/figures/<claim>.<profile>.png; returns the path relative to results/."""
    rel = Path("figures") / f"{claim}.{profile}.png"
    out = Path(ctx.results_dir) / rel
    if writes_files():  # of several processes, the first
        save_figure_atomic(fig, out, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return rel.as_posix()
