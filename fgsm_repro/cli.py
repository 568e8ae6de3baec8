"""The `fgsm-repro` command line: train, attack, reproduce, report, bench, data."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fgsm_repro import interrupts  # noqa: E402
from fgsm_repro.errors import ReproError  # noqa: E402
from fgsm_repro.runtime import Runtime  # noqa: E402

# Plain help (no Rich markup): bracketed text such as "[default: …]" is shown as written.
app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Reproduce 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al., 2015).")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Prepare datasets in the TFDS data dir (download or offline import).")
app.add_typer(data_app, name="data")
out = Console()


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"fgsm-repro {version('fgsm-repro')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Reproduce 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al., 2015)."""


class _Command(typer.core.TyperCommand):
    """Usage lines in the usual form: a required argument bare (`CONFIG`), not in braces."""

    def collect_usage_pieces(self, ctx):
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


class _BenchCommand(_Command):
    """`bench --help` lists the workloads (read when the help is asked for: the suite imports JAX)."""

    def get_help(self, ctx):
        from fgsm_repro.bench import WORKLOADS

        # "\b": click leaves the paragraph as written (one workload per line)
        self.epilog = "Workloads:\n\n\b\n" + "\n".join(f"{name}: {w.description}" for name, w in WORKLOADS.items())
        return super().get_help(ctx)

DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="TFDS data dir.",
                                                 show_default="$TFDS_DATA_DIR or ~/tensorflow_datasets")]
ResultsDirOpt = Annotated[Path | None, typer.Option("--results-dir", help="Where results/*.json and REPORT.md go.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DataParallelOpt = Annotated[bool | None, typer.Option(
    "--data-parallel/--one-device", help="Split every batch across all devices (of every process) or keep it on one.",
    show_default="the config's train.data_parallel")]


MAX_SEED = 2**32 - 1  # JAX's PRNG keys hold 32-bit seeds (the config's `seeds` have the same range)


def _context(data_dir, results_dir=None, runs_dir=None, quiet=False):
    from fgsm_repro.experiments.common import Context

    ctx = Context(data_dir=data_dir, show_progress=not quiet)
    if results_dir:
        ctx.results_dir = Path(results_dir)
    if runs_dir:
        ctx.runs_dir = Path(runs_dir)
    return ctx


# --------------------------------------------------------------------------------------
# train / attack
# --------------------------------------------------------------------------------------

@app.command(cls=_Command)
def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Experiment YAML (its data, model and train "
                                           "sections are used).")],
    profile: Annotated[str, typer.Option(help="paper, fast or ci.")] = "paper",
    seed: Annotated[int | None, typer.Option(min=0, max=MAX_SEED, help="Seed.", show_default="the config's first")]
    = None,
    run_dir: Annotated[Path | None, typer.Option(help="Checkpoint dir.",
                                                 show_default="runs/<config>.<profile>.seed<N>")]
    = None,
    fresh: Annotated[bool, typer.Option(help="Ignore an existing checkpoint in the run dir.")] = False,
    training: Annotated[str | None, typer.Option(help="Which of the config's trainings.",
                                                 show_default="its only one, or 'model'")] = None,
    data_parallel: DataParallelOpt = None,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
):
    """Train a model of CONFIG; resumes from the run dir's last checkpoint if there is one."""
    interrupts.on_interrupt(RESUME_HINT)
    from fgsm_repro.config import load_config, train_overrides
    from fgsm_repro.experiments.runner import check_names
    from fgsm_repro.processes import writes_files
    from fgsm_repro.runs import train_run

    cfg = load_config(config, profile, **train_overrides(data_parallel))  # a bad config: one line, before any output
    check_names(cfg, config)  # the names it uses (experiment, models), the task and classes each model needs
    name = training or cfg.default_training()
    spec = cfg.training_specs().get(name)
    epochs = cfg.train_of(name).epochs if spec and not spec.reuse and len(spec.points()) == 1 else None
    ctx = _context(data_dir, quiet=quiet)
    with ctx.progress(f"train {Path(config).stem} [{profile}] {name}", epochs) as advance:
        record = train_run(config, profile, training=training, seed=seed, run_dir=run_dir, fresh=fresh,
                           data_parallel=data_parallel, data_dir=data_dir, on_epoch=lambda rec, _: advance(rec))
    if writes_files():
        out.print(f"trained {record['model']} on {record['dataset']['label']}: {record['epochs_run']} epochs "
                  f"(best {record['best_epoch']}), validation error {_pct(record['val_error'])}, "
                  f"test error {_pct(record['test_error'])}  ->  {record['run_dir']}")
        # the config that trained it (another one's, for a reused training)
        _print_paper_rows(load_config(record["config"], profile), profile, record["training"], "clean",
                          {"error": record["test_error"]})


