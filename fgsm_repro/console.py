"""What the commands print: the paper-vs-measured tables, an attack's metrics, the claim IDs
(stdout; warnings and progress on stderr; markup-like text such as "[ci]" shown as written), and
how a command ends (:func:`run_app`): one ``error:`` line for what the user can act on."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

out = Console()
err = Console(stderr=True)  # progress


def pct(v) -> str:
    return "—" if v is None else f"{v:.2f}%"


def say(text: str) -> None:
    """One plain line (no markup, no highlighting), wrapped softly."""
    out.print(text, markup=False, highlight=False, soft_wrap=True)


def print_rows(rows: list[dict], title: str) -> None:
    table = Table(title=title)
    columns = ("claim", "metric", "paper", "measured", "band", "verdict", "profile")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    out.print(table, markup=False)


def print_paper_rows(cfg, profile: str, training: str, kind: str, measured: dict) -> None:
    """The paper's numbers that `measured` (a training's clean test numbers, or the config's attack
    on its whole test set) stands for, per the experiment's ``PAPER_ROWS``, with the verdicts."""
    from fgsm_repro.experiments import paper_rows
    from fgsm_repro.reference import target
    from fgsm_repro.report import paper_row

    rows = [paper_row(target(claim, metric), measured.get(key), profile)
            for claim, metric, key in paper_rows(cfg, training, kind)]
    if rows:
        print_rows(rows, f"paper vs measured (percent) — this {kind} run of training {training!r}")


def print_summary(results_dir: Path, just_written: list[Path] | None = None, names: set[str] | None = None,
                  report: Path | None = None) -> None:
    """The paper-vs-measured rows: of the results files `just_written` (what this command
    measured), of the results files `names`, or of everything in `results_dir`; then where the
    `report` was written."""
    from fgsm_repro.report import summary_rows
    from fgsm_repro.results import scan_results

    files = names if just_written is None else {Path(p).name for p in just_written}
    rows = summary_rows(results_dir, files)
    if rows:
        print_rows(rows, "paper vs measured (percent)" + (" — measured by this command" if just_written is not None
                                                           else " — of the configs named" if names is not None else ""))
    elif files is not None:
        say("(no paper number among the claims just measured: see the report)" if just_written is not None
            else "(no paper number among these configs' results)")
    for problem in scan_results(results_dir).unreadable:  # never skipped in silence
        print(f"warning: unreadable results file {problem}", file=sys.stderr)
    if report is not None:
        say(f"report -> {report}")


def print_trained(record: dict, profile: str) -> None:
    """A training's one line, and the paper rows its clean test error stands for."""
    from fgsm_repro.config import load_config

    say(f"trained {record['model']} on {record['dataset']['label']}: {record['epochs_run']} epochs "
        f"(best {record['best_epoch']}), validation error {pct(record['val_error'])}, "
        f"test error {pct(record['test_error'])}  ->  {record['run_dir']}")
    # the config that trained it (another one's, for a reused training)
    print_paper_rows(load_config(record["config"], profile), profile, record["training"], "clean",
                     {"error": record["test_error"]})


def print_attack(report) -> None:
    """An :class:`~fgsm_repro.attack_run.AttackReport`: its metrics, the files written, and the
    paper rows when it is the config's own attack on the whole test set."""
    for note in report.notes:
        say(note)
    table = Table(title=f"{report.spec.describe()} on {report.examples} test images ({report.dataset_label}, "
                        f"{report.space} space)")
    for col in ("", "error", "mean confidence", "confidence on mistakes"):
        table.add_column(col)
    for name, m in (("clean", report.clean), ("adversarial", report.adversarial)):
        table.add_row(name, pct(m["error"]), pct(m["confidence_all"]), pct(m["confidence_mistakes"]))
    out.print(table)
    adv = report.adversarial
    norms = adv["norms"]
    shown = "   ".join(f"{label} mean {norms[k]['mean']:.4g}, median {norms[k]['median']:.4g}"
                       for k, label in (("l0", "L0"), ("l2", "L2"), ("linf", "L∞")) if norms[k]["mean"] is not None)
    out.print(f"perturbations of the {norms['examples']} examples fooled: {shown or '-'}\n"
              f"{1000 * adv['seconds_per_example']:.3g} ms per example", markup=False)
    if adv.get("target_hit") is not None:
        out.print(f"classified as their target: {pct(adv['target_hit'])} of the examples", markup=False)
    if adv.get("robust_after"):
        stages = " -> ".join(f"{stage} {pct(rate)}" for stage, rate in adv["robust_after"].items())
        out.print(f"robust accuracy: {stages}", markup=False)
    written = report.written
    if "npz" in written:
        out.print(f"saved {report.saved_examples} examples -> {written['npz']}, {written['png']}", markup=False)
    if "json" in written:
        out.print(f"metrics -> {written['json']}", markup=False)
    if report.configured:
        print_paper_rows(report.cfg, report.profile, report.training, "attack", adv)


def print_claim_ids() -> None:
    from fgsm_repro.reference import TARGETS

    table = Table(title="claim IDs: the paper's numbers and their tolerance bands (fgsm_repro/reference.py)")
    for col in ("claim", "metric", "paper", "band (±)", "what"):
        table.add_column(col)
    for t in TARGETS:
        table.add_row(t.claim, t.metric, "—" if t.paper is None else f"{t.paper:g}",
                      "—" if t.band is None else f"{t.band:g}", t.description)
    out.print(table, markup=False)


def run_app(app, argv: list[str] | None, *, watched: bool) -> int:
    """Run the Typer `app` on `argv`; returns the exit status. Every failure the user can act on is
    one line on stderr (``error: …``, exit 2); Ctrl-C says what is kept (exit 130). `watched`: the
    executable's interrupt watcher (:mod:`fgsm_repro.entry`) takes Ctrl-C; otherwise a signal
    handler does while the command runs."""
    import signal

    import typer
    from typer import _click

    from fgsm_repro import interrupts, workdir
    from fgsm_repro.errors import ReproError
    from fgsm_repro.runtime import Runtime

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
        workdir.use(None)  # --workdir holds for the one command
        if previous is not None:
            signal.signal(signal.SIGINT, previous)  # the command may run inside another program (the tests)
    return code or 0
