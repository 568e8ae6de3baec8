"""The `fgsm-repro` command line: train, attack, reproduce, report, bench, data."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from fgsm_repro import cpu_tuning  # noqa: E402
from fgsm_repro.errors import ReproError  # noqa: E402
from fgsm_repro.processes import distributed  # noqa: E402

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Reproduce 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al., 2015).")
data_app = typer.Typer(no_args_is_help=True, help="Prepare datasets in the TFDS data dir (download or offline import).")
app.add_typer(data_app, name="data")
out = Console()

DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="TFDS data dir [default: $TFDS_DATA_DIR "
                                                 "or ~/tensorflow_datasets].")]
ResultsDirOpt = Annotated[Path | None, typer.Option("--results-dir", help="Where results/*.json and REPORT.md go.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
DataParallelOpt = Annotated[bool | None, typer.Option(
    "--data-parallel/--one-device", help="Split every batch across all devices (of every process) or keep it on "
    "one [default: the config's train.data_parallel].")]


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

@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (its data, model and train sections are used).")],
    profile: Annotated[str, typer.Option(help="paper, fast or ci.")] = "paper",
    seed: Annotated[int | None, typer.Option(help="Seed [default: the config's first].")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="Checkpoint dir [default: runs/<config>.<profile>.seed<N>].")]
    = None,
    fresh: Annotated[bool, typer.Option(help="Ignore an existing checkpoint in the run dir.")] = False,
    data_parallel: DataParallelOpt = None,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
):
    """Train the model of CONFIG; resumes from the run dir's last checkpoint if there is one."""
    import shutil

    import orbax.checkpoint as ocp

    from fgsm_repro.config import load_config, train_overrides
    from fgsm_repro.data import make_splits
    from fgsm_repro.evaluation import evaluate
    from fgsm_repro.experiments.common import fit_logged
    from fgsm_repro.models import build_model
    from fgsm_repro.processes import require_data_parallel, sync, writes_files
    from fgsm_repro.sharding import data_parallel_evaluation

    cfg = load_config(config, profile, **train_overrides(data_parallel))
    require_data_parallel(cfg.train.data_parallel, config)
    seed = cfg.seeds[0] if seed is None else seed
    run_dir = Path(run_dir or Path("runs") / f"{Path(config).stem}.{profile}.seed{seed}").resolve()
    if fresh and run_dir.exists() and writes_files():
        shutil.rmtree(run_dir)
    sync("fresh run dir")
    ctx = _context(data_dir, quiet=quiet)
    start = time.perf_counter()
    splits = make_splits(cfg.data, data_dir)
    model, objective = build_model(cfg.model.name, cfg.model.options)
    with data_parallel_evaluation(cfg.train.data_parallel):
        result, = fit_logged(model, objective, cfg.train, splits, [seed], ctx,
                             label=f"train {Path(config).stem} [{profile}]",
                             checkpoint_dirs=[run_dir / "checkpoints"],
                             config_hash=f"{cfg.training_hash()}-seed{seed}")
        clean = evaluate(model, objective, result.params, splits.x_test, splits.y_test)
    # Write the final parameters beside, then swap them in: never a half-written `final/`.
    final, staged = run_dir / "final", run_dir / "final.partial"
    if writes_files():
        shutil.rmtree(staged, ignore_errors=True)
    sync("final.partial cleared")
    with ocp.StandardCheckpointer() as ckptr:  # every process takes part; orbax writes once
        ckptr.save(staged, result.params)
    if writes_files():
        shutil.rmtree(final, ignore_errors=True)
        staged.rename(final)
        info = {"config": str(Path(config).resolve()), "profile": profile, "seed": seed, "config_hash": cfg.hash(),
                "training_hash": cfg.training_hash(),
                "dataset": splits.info.as_dict(), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "val_error": result.best_val_error, "test_error": clean["error"],
                "wall_time_s": round(time.perf_counter() - start, 2)}
        (run_dir / "run.json.partial").write_text(json.dumps(info, indent=2))
        (run_dir / "run.json.partial").replace(run_dir / "run.json")
        out.print(f"trained {cfg.model.name} on {splits.info.label}: {result.epochs_run} epochs "
                  f"(best {result.best_epoch}), validation error {_pct(result.best_val_error)}, "
                  f"test error {_pct(clean['error'])}  ->  {run_dir}")
    sync("run written")  # no process ends before the run is complete on disk


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