def _pct(v):
    return "—" if v is None else f"{v:.2f}%"


def _parse_clip(clip: str | None):
    if clip is None or clip.lower() == "none":
        return None
    try:
        low, high = (float(v) for v in clip.split(","))
    except ValueError:
        raise ReproError(f"--clip expects LOW,HIGH (e.g. 0,1) or none, got {clip!r}") from None
    return (low, high)


def _parse_params(params: list[str]) -> dict:
    """--param KEY=VALUE pairs, each value read as YAML (numbers, true/false, lists)."""
    from fgsm_repro.config import parse_yaml

    settings = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ReproError(f"--param expects KEY=VALUE (e.g. steps=40), got {item!r}")
        settings[key.strip()] = parse_yaml(value, f"--param {key.strip()}")
    return settings


@app.command(cls=_Command)
def attack(
    run_dir: Annotated[Path, typer.Argument(
        metavar="RUN_DIR", help="A run dir: `fgsm-repro train`'s, or an experiment's training under "
                                "runs/CONFIG.PROFILE/seedN-TRAINING.")],
    attack_name: Annotated[str | None, typer.Option("--attack", help="fgsm, fgm, bim, pgd, deepfool, jsma or cw.",
                                                    show_default="the config's")] = None,
    eps: Annotated[float | None, typer.Option(help="Size of the perturbation in the attack's norm, for the attacks "
                                              "that have one.", show_default="the config's")] = None,
    clip: Annotated[str | None, typer.Option(help="LOW,HIGH to clip the examples, or none.",
                                             show_default="the attack's")] = None,
    labels: Annotated[str | None, typer.Option(help="true or predicted labels.", show_default="the config's")] = None,
    params: Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE for the attack's other settings "
                                                     "(e.g. --param steps=40); repeatable.")] = None,
    space: Annotated[str, typer.Option(help="preprocessed: attack the model's inputs; pixel: attack [0, 1] pixels "
                                       "through the dataset's preprocessing (CIFAR-10's GCN + ZCA).")]
    = "preprocessed",
    limit: Annotated[int | None, typer.Option(min=1, help="Attack only the first N test images.")] = None,
    save_examples: Annotated[int, typer.Option(min=0, help="Save this many clean/adversarial test examples (.npz) "
                                               "and a PNG grid of clean / perturbation / adversarial.")] = 0,
    output: Annotated[Path | None, typer.Option("--out", help="Write the metrics as JSON here.")] = None,
    data_parallel: DataParallelOpt = None,
    data_dir: DataDirOpt = None,
):
    """An attack (the config's, or --attack) on the test set against a trained model: error,
    confidences, perturbation norms and time per example."""
    from fgsm_repro.config.attacks import AttackSpec, NestedFieldError, parse_attack
    from fgsm_repro.evaluation import attack_metrics, evaluate
    from fgsm_repro.files import check_output_file, check_writable
    from fgsm_repro.processes import sync, writes_files
    from fgsm_repro.runs import load_run, read_run

    if space not in ("preprocessed", "pixel"):
        raise ReproError(f"--space must be preprocessed or pixel, got {space!r}")
    if output is not None:  # before the attack runs: a bad path must not cost the work
        check_output_file(output, "--out")
    if save_examples:
        check_writable(Path(output).parent if output else run_dir, "the folder of --save-examples")
    extra = _parse_params(params or [])
    # Every option is checked against the run's record and config before its data and parameters load.
    trained = read_run(run_dir, data_parallel=data_parallel)
    configured = trained.cfg.attack
    settings = configured.model_dump()
    if attack_name is not None and attack_name != settings["name"]:  # another attack: the settings it shares
        fields = AttackSpec.registry[attack_name].model_fields if attack_name in AttackSpec.registry else {}
        settings = {"name": attack_name, **{k: settings[k] for k in configured.model_fields_set
                                            if k in ("eps", "labels") and k in fields}}
    given = {"eps": eps, "labels": labels} | ({"clip": _parse_clip(clip)} if clip is not None else {})
    settings |= {k: v for k, v in given.items() if v is not None or k == "clip"} | extra
    try:
        spec = parse_attack(settings)
        spec.check_classes(_num_classes(trained.cfg, trained.training))
    except NestedFieldError as e:
        raise ReproError(f"attack option {e}") from None
    run = load_run(run_dir, data_parallel=data_parallel, data_dir=data_dir)
    start = time.perf_counter()
    model, params_, x, y = _attacked_inputs(run, space, data_dir)
    x, y = (x[:limit], y[:limit]) if limit else (x, y)
    clean = evaluate(model, run.objective, params_, x, y, mesh=run.mesh)
    adv, x_adv = attack_metrics(model, run.objective, params_, x, y, spec, mesh=run.mesh, norms=True)
    if writes_files():  # of several processes, the first reports and writes
        _report_attack(run, output, save_examples, spec, space, clean, adv, x, y, x_adv, start)
        if spec == configured and space == "preprocessed" and len(y) == len(run.splits.y_test):
            _print_paper_rows(run.cfg, run.record["profile"], run.record["training"] or
                              run.cfg.default_training(), "attack", adv)
    sync("attack written")


