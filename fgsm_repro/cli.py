"""The `fgsm-repro` command line: a parser over the library (train, attack, reproduce, report, bench,
data); what each command does is in the module it calls."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer  # noqa: E402
from typer import Argument, Option  # noqa: E402

from fgsm_repro import attack_run, interrupts, workdir, workflows  # noqa: E402  (light: they import JAX lazily)
from fgsm_repro.console import out, run_app, say  # noqa: E402

# Plain help (no Rich markup): bracketed text such as "[default: …]" is shown as written.
app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Reproduce 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al., 2015).")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Prepare datasets in the TFDS data dir (download or offline import).")
app.add_typer(data_app, name="data")
RESUME_HINT = interrupts.RESUME_HINT
MAX_SEED = 2**32 - 1  # JAX's PRNG keys hold 32-bit seeds (the config's `seeds` have the same range)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"fgsm-repro {version('fgsm-repro')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False) -> None:
    """Reproduce 'Explaining and Harnessing Adversarial Examples' (Goodfellow et al., 2015)."""
    workdir.use(None)  # each command finds its own (the tests run several in one process)


# Commands whose help ends with a list: (title, {name: text}), read only when the help is asked for (it imports JAX).
LISTINGS = {"attack": attack_run.attack_listing, "bench": workflows.workload_listing}


class _Command(typer.core.TyperCommand):
    """Usage lines in the usual form: a required argument bare (`CONFIG`), not in braces."""

    def collect_usage_pieces(self, ctx):
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]

    def get_help(self, ctx):
        if self.name in LISTINGS:  # "\b": click leaves the paragraph as written (one item per line)
            title, items = LISTINGS[self.name]()
            self.epilog = f"{title}:\n\n\b\n" + "\n".join(f"{name}: {text}" for name, text in items.items())
        return super().get_help(ctx)


DataDirOpt = Annotated[Path | None, Option("--data-dir", help="TFDS data dir.",
                                           show_default="$TFDS_DATA_DIR or ~/tensorflow_datasets")]
ResultsDirOpt = Annotated[Path | None, Option("--results-dir", help="Where results/*.json and REPORT.md go.",
                                              show_default="WORKDIR/results")]
QuietOpt = Annotated[bool, Option("--quiet", "-q", help="No progress bars.")]
DataParallelOpt = Annotated[bool | None, Option(
    "--data-parallel/--one-device", help="Split every batch across all devices (of every process) or keep it on one.",
    show_default="the config's train.data_parallel")]
WorkdirOpt = Annotated[Path | None, Option(
    "--workdir", help="The project folder: its configs/, results/, runs/ and tests/baselines/ are used.",
    show_default="$FGSM_REPRO_WORKDIR, or the current folder or its nearest parent with a configs/ folder")]
TargetsArg = Annotated[list[str] | None, Argument(metavar="TARGETS", help="Claim IDs (e.g. T1.softmax F2.adv; "
                                                  "`fgsm-repro report --list`) or config files (.yaml).")]


def _opt(help: str, default: str | None = None, **kw):
    return Option(help=help, show_default=default if default is not None else True, **kw)


@app.command(cls=_Command)
def train(
    config: Annotated[Path, Argument(metavar="CONFIG", help="Experiment YAML (its data, model and train sections).")],
    profile: Annotated[str, _opt("paper, fast or ci.")] = "paper",
    seed: Annotated[int | None, _opt("Seed.", "the config's first", min=0, max=MAX_SEED)] = None,
    run_dir: Annotated[Path | None, _opt("Checkpoint dir.", "WORKDIR/runs/<config>.<profile>.seed<N>")] = None,
    fresh: Annotated[bool, _opt("Ignore an existing checkpoint in the run dir.")] = False,
    training: Annotated[str | None, _opt("Which of the config's trainings.", "its only one, or 'model'")] = None,
    data_parallel: DataParallelOpt = None, data_dir: DataDirOpt = None, quiet: QuietOpt = False,
    work: WorkdirOpt = None,
):
    """Train a model of CONFIG; resumes from the run dir's last checkpoint if there is one."""
    interrupts.on_interrupt(RESUME_HINT)
    workdir.use(work)
    from fgsm_repro.console import print_trained
    from fgsm_repro.processes import writes_files

    record = workflows.train_model(config, profile, training=training, seed=seed, run_dir=run_dir, fresh=fresh,
                                   data_parallel=data_parallel, data_dir=data_dir, show_progress=not quiet)
    if writes_files():
        print_trained(record, profile)