@app.command()
def attack(
    run_dir: Annotated[Path, typer.Argument(help="A run dir written by `fgsm-repro train`.")],
    eps: Annotated[float | None, typer.Option(help="L-inf size [default: the config's].")] = None,
    clip: Annotated[str | None, typer.Option(help="LOW,HIGH to clip the examples, or none [default: the config's]."
                                             )] = None,
    labels: Annotated[str | None, typer.Option(help="true or predicted labels [default: the config's].")] = None,
    save_examples: Annotated[int, typer.Option(min=0, help="Save this many clean/adversarial test examples (.npz).")
                             ] = 0,
    output: Annotated[Path | None, typer.Option("--out", help="Write the metrics as JSON here.")] = None,
    data_parallel: DataParallelOpt = None,
    data_dir: DataDirOpt = None,
):
    """FGSM on the test set against a trained model: adversarial error and confidences."""
    import orbax.checkpoint as ocp

    from fgsm_repro.config import AttackConfig, load_config, train_overrides
    from fgsm_repro.data import make_splits
    from fgsm_repro.evaluation import evaluate
    from fgsm_repro.experiments.common import fgsm_metrics
    from fgsm_repro.models import build_model
    from fgsm_repro.processes import sync, writes_files
    from fgsm_repro.sharding import data_parallel_evaluation
    from fgsm_repro.train import init_state, make_optimizer

    info_path = Path(run_dir) / "run.json"
    if not info_path.is_file():
        raise ReproError(f"{run_dir}: not a trained run (no run.json); train one with `fgsm-repro train CONFIG`")
    try:
        info = json.loads(info_path.read_text())
        config_path, profile, trained_hash = info["config"], info["profile"], info["training_hash"]
    except (ValueError, KeyError) as e:
        raise ReproError(f"{info_path}: unreadable run record ({type(e).__name__}: {e}); train again") from None
    cfg = load_config(config_path, profile, **train_overrides(data_parallel))
    if cfg.training_hash() != trained_hash:
        raise ReproError(f"the data/model/train sections of {config_path} changed since {run_dir} was trained; "
                         "train again or restore the config")
    settings = cfg.attack.model_dump()
    if eps is not None:
        settings["eps"] = eps
    if clip is not None:
        settings["clip"] = _parse_clip(clip)
    if labels is not None:
        settings["labels"] = labels
    try:
        attack_cfg = AttackConfig(**settings)
    except Exception as e:
        msg = e.errors()[0] if hasattr(e, "errors") else {"loc": ("?",), "msg": str(e)}
        raise ReproError(f"attack option {'.'.join(map(str, msg['loc']))}: {msg['msg']}") from None
    start = time.perf_counter()
    splits = make_splits(cfg.data, data_dir)
    model, objective = build_model(cfg.model.name, cfg.model.options)
    template = init_state(model, make_optimizer(cfg.train), splits.x_test, 0).params
    try:
        with ocp.StandardCheckpointer() as ckptr:
            params = ckptr.restore(Path(run_dir).resolve() / "final", template)
    except Exception as e:  # orbax raises many types for missing or damaged checkpoints
        raise ReproError(f"{run_dir}/final: cannot restore the trained parameters ({type(e).__name__}); "
                         "train again") from None
    with data_parallel_evaluation(cfg.train.data_parallel):
        clean = evaluate(model, objective, params, splits.x_test, splits.y_test)
        adv, x_adv = fgsm_metrics(model, objective, params, splits.x_test, splits.y_test, attack_cfg)
    if writes_files():  # of several processes, the first reports and writes
        _report_attack(run_dir, output, save_examples, attack_cfg, splits, info, clean, adv, x_adv, start)
    sync("attack written")