def _num_classes(cfg, training: str) -> int | None:
    """The classes of the model `training` trains (None for a binary task: its targets are signs)."""
    from fgsm_repro.trainings import build_model_of

    model, objective = build_model_of(cfg, training)
    return None if objective.binary else getattr(model, "num_classes", None)


def _attacked_inputs(run, space: str, data_dir):
    """(model, params, x_test, y_test) in the space attacked: the model's own inputs, or [0, 1]
    pixels through the preprocessing when the dataset has one."""
    splits = run.splits
    if space == "preprocessed" or splits.whitening is None:
        if space == "pixel":
            out.print("note: this dataset has no preprocessing; its inputs are the pixels")
        return run.model, run.params, splits.x_test, splits.y_test
    from fgsm_repro.experiments.common import Context
    from fgsm_repro.experiments.t1_convmaxout import FromPixels, pixel_params, test_pixels

    pixels = test_pixels(run.cfg, Context(data_dir=data_dir, show_progress=False), splits)
    return (FromPixels(run.model, splits.whitening.scale), pixel_params(run.params, splits.whitening), pixels,
            splits.y_test)


def _report_attack(run, output, save_examples, spec, space, clean, adv, x, y, x_adv, start) -> None:
    import io

    import numpy as np

    from fgsm_repro.files import write_atomic, write_json
    from fgsm_repro.results import device_info, git_state

    splits = run.splits
    table = Table(title=f"{spec.describe()} on {len(y)} test images ({splits.info.label}, {space} space)")
    for col in ("", "error", "mean confidence", "confidence on mistakes"):
        table.add_column(col)
    for name, m in (("clean", clean), ("adversarial", adv)):
        table.add_row(name, _pct(m["error"]), _pct(m["confidence_all"]), _pct(m["confidence_mistakes"]))
    out.print(table)
    norms = adv["norms"]
    shown = "   ".join(f"{label} mean {norms[k]['mean']:.4g}, median {norms[k]['median']:.4g}"
                       for k, label in (("l0", "L0"), ("l2", "L2"), ("linf", "L∞")) if norms[k]["mean"] is not None)
    out.print(f"perturbations of the {norms['examples']} examples fooled: {shown or '-'}\n"
              f"{1000 * adv['seconds_per_example']:.3g} ms per example", markup=False)
    if adv.get("target_hit") is not None:
        out.print(f"classified as their target: {_pct(adv['target_hit'])} of the examples", markup=False)
    info = run.record
    record = {"run_dir": str(Path(run.run_dir).resolve()), "attack": spec.model_dump(mode="json"), "space": space,
              "examples": len(y), "clean": clean, "adversarial": adv,
              "provenance": {**git_state(), "config_hash": info["config_hash"], "seed": info["seed"],
                             "profile": info["profile"], "dataset": splits.info.as_dict(), "device": device_info(),
                             "wall_time_s": round(time.perf_counter() - start, 2)}}
    if save_examples:
        from fgsm_repro.pictures import save_example_grid

        n = min(save_examples, len(x_adv))
        path = Path(output or Path(run.run_dir) / "attack.json").with_suffix(".examples.npz")
        buffer = io.BytesIO()
        np.savez_compressed(buffer, x=x[:n], x_adv=x_adv[:n], y=y[:n])
        write_atomic(path, buffer.getvalue())
        grid = save_example_grid(path.with_suffix(".png"), x[:n], x_adv[:n], f"{spec.describe()} — {splits.info.label}")
        out.print(f"saved {n} examples -> {path}, {grid}", markup=False)
    if output:
        write_json(output, record)
        out.print(f"metrics -> {output}", markup=False)


