"""Pictures of how runs went: each training's learning curves, and all claims against the paper.

A training's per-epoch records (training loss; validation error, on FGSM examples when early
stopping watches those; stage 2's objective on the former validation part) are written beside its
checkpoints as ``history.json``; an experiment's results get one learning-curve figure of all its
trainings, and the report one figure of every claim: the paper's value, its tolerance band and the
measured value.
"""

from __future__ import annotations

from pathlib import Path

from fgsm_repro.files import save_figure_atomic, write_json
from fgsm_repro.pictures import pyplot

HISTORY = "history.json"


def save_history(folder: Path, history: list[dict]) -> Path:
    return write_json(Path(folder) / HISTORY, history)


def learning_curves(histories: dict[str, list[dict]], title: str, adversarial_validation: bool = False):
    """A figure: training loss (left) and validation error (right) per epoch of each training;
    stage-2 epochs continue after stage 1's, dashed; the robust monitor's error dotted (a collapse
    marked x)."""
    plt = pyplot()
    fig, (loss_ax, err_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (label, history) in enumerate(histories.items()):
        color = f"C{i % 10}"
        stage1 = [r for r in history if "epoch" in r]
        stage2 = [r for r in history if "stage2_epoch" in r]
        last = stage1[-1]["epoch"] if stage1 else 0
        loss_ax.plot([r["epoch"] for r in stage1], [r["loss"] for r in stage1], color=color, label=label)
        if stage2:
            loss_ax.plot([last + r["stage2_epoch"] for r in stage2], [r["loss"] for r in stage2], color=color,
                         linestyle="--")
        validated = [r for r in stage1 if r.get("val_error") is not None]
        err_ax.plot([r["epoch"] for r in validated], [r["val_error"] for r in validated], color=color, label=label)
        watched = [r for r in stage1 if r.get("robust_error") is not None]  # train.robust_monitor's
        if watched:
            err_ax.plot([r["epoch"] for r in watched], [r["robust_error"] for r in watched], color=color,
                        linestyle=":", label=f"{label}: robust monitor")
            err_ax.plot([r["epoch"] for r in watched if r.get("collapsed")],
                        [r["robust_error"] for r in watched if r.get("collapsed")], "x", color=color)
    loss_ax.set(xlabel="epoch (stage 2 dashed)", ylabel="training loss", yscale="log")
    err_ax.set(xlabel="epoch", ylabel="validation error (%)" + (", FGSM examples" if adversarial_validation else ""))
    if any(r.get("val_error") is not None for h in histories.values() for r in h):
        err_ax.set_yscale("log")
    if any(r.get("robust_error") is not None for h in histories.values() for r in h):
        err_ax.legend(fontsize=6, loc="upper right")
    loss_ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def claims_figure(rows: list[dict], path: Path) -> Path:
    """One row per numeric claim: the paper's value (black tick) inside its tolerance band (grey),
    and the measured value (green within the band, red outside). `rows`: claim, metric, profile,
    paper, band, measured, within."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.24 * len(rows)))
    for i, row in enumerate(reversed(rows)):
        ax.barh(i, 2 * row["band"], left=row["paper"] - row["band"], height=0.6, color="0.85")
        ax.plot([row["paper"]] * 2, [i - 0.3, i + 0.3], color="black", linewidth=1.5)
        ax.plot(row["measured"], i, "o", markersize=4, color="tab:green" if row["within"] else "tab:red")
    ax.set_yticks(range(len(rows)),
                  [f"{r['claim']} {r['metric']} ({r['profile']})" for r in reversed(rows)], fontsize=7)
    ax.set_xlabel("percent: paper (black) ± band (grey), measured (green within, red outside)", fontsize=8)
    values = [v for r in rows for v in (r["paper"] - r["band"], r["paper"] + r["band"], r["measured"])]
    ax.set_xlim(min(0, *values) - 2, max(100, *values) + 2)
    ax.grid(axis="x", linewidth=0.3)
    fig.tight_layout()
    out = save_figure_atomic(fig, path, dpi=100)
    plt.close(fig)
    return out
