"""An attack on a trained run's test set, as `fgsm-repro attack` runs it, callable from a script:

    report = run_attack("runs/t1_softmax.ci/seed0-model", "pgd", eps=0.3, params={"steps": 40}, limit=1000)
    report.adversarial["error"], report.record()
    write_attack_record(report, out="attack.json", save_examples=8)

The attack is the run's config's, or another one named (a built-in name or ``module:Class``, a
user's module found beside the run's config first), with the config's settings that it shares
(eps, labels) unless given. Every setting is checked against the run's record and config before its
data and parameters load: a wrong one costs nothing. Errors are one-line
:class:`~fgsm_repro.errors.ReproError`.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from fgsm_repro.errors import ReproError

if TYPE_CHECKING:
    import numpy as np

SPACES = ("preprocessed", "pixel")
CONFIGURED = "config"  # clip=CONFIGURED: the attack's own clip setting


class AttackRegistry(NamedTuple):
    find: Any  # find(name, folders) -> the spec class (ReproError when unknown)
    parse: Any  # parse(settings, folders) -> the spec (ValueError naming the field)
    built_in: Any  # built_in() -> {name: spec class}


def attack_registry() -> AttackRegistry:
    """The attack registry (:mod:`fgsm_repro.attacks`): the one place this module and the CLI's
    help ask it."""
    from fgsm_repro.attacks import built_in_attacks, find_attack, parse_attack

    return AttackRegistry(find_attack, parse_attack, built_in_attacks)


def attack_listing() -> tuple[str, dict[str, str]]:
    """The built-in attacks for the CLI's help: (title, {name: what its spec's doc says first, its
    settings' names after it})."""
    import re

    def summary(spec) -> str:
        text = " ".join((spec.__doc__ or "").split("\n\n")[0].split())
        text = re.sub(r" \(:\w+:`[^`]*`\)", "", text)  # the Sphinx cross-references
        first = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(".:;")
        keys = ", ".join(k for k in spec.model_fields if k != "name")
        return f"{first} ({keys})"

    return ("Built-in attacks (--attack NAME, or your own: --attack module:Class), their settings in parentheses",
            {name: summary(spec) for name, spec in sorted(attack_registry().built_in().items())})


def parse_clip(clip: str | None):
    """``--clip``: "LOW,HIGH" -> (low, high); "none" -> None (no clipping)."""
    if clip is None or clip.lower() == "none":
        return None
    try:
        low, high = (float(v) for v in clip.split(","))
    except ValueError:
        raise ReproError(f"--clip expects LOW,HIGH (e.g. 0,1) or none, got {clip!r}") from None
    return (low, high)


def parse_params(params: list[str]) -> dict:
    """``--param KEY=VALUE`` pairs, each value read as YAML (numbers, true/false, lists)."""
    from fgsm_repro.config import parse_yaml

    settings = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ReproError(f"--param expects KEY=VALUE (e.g. steps=40), got {item!r}")
        settings[key.strip()] = parse_yaml(value, f"--param {key.strip()}")
    return settings


def attack_spec(run, attack: str | None = None, *, eps: float | None = None, clip: Any = CONFIGURED,
                labels: Literal["true", "predicted"] | None = None, params: dict | None = None):
    """The attack to run on `run` (a :class:`~fgsm_repro.runs.RunInfo` or a loaded run): its
    config's, or `attack` with the config's eps and labels where that attack has them; then `eps`,
    `labels`, `clip` ((low, high), None for no clipping) and the attack's other `params` where
    given. Checked against the model's classes."""
    registry = attack_registry()
    configured = run.cfg.attack
    folders = [run.cfg.folder]  # a user's attack module beside the run's config
    settings = configured.model_dump()
    if attack is not None and attack != settings["name"]:  # another attack: the settings it shares
        try:
            fields = registry.find(attack, folders).model_fields
        except ReproError:
            fields = {}  # unknown: parsing says so
        settings = {"name": attack, **{k: settings[k] for k in configured.model_fields_set
                                       if k in ("eps", "labels") and k in fields}}
    given = {"eps": eps, "labels": labels} | ({"clip": clip} if clip is not CONFIGURED else {})
    settings |= {k: v for k, v in given.items() if v is not None or k == "clip"} | (params or {})
    try:
        spec = registry.parse(settings, folders)
        spec.check_classes(_num_classes(run.cfg, run.training))
    except ValueError as e:  # a NestedFieldError naming the field
        raise ReproError(f"attack option {e}") from None
    return spec


def _num_classes(cfg, training: str) -> int | None:
    """The classes of the model `training` trains (None for a binary task: its targets are signs)."""
    from fgsm_repro.trainings import build_model_of

    model, objective = build_model_of(cfg, training)
    return None if objective.binary else getattr(model, "num_classes", None)


@dataclass
class AttackReport:
    """What one attack on a run measured: clean and adversarial metrics (percent; the adversarial
    ones with perturbation norms and seconds per example), and the examples."""

    run_dir: Path
    spec: Any  # the AttackSpec that ran
    space: str
    examples: int
    clean: dict
    adversarial: dict
    provenance: dict
    dataset_label: str
    # The run's config, profile and training: the paper rows the attack stands for.
    cfg: Any = field(repr=False)
    profile: str = ""
    training: str = ""
    # The config's own attack on the whole test set in the model's inputs: it stands for the
    # paper's numbers of the experiment (its PAPER_ROWS).
    configured: bool = False
    notes: list[str] = field(default_factory=list)
    x: np.ndarray = field(default=None, repr=False)
    y: np.ndarray = field(default=None, repr=False)
    x_adv: np.ndarray = field(default=None, repr=False)
    written: dict[str, Path] = field(default_factory=dict)  # what write_attack_record wrote: "json", "npz", "png"
    saved_examples: int = 0  # examples in the .npz written

    def record(self) -> dict:
        """The JSON record (what ``--out`` holds)."""
        return {"run_dir": str(Path(self.run_dir).resolve()), "attack": self.spec.model_dump(mode="json"),
                "space": self.space, "examples": self.examples, "clean": self.clean, "adversarial": self.adversarial,
                "provenance": self.provenance}