# --------------------------------------------------------------------------------------
# reproduce / report
# --------------------------------------------------------------------------------------

@app.command(cls=_Command)
def reproduce(
    ids: Annotated[list[str] | None, typer.Argument(metavar="IDS", help="Claim IDs (e.g. T1.softmax F2.adv); none = "
                                                    "all (`fgsm-repro report --list` lists them).")] = None,
    profile: Annotated[str, typer.Option(help="paper, fast or ci.")] = "paper",
    stale: Annotated[bool, typer.Option("--stale", help="Only the experiments whose results file of this profile is "
                                        "stale (its config or dataset changed since), as the report marks them.")]
    = False,
    update_baselines: Annotated[bool, typer.Option(
        "--update-baselines", help="With --profile ci: also record the numbers as the regression baselines the tests "
        "compare with (tests/baselines/).")] = False,
    results_dir: ResultsDirOpt = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Checkpoints.", show_default="runs/")] = None,
    data_parallel: DataParallelOpt = None,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
):
    """Run the experiments that measure IDS with PROFILE, write results/*.json, rebuild the report."""
    interrupts.on_interrupt(RESUME_HINT)
    from fgsm_repro.config import PROFILES
    from fgsm_repro.experiments.runner import configs_for, run_config, skipped_at, stale_configs
    from fgsm_repro.files import check_writable
    from fgsm_repro.processes import sync, writes_files
    from fgsm_repro.report import write_report
    from fgsm_repro.results import BASELINES_DIR, record_baseline

    if profile not in PROFILES:
        raise ReproError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if update_baselines and profile != "ci":
        raise ReproError("--update-baselines records ci-profile numbers: use it with --profile ci")
    ctx = _context(data_dir, results_dir, runs_dir, quiet)
    configs = configs_for(ids or [])
    if stale:
        configs = stale_configs(configs, profile, ctx.results_dir, data_dir)
        out.print(f"stale [{profile}]: {', '.join(c.stem for c in configs) or 'none'}", markup=False)
    for config, reason in skipped_at(configs, profile).items():
        configs.remove(config)
        if writes_files() and not quiet:
            out.print(f"{config.stem} [{profile}]: not run at this profile: {reason}", markup=False, soft_wrap=True)
    # Before any training: a results or runs folder that cannot be written must not cost the work.
    for folder, what in ((ctx.results_dir, "results dir"), (ctx.runs_dir, "runs dir")) + (
            ((BASELINES_DIR, "baselines dir"),) if update_baselines else ()):
        check_writable(folder, what)
    written = []
    ctx.plan = _plan(configs, profile, ctx.results_dir)
    for i, config in enumerate(configs):
        start = time.perf_counter()
        line = ctx.plan.begin(i)
        if writes_files() and not quiet:
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        path = run_config(config, profile, ctx, data_parallel=data_parallel)
        written.append(path)
        if writes_files():
            out.print(f"{config.stem} [{profile}] -> {path} ({time.perf_counter() - start:.1f} s)", markup=False)
            if update_baselines:
                out.print(f"regression baseline -> {record_baseline(path)}", markup=False)
    if writes_files():  # of several processes, the first writes the results and reports
        _print_summary(ctx.results_dir, written)
        out.print(f"report -> {write_report(ctx.results_dir)}", markup=False)
    interrupts.on_interrupt("interrupted after the results and the report were written: nothing is lost")
    sync("results written")


def _plan(configs: list[Path], profile: str, results_dir: Path):
    """The command's experiments, with the wall time each took when its results file of this
    profile was written (for the time left)."""
    from fgsm_repro.progress import Plan
    from fgsm_repro.results import read_results

    took = {r["name"]: r["provenance"].get("wall_time_s") for r in read_results(results_dir)
            if r["provenance"]["profile"] == profile}
    return Plan([f"{c.stem} [{profile}]" for c in configs], [took.get(c.stem) for c in configs])


def _print_rows(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    columns = ("claim", "metric", "paper", "measured", "band", "verdict", "profile")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table, markup=False)