def _report_attack(run_dir, output, save_examples, attack_cfg, splits, info, clean, adv, x_adv, start) -> None:
    import numpy as np

    from fgsm_repro.results import device_info, git_state

    table = Table(title=f"FGSM eps={attack_cfg.eps:g} on {len(splits.y_test)} test images ({splits.info.label})")
    for col in ("", "error", "mean confidence", "confidence on mistakes"):
        table.add_column(col)
    for name, m in (("clean", clean), ("adversarial", adv)):
        table.add_row(name, _pct(m["error"]), _pct(m["confidence_all"]), _pct(m["confidence_mistakes"]))
    out.print(table)
    record = {"run_dir": str(Path(run_dir).resolve()), "attack": attack_cfg.model_dump(mode="json"),
              "clean": clean, "adversarial": adv,
              "provenance": {**git_state(), "config_hash": info["config_hash"], "seed": info["seed"],
                             "profile": info["profile"], "dataset": splits.info.as_dict(), "device": device_info(),
                             "wall_time_s": round(time.perf_counter() - start, 2)}}
    if save_examples:
        n = min(save_examples, len(x_adv))
        path = Path(output or Path(run_dir) / "attack.json").with_suffix(".examples.npz")
        np.savez_compressed(path, x=splits.x_test[:n], x_adv=x_adv[:n], y=splits.y_test[:n])
        out.print(f"saved {n} examples -> {path}")
    if output:
        Path(output).write_text(json.dumps(record, indent=2))
        out.print(f"metrics -> {output}")


# --------------------------------------------------------------------------------------
# reproduce / report
# --------------------------------------------------------------------------------------

@app.command()
def reproduce(
    ids: Annotated[list[str] | None, typer.Argument(help="Claim IDs (e.g. T1.softmax F2.adv); none = all.")] = None,
    profile: Annotated[str, typer.Option(help="paper, fast or ci.")] = "paper",
    results_dir: ResultsDirOpt = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Checkpoints [default: runs/].")] = None,
    data_parallel: DataParallelOpt = None,
    data_dir: DataDirOpt = None,
    quiet: QuietOpt = False,
):
    """Run the experiments that measure IDS with PROFILE, write results/*.json, rebuild the report."""
    from fgsm_repro.config import PROFILES
    from fgsm_repro.experiments.runner import configs_for, run_config
    from fgsm_repro.processes import sync, writes_files
    from fgsm_repro.report import write_report

    if profile not in PROFILES:
        raise ReproError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    ctx = _context(data_dir, results_dir, runs_dir, quiet)
    for config in configs_for(ids or []):
        start = time.perf_counter()
        path = run_config(config, profile, ctx, data_parallel=data_parallel)
        if writes_files():
            out.print(f"{config.name} [{profile}] -> {path} ({time.perf_counter() - start:.1f} s)")
    if writes_files():  # of several processes, the first writes the results and reports
        _print_summary(ctx.results_dir)
        out.print(f"report -> {write_report(ctx.results_dir)}")
    sync("results written")


def _print_summary(results_dir: Path):
    from fgsm_repro.report import _best_records
    from fgsm_repro.results import read_results

    best = _best_records(read_results(results_dir), include_ci=True)
    from fgsm_repro.reference import TARGETS

    table = Table(title="paper vs measured (percent)")
    for col in ("ID", "metric", "paper", "measured", "band", "verdict", "profile"):
        table.add_column(col)
    for t in TARGETS:
        rec = best.get(t.claim)
        if rec is None or t.paper is None:
            continue
        value = rec["measured"][t.claim].get(t.metric)
        within = t.within(value) if value is not None else None
        table.add_row(t.claim, t.metric, f"{t.paper:g}", "—" if value is None else f"{value:.2f}",
                      f"±{t.band:g}", {True: "within", False: "OUTSIDE", None: "—"}[within],
                      rec["provenance"]["profile"])
    out.print(table)


@app.command()
def report(
    results_dir: ResultsDirOpt = None,
    list_ids: Annotated[bool, typer.Option("--list", help="List the claim IDs and exit.")] = False,
):
    """Rebuild results/REPORT.md from results/*.json."""
    from fgsm_repro.reference import TARGETS
    from fgsm_repro.report import write_report
    from fgsm_repro.results import RESULTS_DIR

    if list_ids:
        for t in TARGETS:
            out.print(f"{t.claim:20} {t.metric:24} paper {t.paper if t.paper is not None else '—'}")
        return
    results_dir = results_dir or RESULTS_DIR
    _print_summary(results_dir)
    out.print(f"report -> {write_report(results_dir)}")


