"""The commands' work, callable from a script: train one model of a config (:func:`train_model`),
reproduce claims or configs at a profile (:func:`reproduce`), choose the results a report shows
(:func:`report_files`). The attack is :mod:`fgsm_repro.attack_run`; the printing,
:mod:`fgsm_repro.console`.

The profile ``auto`` is not a config profile: it is resolved here, before any config loads, to
``paper`` where JAX sees an accelerator and ``fast`` on a CPU, and the first line logged says so,
with the projected time of the other profile on this machine (:mod:`fgsm_repro.progress`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fgsm_repro.errors import ReproError

AUTO = "auto"


def profile_choices() -> tuple[str, ...]:
    from fgsm_repro.config import PROFILES

    return (AUTO, *PROFILES)


def resolve_profile(profile: str, backend: str | None = None) -> tuple[str, str]:
    """(the config profile `profile` stands for, why): ``auto`` is ``paper`` on an accelerator and
    ``fast`` on a CPU (`backend`: JAX's default backend unless given); the others are themselves."""
    if profile not in profile_choices():
        raise ReproError(f"unknown profile {profile!r}; choose one of {', '.join(profile_choices())}")
    if profile != AUTO:
        return profile, "asked for"
    if backend is None:
        import jax

        backend = jax.default_backend()
    return ("fast", f"no accelerator: JAX sees {backend}") if backend == "cpu" else \
        ("paper", f"an accelerator: JAX sees {backend}")


def duration(seconds: float) -> str:
    """A duration in words: seconds, minutes or hours."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 36000 else f"{seconds / 3600:.0f} h"


def auto_line(chosen: str, why: str, configs: list[Path], results_dir: Path, runs_dir: Path | None) -> str:
    """The line that announces what ``auto`` chose, with the projected time of the other profile
    for `configs` on this machine (:func:`fgsm_repro.progress.projected_total`)."""
    from fgsm_repro.experiments.runner import skipped_at
    from fgsm_repro.progress import projected_total

    other = "paper" if chosen == "fast" else "fast"
    configs = [c for c in configs if c not in skipped_at(configs, other)]
    total, unknown = projected_total(configs, other, results_dir, runs_dir)
    if not configs:
        return f"profile auto -> {chosen} ({why}); the {other} profile runs none of these experiments"
    if unknown == len(configs):
        took = "an unknown time here (nothing recorded to project from)"
    elif unknown:
        took = (f"projected ~{duration(total)} here for {len(configs) - unknown} of its {len(configs)} experiments "
                "(the others never timed)")
    else:
        took = f"projected ~{duration(total)} here"
    return f"profile auto -> {chosen} ({why}); the {other} profile would take {took}: `make reproduce-all " \
           f"PROFILE={other}`"


def context(data_dir: Path | None = None, results_dir: Path | None = None, runs_dir: Path | None = None,
            show_progress: bool = True):
    """A run :class:`~fgsm_repro.experiments.common.Context`: the folders given, else the workdir's."""
    from fgsm_repro.experiments.common import Context

    dirs = {name: Path(v) for name, v in (("results_dir", results_dir), ("runs_dir", runs_dir)) if v}
    return Context(data_dir=data_dir, show_progress=show_progress, **dirs)


def train_model(config: str | Path, profile: str = "paper", *, training: str | None = None, seed: int | None = None,
                run_dir: Path | None = None, fresh: bool = False, data_parallel: bool | None = None,
                data_dir: Path | None = None, show_progress: bool = True) -> dict:
    """:func:`fgsm_repro.runs.train_run` after checking the names the config uses, with a progress
    bar on stderr; `run_dir` defaults to ``runs/<config>.<profile>.seed<N>`` in the workdir.
    Returns the run record."""
    from fgsm_repro import workdir
    from fgsm_repro.config import load_config, train_overrides
    from fgsm_repro.console import err
    from fgsm_repro.experiments.runner import check_names
    from fgsm_repro.progress import progress
    from fgsm_repro.runs import default_run_dir, train_run

    cfg = load_config(config, profile, **train_overrides(data_parallel))  # a bad config: one line, before any output
    check_names(cfg, config)  # the names it uses (experiment, models), the task and classes each model needs
    name = training or cfg.default_training()
    spec = cfg.training_specs().get(name)
    epochs = cfg.train_of(name).epochs if spec and not spec.reuse and len(spec.points()) == 1 else None
    run_dir = run_dir or workdir.runs_dir() / default_run_dir(config, profile, cfg.seeds[0] if seed is None else
                                                              seed).name
    with progress(f"train {Path(config).stem} [{profile}] {name}", epochs, err, show=show_progress) as advance:
        return train_run(config, profile, training=training, seed=seed, run_dir=run_dir, fresh=fresh,
                         data_parallel=data_parallel, data_dir=data_dir, on_epoch=lambda rec, _: advance(rec))


def report_files(targets: list[str] | None, results_dir: Path | None = None) -> tuple[Path, set[str] | None]:
    """(the results folder to report on, checked: it exists, holds results files and can be
    written; the names of the results files of the configs `targets` name, claim IDs or config
    files, at any profile — None without `targets`)."""
    from fgsm_repro.config import PROFILES
    from fgsm_repro.experiments.runner import configs_for
    from fgsm_repro.files import check_writable
    from fgsm_repro.results import results_folder

    results_dir = results_folder(results_dir)
    if not results_dir.is_dir():
        raise ReproError(f"results dir {results_dir} does not exist")
    if not any(results_dir.glob("*.json")):
        raise ReproError(f"results dir {results_dir} has no results files (*.json): nothing to report")
    check_writable(results_dir, "results dir")
    names = {f"{Path(c).stem}.{p}.json" for c in configs_for(targets) for p in PROFILES} if targets else None
    return results_dir, names


def workload_listing() -> tuple[str, dict[str, str]]:
    """The benchmark's workloads for the CLI's help: (title, {name: description})."""
    from fgsm_repro.bench import WORKLOADS

    return "Workloads", {name: w.description for name, w in WORKLOADS.items()}


def run_benchmark(only: list[str] | None, results_dir: Path | None = None, *, quick: bool = False,
                  threads: int | None = None, data_parallel: bool = False, log: Callable[[str], None] | None = None,
                  **sizes) -> tuple[Path, Path]:
    """`fgsm-repro bench`: the workloads `only` (None: all), with :class:`~fgsm_repro.bench.BenchSettings`
    of `sizes` (reps, examples, ...; with `quick`, the quick settings instead), written to
    `results_dir` (default: the workdir's results/, checked before timing anything). Returns
    (bench file, rebuilt report)."""
    from dataclasses import replace

    from fgsm_repro.bench import BenchSettings, run_bench, write_bench
    from fgsm_repro.files import check_writable
    from fgsm_repro.report import write_report
    from fgsm_repro.results import results_folder

    results_dir = check_writable(results_folder(results_dir), "results dir")
    settings = replace(BenchSettings.quick() if quick else BenchSettings(**sizes), threads=threads,
                       data_parallel=data_parallel)
    path = write_bench(run_bench(only, settings, log=log or (lambda line: None)), results_dir)
    return path, write_report(results_dir)


def import_official(name: str, path: Path, data_dir: Path | None = None, force: bool = False) -> str:
    """Verify the official files of dataset `name` at `path` and store them; a line saying so."""
    from fgsm_repro.data import import_dataset

    info, changed = import_dataset(name, path, data_dir, force=force)
    verb = "imported" if changed else "already imported (identical content; nothing changed)"
    return f"{info.name} {info.version}: {verb}; sha256 {info.sha256[:16]}…; {info.label}"


def prepare_dataset(name: str, from_path: Path | None = None, data_dir: Path | None = None) -> str:
    """Make dataset `name` available in `data_dir` (default: TFDS's): nothing when it is there,
    else import the official files at `from_path`, else download them. Returns a line saying which."""
    from fgsm_repro.data import download_dataset, import_dataset
    from fgsm_repro.data.store import default_data_dir, resolve_name

    root = Path(data_dir or default_data_dir())
    try:
        return f"{resolve_name(name, root)}: already prepared in {root}"
    except ReproError:
        pass
    info = import_dataset(name, from_path, data_dir)[0] if from_path else download_dataset(name, data_dir)
    return f"{info.name} {info.version}: ready; sha256 {info.sha256[:16]}…; {info.label}"


@dataclass
class Reproduced:
    profile: str  # the config profile that ran (auto resolved)
    results: list[Path]  # the results files written
    report: Path | None  # REPORT.md, rebuilt (None: another process of the run writes it)


def reproduce(targets: list[str] | None, profile: str, ctx, *, stale: bool = False, update_baselines: bool = False,
              data_parallel: bool | None = None, config_dir: Path | None = None, baselines_dir: Path | None = None,
              log: Callable[[str], None] | None = None, verbose: bool = True) -> Reproduced:
    """Run the configs `targets` name (claim IDs or config files, :func:`~fgsm_repro.experiments.
    runner.configs_for`; none: every config of `config_dir`, default the workdir's) at `profile`
    in `ctx` (its results and runs folders), then rebuild the report. `stale`: only those whose
    results file is stale. `update_baselines` (ci only): also copy the results into
    `baselines_dir` (default: the workdir's tests/baselines/). `log` gets the lines to show (the
    profile auto chose, what is stale or skipped, each experiment's start and results file);
    without `verbose`, only the essential ones."""
    from fgsm_repro import workdir
    from fgsm_repro.experiments.runner import configs_for, run_config, skipped_at, stale_configs
    from fgsm_repro.files import check_writable
    from fgsm_repro.processes import writes_files
    from fgsm_repro.progress import plan
    from fgsm_repro.report import write_report
    from fgsm_repro.results import record_baseline

    log = log or (lambda line: None)
    chosen, why = resolve_profile(profile)
    if update_baselines and chosen != "ci":
        raise ReproError("--update-baselines records ci-profile numbers: use it with --profile ci")
    configs = configs_for(targets or [], config_dir)
    if profile == AUTO:
        log(auto_line(chosen, why, configs, ctx.results_dir, ctx.runs_dir))
    profile = chosen
    if stale:
        configs = stale_configs(configs, profile, ctx.results_dir, ctx.data_dir)
        log(f"stale [{profile}]: {', '.join(c.stem for c in configs) or 'none'}")
    for config, reason in skipped_at(configs, profile).items():
        configs.remove(config)
        if verbose:
            log(f"{config.stem} [{profile}]: not run at this profile: {reason}")
    baselines = Path(baselines_dir or workdir.baselines_dir()) if update_baselines else None
    # Before any training: a results or runs folder that cannot be written must not cost the work.
    for folder, what in ((ctx.results_dir, "results dir"), (ctx.runs_dir, "runs dir"), (baselines, "baselines dir")):
        if folder is not None:
            check_writable(folder, what)
    written = []
    ctx.plan = plan(configs, profile, ctx.results_dir, ctx.runs_dir)
    for i, config in enumerate(configs):
        start = time.perf_counter()
        line = ctx.plan.begin(i)
        if verbose:
            log(line)
        path = run_config(config, profile, ctx, data_parallel=data_parallel)
        written.append(path)
        log(f"{config.stem} [{profile}] -> {path} ({time.perf_counter() - start:.1f} s)")
        if baselines is not None:
            log(f"regression baseline -> {record_baseline(path, baselines)}")
    return Reproduced(profile, written, write_report(ctx.results_dir) if writes_files() else None)