def _print_paper_rows(cfg, profile: str, training: str, kind: str, measured: dict) -> None:
    """The paper's numbers that `measured` (a training's clean test numbers, or the config's attack
    on its whole test set) stands for, per the experiment's ``PAPER_ROWS``, with the verdicts."""
    from fgsm_repro.experiments import paper_rows
    from fgsm_repro.reference import target
    from fgsm_repro.report import paper_row

    rows = [paper_row(target(claim, metric), measured.get(key), profile)
            for claim, metric, key in paper_rows(cfg, training, kind)]
    if rows:
        _print_rows(rows, f"paper vs measured (percent) — this {kind} run of training {training!r}")


def _print_summary(results_dir: Path, just_written: list[Path] | None = None):
    """The paper-vs-measured rows: of the results files `just_written` (what this command
    measured), or of everything in `results_dir`."""
    from fgsm_repro.report import summary_rows
    from fgsm_repro.results import scan_results

    files = None if just_written is None else {Path(p).name for p in just_written}
    rows = summary_rows(results_dir, files)
    if rows:
        _print_rows(rows, "paper vs measured (percent)" + (" — measured by this command" if files is not None else ""))
    elif files is not None:
        out.print("(no paper number among the claims just measured: see the report)", markup=False)
    for problem in scan_results(results_dir).unreadable:  # never skipped in silence
        print(f"warning: unreadable results file {problem}", file=sys.stderr)


@app.command(cls=_Command)
def report(
    results_dir: ResultsDirOpt = None,
    list_ids: Annotated[bool, typer.Option("--list", help="List the claim IDs, the paper's values and their "
                                           "tolerance bands, and exit.")] = False,
):
    """Rebuild results/REPORT.md from results/*.json."""
    from fgsm_repro.files import check_writable
    from fgsm_repro.reference import TARGETS
    from fgsm_repro.report import write_report
    from fgsm_repro.results import RESULTS_DIR

    if list_ids:
        table = Table(title="claim IDs: the paper's numbers and their tolerance bands (fgsm_repro/reference.py)")
        for col in ("claim", "metric", "paper", "band (±)", "what"):
            table.add_column(col)
        for t in TARGETS:
            table.add_row(t.claim, t.metric, "—" if t.paper is None else f"{t.paper:g}",
                          "—" if t.band is None else f"{t.band:g}", t.description)
        out.print(table, markup=False)
        return
    results_dir = Path(results_dir or RESULTS_DIR)
    if not results_dir.is_dir():
        raise ReproError(f"results dir {results_dir} does not exist")
    if not any(results_dir.glob("*.json")):
        raise ReproError(f"results dir {results_dir} has no results files (*.json): nothing to report")
    check_writable(results_dir, "results dir")
    _print_summary(results_dir)
    out.print(f"report -> {write_report(results_dir)}")


@app.command(cls=_BenchCommand)
def bench(
    only: Annotated[list[str] | None, typer.Argument(metavar="WORKLOADS", help="Workload names (below); none = all."
                                                     )] = None,
    reps: Annotated[int, typer.Option(min=1, help="Timed repetitions per side, at least.")] = 5,
    min_seconds: Annotated[float, typer.Option(min=0.0, help="More repetitions for a short workload, until "
                                                             "its JAX side is timed this long.")] = 5.0,
    examples: Annotated[int, typer.Option(min=100, help="Training examples per timed epoch.")] = 10_000,
    quick: Annotated[bool, typer.Option(help="Tiny networks and data: checks the suite runs, times nothing real.")]
    = False,
    threads: Annotated[int | None, typer.Option(help="PyTorch intra-op threads.", show_default="torch's")] = None,
    data_parallel: Annotated[bool, typer.Option(help="Split the JAX side across all devices (with XLA_FLAGS="
                                                     "--xla_force_host_platform_device_count=N on a CPU); "
                                                     "writes bench.dp<N>.json.")] = False,
    results_dir: ResultsDirOpt = None,
):
    """Time our JAX workloads against PyTorch + torchattacks on this machine -> results/bench.json."""
    from dataclasses import replace

    from fgsm_repro.bench import BenchSettings, run_bench, write_bench
    from fgsm_repro.files import check_writable
    from fgsm_repro.report import write_report
    from fgsm_repro.results import RESULTS_DIR

    settings = (BenchSettings.quick() if quick else
                BenchSettings(reps=reps, min_timed_seconds=min_seconds, examples=examples))
    settings = replace(settings, threads=threads, data_parallel=data_parallel)
    results_dir = check_writable(Path(results_dir or RESULTS_DIR), "results dir")  # before timing anything
    path = write_bench(run_bench(only, settings, log=out.print), results_dir)
    out.print(f"benchmark -> {path}; report -> {write_report(results_dir)}")


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------

