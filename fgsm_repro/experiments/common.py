"""What experiments share: the run context, the outcome record, training with selection on
the validation split, and the FGSM evaluation of a trained model."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fgsm_repro.config import AttackConfig, ExperimentConfig, TrainConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import adversarial_examples, evaluate
from fgsm_repro.models import build_model
from fgsm_repro.objectives import Objective
from fgsm_repro.processes import writes_files
from fgsm_repro.results import REPO_ROOT, RESULTS_DIR
from fgsm_repro.train import FitResult, fit_seeds


@dataclass
class Context:
    """Where a run reads and writes, and how chatty it is."""

    data_dir: Path | None = None
    results_dir: Path = RESULTS_DIR
    # Checkpoints of resumable runs; $FGSM_REPRO_RUNS_DIR puts them outside the checkout.
    runs_dir: Path = field(default_factory=lambda: Path(os.environ.get("FGSM_REPRO_RUNS_DIR") or REPO_ROOT / "runs"))
    show_progress: bool = True
    console: Console = field(default_factory=lambda: Console(stderr=True))

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Any]:
        """A progress bar; yields ``advance(record)`` to call once per epoch."""
        if not self.show_progress:
            yield lambda record=None: None
            return
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(description, total=total, status="")

            def advance(record: dict | None = None):
                status = ""
                if record:
                    status = f"loss {record['loss']:.4f}" + (
                        f"  val err {record['val_error']:.2f}%" if "val_error" in record else "")
                bar.update(task, advance=1, status=status)

            yield advance


@dataclass
class Outcome:
    """What one seed of an experiment measured."""

    measured: dict[str, dict[str, float | None]]  # claim ID -> metric -> value (percent)
    tables: dict[str, list[dict]] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)  # claim ID -> path relative to results/
    notes: list[str] = field(default_factory=list)


@dataclass
class Trained:
    model: nn.Module
    objective: Objective
    params: Any
    fit: FitResult
    weight_decay: float
    selection: list[dict]  # one row per candidate: weight_decay, best epoch, validation error


def train_with_selection(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Trained:
    """Train one model per candidate of `cfg.select` (or just `cfg.train`) and keep the one with
    the lowest validation error — the paper gives no hyperparameters for these models, and
    paper-targets §2 asks for selection on the validation split."""
    model, objective = build_model(cfg.model.name, cfg.model.options)
    candidates = cfg.select.weight_decay if cfg.select else [cfg.train.weight_decay]
    rows, best = [], None
    for wd in candidates:
        train_cfg = cfg.train.model_copy(update={"weight_decay": wd})
        result = fit_for_experiment(model, objective, train_cfg, splits, seed, ctx, cfg, tag=f"wd{wd:g}")
        rows.append({"weight_decay": wd, "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                     "val_error": result.best_val_error})
        if best is None or result.best_val_error < best[1].best_val_error:  # config ensures a validation set
            best = (wd, result)
    wd, result = best
    return Trained(model, objective, result.params, result, wd, rows)


def fit_logged(model: nn.Module, objective: Objective, train_cfg: TrainConfig, splits: Splits, seeds: list[int],
               ctx: Context, *, label: str, checkpoint_dirs: list[Path] | None, config_hash: str,
               on_epoch=None) -> list[FitResult]:
    """`fit_seeds` on the splits with a progress bar; resumes from `checkpoint_dirs` if they hold
    checkpoints."""
    with ctx.progress(label, train_cfg.epochs * len(seeds)) as advance:
        def callback(record, params):
            advance(record)
            if on_epoch:
                on_epoch(record, params)

        return fit_seeds(model, objective, train_cfg, splits.x_train, splits.y_train, splits.x_val, splits.y_val,
                         seeds, checkpoint_dirs=checkpoint_dirs, config_hash=config_hash, on_epoch=callback)


def fit_seeds_for_experiment(model: nn.Module, objective: Objective, train_cfg: TrainConfig, splits: Splits,
                             seeds: list[int], ctx: Context, cfg: ExperimentConfig, tag: str, on_epoch=None,
                             checkpoint: bool = True) -> list[FitResult]:
    """`fit_logged` with checkpoints in ``runs/<experiment>.<profile>/seed<N>-<tag>`` (unless
    `checkpoint` is False); the seeds train together."""
    run_dir = ctx.runs_dir / f"{cfg.name}.{cfg.profile}"
    return fit_logged(model, objective, train_cfg, splits, seeds, ctx,
                      label=f"{cfg.name} [{cfg.profile}] seed {','.join(map(str, seeds))} {tag}",
                      checkpoint_dirs=[run_dir / f"seed{seed}-{tag}" for seed in seeds] if checkpoint else None,
                      # Keyed by the train section actually used (variants, adversarial twins).
                      config_hash=f"{cfg.model_copy(update={'train': train_cfg}).training_hash()}-{tag}",
                      on_epoch=on_epoch)


def fit_for_experiment(model: nn.Module, objective: Objective, train_cfg: TrainConfig, splits: Splits, seed: int,
                       ctx: Context, cfg: ExperimentConfig, tag: str, on_epoch=None,
                       checkpoint: bool = True) -> FitResult:
    """:func:`fit_seeds_for_experiment` for one seed."""
    return fit_seeds_for_experiment(model, objective, train_cfg, splits, [seed], ctx, cfg, tag, on_epoch,
                                    checkpoint)[0]


def fgsm_metrics(model: nn.Module, objective: Objective, params, x: np.ndarray, y: np.ndarray,
                 attack: AttackConfig) -> tuple[dict, np.ndarray]:
    """Metrics of `model` on FGSM examples generated on itself, and the examples."""
    x_adv = adversarial_examples(model, objective, params, x, y, attack)
    return evaluate(model, objective, params, x_adv, y), x_adv


def weight_norms(params) -> dict[str, float]:
    kernels = [np.asarray(p) for p in jax.tree.leaves(params) if np.ndim(p) > 1]
    return {"weight_l1": float(sum(np.abs(k).sum() for k in kernels)),
            "weight_l2": float(np.sqrt(sum((k ** 2).sum() for k in kernels)))}


def clean_and_fgsm(trained: Trained, splits: Splits, attack: AttackConfig) -> tuple[dict, np.ndarray]:
    """Test-set numbers of a trained model: clean error and confidence, FGSM error and
    confidences (all examples, mistakes only), and — per paper-targets §2 — the same FGSM
    with the examples clipped to [0, 1] beside the configured (by default unclipped) one.

    Returns (row, adversarial test examples of the configured attack).
    """
    clean = evaluate(trained.model, trained.objective, trained.params, splits.x_test, splits.y_test)
    adv, x_adv = fgsm_metrics(trained.model, trained.objective, trained.params, splits.x_test, splits.y_test,
                              attack)
    other_clip = None if attack.clip else (0.0, 1.0)
    adv_other, _ = fgsm_metrics(trained.model, trained.objective, trained.params, splits.x_test,
                                splits.y_test, attack.model_copy(update={"clip": other_clip}))
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


def sensitivity_sweep(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> list[dict]:
    """FGSM numbers after `epochs` of training with each `weight_decay` of cfg.sensitivity
    (no early stopping): shows how much these unstated choices move the attack's numbers."""
    if not cfg.sensitivity or not cfg.sensitivity.epochs:
        return []
    model, objective = build_model(cfg.model.name, cfg.model.options)
    marks = sorted(set(cfg.sensitivity.epochs))
    rows = []
    for wd in cfg.sensitivity.weight_decay or [cfg.train.weight_decay]:
        train_cfg = cfg.train.model_copy(update={"weight_decay": wd, "epochs": marks[-1],
                                                 "early_stopping_patience": None})

        def at_mark(record, params, wd=wd):
            if record["epoch"] in marks:
                adv, _ = fgsm_metrics(model, objective, params, splits.x_test, splits.y_test, cfg.attack)
                clean = evaluate(model, objective, params, splits.x_test, splits.y_test)
                rows.append({"weight_decay": wd, "epochs": record["epoch"], "val_error": record.get("val_error"),
                             "clean_error": clean["error"], "fgsm_error": adv["error"],
                             "fgsm_confidence_mistakes": adv["confidence_mistakes"],
                             "fgsm_confidence_all": adv["confidence_all"], **weight_norms(params)})

        # No checkpoint: a resumed, finished run would skip the epochs this sweep measures at.
        fit_for_experiment(model, objective, train_cfg, splits, seed, ctx, cfg, tag=f"sweep-wd{wd:g}",
                           on_epoch=at_mark, checkpoint=False)
    return rows


def train_variants(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> tuple[nn.Module, Objective,
                                                                                             dict[str, FitResult]]:
    """Train the configured model once per entry of ``cfg.variants``."""
    model, objective = build_model(cfg.model.name, cfg.model.options)
    return model, objective, {name: fit_for_experiment(model, objective, cfg.variant(name), splits, seed, ctx, cfg,
                                                       tag=name) for name in cfg.variants}


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, claim: str, profile: str, ctx: Context, dpi: int = 100) -> str:
    """Save `fig` as results/figures/<claim>.<profile>.png; returns the path relative to results/."""
    rel = Path("figures") / f"{claim}.{profile}.png"
    out = Path(ctx.results_dir) / rel
    if writes_files():  # of several processes, the first
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=dpi, bbox_inches="tight")
    pyplot().close(fig)
    return rel.as_posix()