@app.command(cls=_Command)
def attack(
    run_dir: Annotated[Path, Argument(metavar="RUN_DIR", help="A run dir: `fgsm-repro train`'s, or an experiment's "
                                      "training under runs/CONFIG.PROFILE/seedN-TRAINING.")],
    attack_name: Annotated[str | None, Option("--attack", help="An attack: a built-in name (listed below) or "
                                              "module:Class.", show_default="the config's")] = None,
    eps: Annotated[float | None, _opt("Perturbation size in the attack's norm (if it has one).", "the config's")]
    = None,
    clip: Annotated[str | None, _opt("LOW,HIGH to clip the examples, or none.", "the attack's")] = None,
    labels: Annotated[str | None, _opt("true or predicted labels.", "the config's")] = None,
    params: Annotated[list[str] | None, Option("--param", help="KEY=VALUE: another setting (steps=40); repeatable.")]
    = None,
    space: Annotated[str, _opt("preprocessed: attack the model's inputs; pixel: attack [0, 1] pixels through the "
                               "dataset's preprocessing (CIFAR-10's GCN + ZCA).")] = "preprocessed",
    limit: Annotated[int | None, _opt("Attack only the first N test images.", min=1)] = None,
    save_examples: Annotated[int, _opt("Save this many clean/adversarial test examples (.npz) and a PNG grid of "
                                       "clean / perturbation / adversarial.", min=0)] = 0,
    output: Annotated[Path | None, Option("--out", help="Write the metrics as JSON here.")] = None,
    data_parallel: DataParallelOpt = None, data_dir: DataDirOpt = None,
):
    """An attack (the config's, or --attack) on the test set against a trained model: error,
    confidences, perturbation norms and time per example."""
    from fgsm_repro.console import print_attack
    from fgsm_repro.processes import writes_files

    clip_ = attack_run.CONFIGURED if clip is None else attack_run.parse_clip(clip)
    report = attack_run.run_attack(run_dir, attack_name, eps=eps, clip=clip_, labels=labels, space=space, limit=limit,
                                   params=attack_run.parse_params(params or []), save_examples=save_examples,
                                   out=output, data_parallel=data_parallel, data_dir=data_dir)
    if writes_files():  # of several processes, the first reports
        print_attack(report)


@app.command(cls=_Command)
def reproduce(
    targets: TargetsArg = None,
    profile: Annotated[str, _opt("auto (paper where JAX sees an accelerator, fast on a CPU), paper, fast or ci.")]
    = "auto",
    stale: Annotated[bool, Option("--stale", help="Only the experiments whose results file of this profile is stale "
                                  "(its config or dataset changed since), as the report marks them.")] = False,
    update_baselines: Annotated[bool, Option("--update-baselines", help="With --profile ci: also record the numbers "
                                             "as the tests' regression baselines (WORKDIR/tests/baselines/).")] = False,
    results_dir: ResultsDirOpt = None,
    runs_dir: Annotated[Path | None, _opt("Checkpoints.", "WORKDIR/runs")] = None,
    data_parallel: DataParallelOpt = None, data_dir: DataDirOpt = None, quiet: QuietOpt = False,
    work: WorkdirOpt = None,
):
    """Run the experiments of TARGETS (none: every config in WORKDIR/configs) with PROFILE, write
    results/*.json, rebuild the report."""
    interrupts.on_interrupt(RESUME_HINT)
    workdir.use(work)
    from fgsm_repro.console import print_summary
    from fgsm_repro.processes import sync, writes_files

    ctx = workflows.context(data_dir, results_dir, runs_dir, show_progress=not quiet)
    done = workflows.reproduce(targets, profile, ctx, stale=stale, update_baselines=update_baselines,
                               data_parallel=data_parallel, log=say if writes_files() else None, verbose=not quiet)
    if writes_files():  # of several processes, the first writes the results and reports
        print_summary(ctx.results_dir, done.results, report=done.report)
    interrupts.on_interrupt("interrupted after the results and the report were written: nothing is lost")
    sync("results written")