def run_attack(run_dir: str | Path, attack: str | None = None, *, eps: float | None = None, clip: Any = CONFIGURED,
               labels: Literal["true", "predicted"] | None = None, params: dict | None = None,
               space: str = "preprocessed", limit: int | None = None, save_examples: int = 0,
               out: str | Path | None = None, data_parallel: bool | None = None,
               data_dir: Path | None = None) -> AttackReport:
    """Attack the test set (its first `limit` images) of the model trained in `run_dir` with the
    attack :func:`attack_spec` makes of the settings; in the model's inputs (`space`
    "preprocessed") or in [0, 1] pixels through the dataset's preprocessing ("pixel"). With `out`
    or `save_examples`, :func:`write_attack_record` writes them (checked before the attack runs)."""
    from fgsm_repro import runs
    from fgsm_repro.evaluation import attack_metrics, evaluate
    from fgsm_repro.files import check_output_file, check_writable
    from fgsm_repro.processes import sync
    from fgsm_repro.results import device_info, git_state

    if space not in SPACES:
        raise ReproError(f"--space must be preprocessed or pixel, got {space!r}")
    if out is not None:  # before the attack runs: a bad path must not cost the work
        check_output_file(out, "--out")
    if save_examples:
        check_writable(Path(out).parent if out else run_dir, "the folder of --save-examples")
    info = runs.read_run(run_dir, data_parallel=data_parallel)  # no data or parameters yet
    spec = attack_spec(info, attack, eps=eps, clip=clip, labels=labels, params=params)
    run = runs.load_run(run_dir, data_parallel=data_parallel, data_dir=data_dir)
    start = time.perf_counter()
    model, params_, x, y, notes = _attacked_inputs(run, space, data_dir)
    x, y = (x[:limit], y[:limit]) if limit else (x, y)
    clean = evaluate(model, run.objective, params_, x, y, mesh=run.mesh)
    adv, x_adv = attack_metrics(model, run.objective, params_, x, y, spec, mesh=run.mesh, norms=True)
    record, splits = run.record, run.splits
    provenance = {**git_state(), "config_hash": record["config_hash"], "seed": record["seed"],
                  "profile": record["profile"], "dataset": splits.info.as_dict(), "device": device_info(),
                  "wall_time_s": round(time.perf_counter() - start, 2)}
    whole = space == "preprocessed" and len(y) == len(splits.y_test)
    report = AttackReport(run.run_dir, spec, space, len(y), clean, adv, provenance, splits.info.label, run.cfg,
                          record["profile"], record.get("training") or run.cfg.default_training(),
                          configured=whole and spec == run.cfg.attack, notes=notes, x=x, y=y, x_adv=x_adv)
    if out is not None or save_examples:
        write_attack_record(report, out, save_examples)
    sync("attack written")
    return report


def _attacked_inputs(run, space: str, data_dir):
    """(model, params, x_test, y_test, notes) in the space attacked: the model's own inputs, or
    [0, 1] pixels through the preprocessing when the dataset has one."""
    splits = run.splits
    if space == "preprocessed" or splits.whitening is None:
        notes = ["note: this dataset has no preprocessing; its inputs are the pixels"] if space == "pixel" else []
        return run.model, run.params, splits.x_test, splits.y_test, notes
    from fgsm_repro.experiments.common import Context
    from fgsm_repro.experiments.t1_convmaxout import FromPixels, pixel_params, test_pixels

    # test_pixels reads the data only: the folders are the run's, written nothing
    ctx = Context(data_dir=data_dir, results_dir=Path(run.run_dir), runs_dir=Path(run.run_dir), show_progress=False)
    pixels = test_pixels(run.cfg, ctx, splits)
    return (FromPixels(run.model, splits.whitening.scale), pixel_params(run.params, splits.whitening), pixels,
            splits.y_test, [])


def write_attack_record(report: AttackReport, out: str | Path | None = None, save_examples: int = 0) -> dict:
    """Write `report`: its JSON record to `out`; with `save_examples`, that many clean and
    adversarial examples (.npz beside `out`, or ``attack.examples.npz`` in the run dir) and a PNG
    grid of clean / perturbation / adversarial. Only the first of several processes writes.
    Returns (and keeps in ``report.written``) the paths by kind: "json", "npz", "png"."""
    import numpy as np

    from fgsm_repro.files import write_atomic, write_json
    from fgsm_repro.processes import writes_files

    if not writes_files():
        return {}
    if save_examples:
        from fgsm_repro.pictures import save_example_grid

        n = report.saved_examples = min(save_examples, len(report.x_adv))
        path = Path(out or Path(report.run_dir) / "attack.json").with_suffix(".examples.npz")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, x=report.x[:n], x_adv=report.x_adv[:n], y=report.y[:n])
        report.written["npz"] = write_atomic(path, buffer.getvalue())
        report.written["png"] = save_example_grid(path.with_suffix(".png"), report.x[:n], report.x_adv[:n],
                                                  f"{report.spec.describe()} — {report.dataset_label}")
    if out:
        report.written["json"] = write_json(out, report.record())
    return report.written