@data_app.command("import", cls=_Command)
def data_import(
    name: Annotated[str, typer.Argument(metavar="NAME", help="mnist or cifar10.")],
    path: Annotated[Path, typer.Argument(metavar="PATH", help="Official files: MNIST IDX dir, CIFAR-10 archive, or "
                                         "split/class image folder.")],
    data_dir: DataDirOpt = None,
    force: Annotated[bool, typer.Option(help="Replace a different dataset already stored under that name.")] = False,
):
    """Verify the official files at PATH and store them as a TFDS dataset (offline path)."""
    from fgsm_repro.data import import_dataset

    info, changed = import_dataset(name, path, data_dir, force=force)
    verb = "imported" if changed else "already imported (identical content; nothing changed)"
    out.print(f"{info.name} {info.version}: {verb}; sha256 {info.sha256[:16]}…; {info.label}")


@data_app.command("prepare", cls=_Command)
def data_prepare(
    name: Annotated[str, typer.Argument(metavar="NAME", help="mnist or cifar10.")],
    from_path: Annotated[Path | None, typer.Option("--from", help="Import these official files instead of "
                                                   "downloading.")] = None,
    data_dir: DataDirOpt = None,
):
    """Make NAME available: nothing if it is there, else import --from PATH, else TFDS download."""
    from fgsm_repro.data import download_dataset, import_dataset
    from fgsm_repro.data.store import default_data_dir, resolve_name

    try:
        stored = resolve_name(name, Path(data_dir or default_data_dir()))
        out.print(f"{stored}: already prepared in {data_dir or default_data_dir()}")
        return
    except ReproError:
        pass
    if from_path:
        info, _ = import_dataset(name, from_path, data_dir)
    else:
        info = download_dataset(name, data_dir)
    out.print(f"{info.name} {info.version}: ready; sha256 {info.sha256[:16]}…; {info.label}")


@data_app.command("info", cls=_Command)
def data_info(name: Annotated[str, typer.Argument(metavar="NAME", help="mnist or cifar10.")],
              data_dir: DataDirOpt = None):
    """Show the provenance of a prepared dataset."""
    from fgsm_repro.data.store import dataset_dir, default_data_dir, read_provenance, resolve_name

    root = Path(data_dir or default_data_dir())
    stored = resolve_name(name, root)
    out.print_json(json.dumps(read_provenance(dataset_dir(stored, root))))


RESUME_HINT = interrupts.RESUME_HINT


def main(argv: list[str] | None = None, *, watched: bool = False) -> None:
    """The entry point: every failure the user can act on is one line on stderr (``error: …``,
    exit 2); Ctrl-C says what is kept (exit 130). `watched`: the executable's interrupt watcher
    (:mod:`fgsm_repro.entry`) takes Ctrl-C; otherwise a signal handler does while main runs."""
    from typer import _click

    previous = None if watched else signal.signal(signal.SIGINT, interrupts.handler)
    interrupts.on_interrupt(interrupts.NOTHING_HALF_WRITTEN)
    try:
        Runtime.from_env().apply()  # before JAX starts; a bad FGSM_REPRO_* value is one line
        code = app(args=argv, standalone_mode=False)
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except _click.exceptions.NoArgsIsHelpError as e:  # the bare command: its help (Typer prints it)
        e.ctx.get_help()
        code = 0
    except _click.exceptions.ClickException as e:  # bad arguments and options (exit 2)
        hint = f" (see `{e.ctx.command_path} --help`)" if getattr(e, "ctx", None) else ""
        print(f"error: {' '.join(e.format_message().split())}{hint}", file=sys.stderr)
        code = e.exit_code
    except (KeyboardInterrupt, typer.Abort):  # Ctrl-C before the handler, or an abort
        print(interrupts.NOTHING_HALF_WRITTEN, file=sys.stderr)
        code = 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)  # main() may run inside another program (the tests)
    sys.exit(code or 0)


if __name__ == "__main__":
    from fgsm_repro.entry import main as entry_main

    entry_main()