@app.command(cls=_Command)
def report(
    targets: TargetsArg = None, results_dir: ResultsDirOpt = None,
    list_ids: Annotated[bool, Option("--list", help="List the claim IDs, the paper's values and their tolerance "
                                     "bands, and exit.")] = False,
    work: WorkdirOpt = None,
):
    """Rebuild results/REPORT.md from results/*.json; show the paper-vs-measured rows (of the
    configs of TARGETS only, when given: the report covers every results file)."""
    workdir.use(work)
    from fgsm_repro.console import print_claim_ids, print_summary
    from fgsm_repro.report import write_report

    if list_ids:
        return print_claim_ids()
    results_dir, names = workflows.report_files(targets, results_dir)
    print_summary(results_dir, names=names, report=write_report(results_dir))


@app.command(cls=_Command)
def bench(
    only: Annotated[list[str] | None, Argument(metavar="WORKLOADS", help="Workload names (below); none = all.")]
    = None,
    reps: Annotated[int, _opt("Timed repetitions per side, at least.", min=1)] = 5,
    min_seconds: Annotated[float, _opt("Repeat a short workload until its JAX side is timed this long.", min=0.0)]
    = 5.0,
    examples: Annotated[int, _opt("Training examples per timed epoch.", min=100)] = 10_000,
    quick: Annotated[bool, _opt("Tiny networks and data: checks the suite runs, times nothing real.")] = False,
    threads: Annotated[int | None, _opt("PyTorch intra-op threads.", "torch's")] = None,
    data_parallel: Annotated[bool, _opt("Split the JAX side across all devices (on a CPU: XLA_FLAGS=--xla_force_"
                                        "host_platform_device_count=N); writes bench.dp<N>.json.")] = False,
    results_dir: ResultsDirOpt = None, work: WorkdirOpt = None,
):
    """Time our JAX workloads against PyTorch + torchattacks on this machine -> results/bench.json."""
    workdir.use(work)
    path, report_path = workflows.run_benchmark(only, results_dir, quick=quick, log=out.print, reps=reps,
                                                examples=examples, min_timed_seconds=min_seconds, threads=threads,
                                                data_parallel=data_parallel)
    out.print(f"benchmark -> {path}; report -> {report_path}")


NameArg = Annotated[str, Argument(metavar="NAME", help="mnist or cifar10.")]


@data_app.command("import", cls=_Command)
def data_import(
    name: NameArg, path: Annotated[Path, Argument(metavar="PATH", help="Official files: MNIST IDX dir, CIFAR-10 "
                                                  "archive, or split/class image folder.")],
    data_dir: DataDirOpt = None,
    force: Annotated[bool, _opt("Replace a different dataset already stored under that name.")] = False,
):
    """Verify the official files at PATH and store them as a TFDS dataset (offline path)."""
    out.print(workflows.import_official(name, path, data_dir, force))


@data_app.command("prepare", cls=_Command)
def data_prepare(name: NameArg, from_path: Annotated[Path | None, Option(
        "--from", help="Import these official files instead of downloading.")] = None, data_dir: DataDirOpt = None):
    """Make NAME available: nothing if it is there, else import --from PATH, else TFDS download."""
    out.print(workflows.prepare_dataset(name, from_path, data_dir))


@data_app.command("info", cls=_Command)
def data_info(name: NameArg, data_dir: DataDirOpt = None):
    """Show the provenance of a prepared dataset."""
    from fgsm_repro.data.store import dataset_dir, default_data_dir, read_provenance, resolve_name

    root = Path(data_dir or default_data_dir())
    out.print_json(json.dumps(read_provenance(dataset_dir(resolve_name(name, root), root))))


def main(argv: list[str] | None = None, *, watched: bool = False) -> None:
    """The entry point (:func:`fgsm_repro.console.run_app`: one-line errors, exit 2; Ctrl-C, 130)."""
    sys.exit(run_app(app, argv, watched=watched))


if __name__ == "__main__":
    from fgsm_repro.entry import main as entry_main

    entry_main()
