"""T1.softmax — §4: FGSM against a shallow softmax regression on MNIST.

Paper: "Using ε = .25, we cause a shallow softmax classifier to have an error rate of 99.9%
with an average confidence of 79.3% on the MNIST test set."

Protocol:
1. Softmax regression on pixels in [0, 1], trained on the first 50,000 training images (training
   ``model``); the paper gives no recipe, so the config's SGD settings are used, with early
   stopping on the last 10,000 and the weight decay picked from the config's grid by validation error.
2. FGSM with ε = .25 on the 10,000 test images, generated on the model itself with the true
   labels and no clipping (paper-targets §2); error and mean confidence, over all examples and
   over misclassified ones. The same attack clipped to [0, 1] is reported beside it.
3. The confidence of FGSM on a linear model grows with the weight norm, which training length
   and weight decay set: a sweep (training ``sensitivity``) shows how far they move both numbers,
   and Appendix A's rubbish rate and confidence of the same model (A.rubbish_softmaxreg, on
   a_rubbish_mnist's draws), in a table and a figure against the weight norm. Its ranges go in the
   record's ``sensitivity``: the report names an outside number an unstated choice when the sweep
   brackets the paper's value. Nothing is chosen from it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from fgsm_repro.config import ExperimentConfig
from fgsm_repro.data import Splits
from fgsm_repro.evaluation import predict
from fgsm_repro.experiments.a_rubbish_mnist import DIGITS, RUBBISH_DRAWS, RUBBISH_STREAM
from fgsm_repro.experiments.common import (
    Context,
    Outcome,
    clean_and_attacked,
    pyplot,
    save_figure,
    sensitivity,
    swept_range,
    train,
)
from fgsm_repro.reference import target
from fgsm_repro.rubbish import gaussian_inputs, rubbish_summary

CLAIMS = ("T1.softmax",)
TRAININGS = ("model",)  # and, optionally, "sensitivity"
# What one `fgsm-repro train` / `attack` run of a training measures of the paper (paper_rows).
PAPER_ROWS = {"model": {"attack": (("T1.softmax", "error", "error"),
                                   ("T1.softmax", "confidence_mistakes", "confidence_mistakes"))}}
# The sweep's columns, and the paper's numbers they move (Appendix A's softmax regression is this one).
SWEPT = {("T1.softmax", "error"): "fgsm_error", ("T1.softmax", "confidence_mistakes"): "fgsm_confidence_mistakes",
         ("A.rubbish_softmaxreg", "rate"): "rubbish_rate", ("A.rubbish_softmaxreg", "confidence"): "rubbish_confidence"}
# What s8_generalization adds to the same sweep: agreement with the maxout network's FGSM mistakes.
S8_SWEPT = {("S8.agree_softmax", "agreement"): "agree_softmax", ("S8.both_softmax", "agreement"): "both_softmax"}


def run(cfg: ExperimentConfig, splits: Splits, seed: int, ctx: Context) -> Outcome:
    trained, = train(cfg, "model", splits, [seed], ctx)
    row, _ = clean_and_attacked(trained, splits, cfg.attack, ctx)
    row.update(**trained.point, best_epoch=trained.fit.best_epoch, val_error=trained.fit.best_val_error)
    rows = sensitivity(cfg, splits, seed, ctx, extra=rubbish_measure(splits, seed, ctx))
    outcome = Outcome(measured={"T1.softmax": row}, tables={"selection": trained.candidates, "sensitivity": rows},
                      sensitivity=swept_ranges(rows, SWEPT))
    if rows:
        outcome.figures["T1.softmax sensitivity"] = weight_norm_figure(rows, row, cfg, ctx)
    return outcome


def rubbish_measure(splits: Splits, seed: int, ctx: Context, shares: bool = False):
    """``measure(model, objective, params)``: Appendix A's rubbish rate and confidence of a model on
    a_rubbish_mnist's draws, counted as it counts them (with `shares`, the share of each class too)."""
    draws = gaussian_inputs(RUBBISH_DRAWS, splits.x_test.shape[1:], [seed, RUBBISH_STREAM])

    def measure(model, objective, params) -> dict:
        logits = predict(model, objective, params, draws, mesh=ctx.mesh)[2]
        summary = rubbish_summary(np.asarray(objective.probabilities(jnp.asarray(logits)))[:, :len(DIGITS)], DIGITS)
        return {"rubbish_rate": summary["rate"], "rubbish_confidence": summary["confidence"],
                **({"rubbish_shares": summary["shares"]} if shares else {})}

    return measure


def swept_ranges(rows: list[dict], columns: dict[tuple[str, str], str]) -> dict[str, dict[str, dict]]:
    """claim -> metric -> :func:`~fgsm_repro.experiments.common.swept_range` of its column of the
    softmax regression's sweep (`rows`), for an :class:`Outcome`'s ``sensitivity``."""
    setting = _setting(rows) if rows else ""
    out: dict[str, dict[str, dict]] = {}
    for (claim, metric), column in columns.items():
        if found := swept_range(rows, column, setting):
            out.setdefault(claim, {})[metric] = found
    return out


def _setting(rows: list[dict]) -> str:
    """What the sweep varied, in words: its weight decays and training lengths."""
    decays = sorted({r["weight_decay"] for r in rows})
    epochs = sorted({r["epochs"] for r in rows})
    return (f"weight decay {', '.join(f'{d:g}' for d in decays)} and training length "
            f"{', '.join(map(str, epochs))} epochs (the `sensitivity` sweep)")


def weight_norm_figure(rows: list[dict], chosen: dict | None, cfg: ExperimentConfig, ctx: Context) -> str:
    """The sweep's numbers against the weights' L2 norm — FGSM's confidence and error, the rubbish
    rate and confidence, and S8's agreement with the maxout network where the rows have it — with
    the paper's values and the model chosen on validation (`chosen`, T1.softmax's row) marked."""
    plt = pyplot()
    panels = [(("T1.softmax", "confidence_mistakes"), "FGSM confidence on mistakes (T1.softmax)"),
              (("T1.softmax", "error"), "FGSM error (T1.softmax)"),
              (("A.rubbish_softmaxreg", "rate"), "rubbish rate (A.rubbish_softmaxreg)"),
              (("A.rubbish_softmaxreg", "confidence"), "rubbish confidence (A.rubbish_softmaxreg)")]
    panels += [(key, f"agreeing with maxout ({key[0]})") for key in S8_SWEPT if S8_SWEPT[key] in rows[0]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, title) in zip(axes, panels, strict=True):
        column = {**SWEPT, **S8_SWEPT}[key]
        for decay in sorted({r["weight_decay"] for r in rows}):
            line = sorted((r for r in rows if r["weight_decay"] == decay), key=lambda r: r["weight_l2"])
            ax.plot([r["weight_l2"] for r in line], [r[column] for r in line], "o-", ms=3, label=f"decay {decay:g}")
        ax.axhline(target(*key).paper, color="k", ls="--", lw=1, label="paper")
        if chosen and key[0] == "T1.softmax":
            ax.plot([chosen["weight_l2"]], [chosen[key[1]]], "r*", ms=12, label="chosen on validation")
        ax.set(title=title, xlabel="‖W‖₂ (points: epochs 1…last)", ylabel="%")
        ax.title.set_fontsize(9)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{cfg.name} [{cfg.profile}]: softmax regression, numbers against its weight norm", fontsize=10,
                 y=1.03)
    return save_figure(fig, "T1.softmax.sensitivity" if cfg.experiment == "t1_softmax" else f"{cfg.name}.softmax_norm",
                       cfg.profile, ctx)