@app.command()
def bench(
    only: Annotated[list[str] | None, typer.Argument(help="Workload names; none = all.")] = None,
    reps: Annotated[int, typer.Option(min=1, help="Timed repetitions per side, at least.")] = 5,
    min_seconds: Annotated[float, typer.Option(min=0.0, help="More repetitions for a short workload, until "
                                                             "its JAX side is timed this long.")] = 5.0,
    examples: Annotated[int, typer.Option(min=100, help="Training examples per timed epoch.")] = 10_000,
    quick: Annotated[bool, typer.Option(help="Tiny networks and data: checks the suite runs, times nothing real.")]
    = False,
    threads: Annotated[int | None, typer.Option(help="PyTorch intra-op threads [default: torch's].")] = None,
    data_parallel: Annotated[bool, typer.Option(help="Split the JAX side across all devices (with XLA_FLAGS="
                                                     "--xla_force_host_platform_device_count=N on a CPU); "
                                                     "writes bench.dp<N>.json.")] = False,
    results_dir: ResultsDirOpt = None,
):
    """Time our JAX workloads against PyTorch + torchattacks on this machine -> results/bench.json."""
    from dataclasses import replace

    import jax
    from jax.experimental.compilation_cache import compilation_cache

    from fgsm_repro.bench import BenchSettings, run_bench
    from fgsm_repro.report import write_report
    from fgsm_repro.results import RESULTS_DIR, write_json

    settings = (BenchSettings.quick() if quick else
                BenchSettings(reps=reps, min_timed_seconds=min_seconds, examples=examples))
    settings = replace(settings, threads=threads, data_parallel=data_parallel)
    # The record's compile times are compilations, not loads from the persistent cache. JAX
    # decides once per process whether to use the cache: reset it, so that the switch counts.
    cache_was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    try:
        record = run_bench(only, settings, log=out.print)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
        compilation_cache.reset_cache()
    results_dir = Path(results_dir or RESULTS_DIR)
    stem = "bench" + (".quick" if quick else "") + (f".dp{record['devices']}" if data_parallel else "")
    path = write_json(record, results_dir / f"{stem}.json")
    out.print(f"benchmark -> {path}; report -> {write_report(results_dir)}")


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------

@data_app.command("import")
def data_import(
    name: Annotated[str, typer.Argument(help="mnist or cifar10.")],
    path: Annotated[Path, typer.Argument(help="Official files: MNIST IDX dir, CIFAR-10 archive, or "
                                         "split/class image folder.")],
    data_dir: DataDirOpt = None,
    force: Annotated[bool, typer.Option(help="Replace a different dataset already stored under that name.")] = False,
):
    """Verify the official files at PATH and store them as a TFDS dataset (offline path)."""
    from fgsm_repro.data import import_dataset

    info, changed = import_dataset(name, path, data_dir, force=force)
    verb = "imported" if changed else "already imported (identical content; nothing changed)"
    out.print(f"{info.name} {info.version}: {verb}; sha256 {info.sha256[:16]}…; {info.label}")


@data_app.command("prepare")
def data_prepare(
    name: Annotated[str, typer.Argument(help="mnist or cifar10.")],
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


@data_app.command("info")
def data_info(name: Annotated[str, typer.Argument(help="mnist or cifar10.")], data_dir: DataDirOpt = None):
    """Show the provenance of a prepared dataset."""
    from fgsm_repro.data.store import dataset_dir, default_data_dir, read_provenance, resolve_name

    root = Path(data_dir or default_data_dir())
    stored = resolve_name(name, root)
    out.print_json(json.dumps(read_provenance(dataset_dir(stored, root))))


def _compilation_cache() -> None:
    """JAX's persistent compilation cache, so that repeated CLI runs do not compile the same
    programs again: $FGSM_REPRO_JAX_CACHE (``off`` disables it) or ~/.cache/fgsm-repro/jax.
    Set through JAX's own environment variables, read when jax is first imported. Every program
    is cached: JAX's default skips those that compile in under a second, which here is nearly
    all of them (an epoch of the 240-unit maxout compiles in about 0.8 s)."""
    where = os.environ.get("FGSM_REPRO_JAX_CACHE", str(Path.home() / ".cache" / "fgsm-repro" / "jax"))
    if where.lower() != "off":
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", where)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def main() -> None:
    try:
        _compilation_cache()
        cpu_tuning.selected()  # a bad FGSM_REPRO_CPU_TUNING: one line, before any work
        if distributed():  # several hosts: see fgsm_repro.sharding
            from fgsm_repro.sharding import initialize_distributed

            initialize_distributed()
        app()
    except ReproError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: checkpoints written so far are kept; run the same command again to resume",
              file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
