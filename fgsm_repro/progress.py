"""What a long command is doing: experiment k of n, the training's epoch and metrics, elapsed time
and the time left — a live line on a terminal, plain periodic lines in a log.

The time left of a training comes from its own measured seconds per epoch (over its maximum number
of epochs: early stopping can only end it sooner). The time left of the whole command adds an
estimate of each remaining experiment (:func:`estimate`), which says how it was made:

- **last time**: the wall time of its results file of this profile (on this kind of device);
- **projected**: seconds per epoch × the epochs the config plans at this profile (every training
  it trains itself: stage 1's maximum, stage 2's and a retraining's, each grid point, each seed).
  The seconds per epoch are the largest of what is recorded for the same config at any profile
  that trains on the same data: the per-epoch times of its trainings' ``history.json`` under the
  runs folder, the ``seconds_per_epoch`` its results files report, and another profile's results
  file's wall time over the epochs that profile plans. The largest, because a run resumed from
  checkpoints records a short wall time. A projection ignores what else differs between the
  profiles (a narrower network, evaluation, attacks) and early stopping: a rough guide, and said
  to be one;
- **unknown**: nothing recorded to project from; the command's time left is then unknown too.

Where both a last time and a projection exist, the larger is taken (a results file of a run that
resumed from its checkpoints is no guide to a run from scratch).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

# A log (stdout or stderr not a terminal) gets a line at most this often, and at each start and end.
LOG_EVERY_S = 30.0


def clock(seconds: float | None) -> str:
    """1:02:03, 4:05, or ? when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass(frozen=True)
class Estimate:
    """The expected wall time of one experiment, and how it was made: "last time", "projected" or
    "unknown" (seconds None)."""

    seconds: float | None
    how: str = "unknown"

    def describe(self) -> str:
        if self.seconds is None:
            return "no timing recorded to project from"
        return f"last time {clock(self.seconds)}" if self.how == "last time" else f"projected ~{clock(self.seconds)}"


@dataclass
class Plan:
    """The experiments one command runs, in order, with their expected wall times
    (:class:`Estimate`; a bare number is taken as last time's, None as unknown)."""

    names: list[str]
    expected_s: list[Estimate | float | None]
    index: int = -1
    started: float = field(default_factory=time.monotonic)
    experiment_started: float = field(default_factory=time.monotonic)

    def __post_init__(self):
        self.expected_s = [e if isinstance(e, Estimate) else Estimate(e, "last time" if e is not None else "unknown")
                           for e in self.expected_s]

    def begin(self, index: int) -> str:
        """Experiment `index` starts; the line that says so."""
        self.index, self.experiment_started = index, time.monotonic()
        return (f"experiment {index + 1} of {len(self.names)}: {self.names[index]} "
                f"({self.expected_s[index].describe()}); {self.eta_line()}")

    @property
    def header(self) -> str:
        return f"experiment {self.index + 1}/{len(self.names)}" if self.index >= 0 else ""

    def command_left(self, current_left: float | None = None) -> Estimate:
        """The time left for the whole command: unknown when some experiment still to run (or the
        one running) has no estimate; projected when some estimate is a projection.
        `current_left`: what the running training still needs (a floor for the running experiment)."""
        elapsed = time.monotonic() - self.experiment_started
        now = self.expected_s[self.index] if self.index >= 0 else Estimate(0.0, "last time")
        rest = self.expected_s[self.index + 1:]
        if now.seconds is None or any(e.seconds is None for e in rest):
            return Estimate(None)
        left = max(current_left or 0.0, now.seconds - elapsed) + sum(e.seconds for e in rest)
        return Estimate(left, "projected" if any(e.how == "projected" for e in (now, *rest)) else "last time")

    def eta_line(self, current_left: float | None = None) -> str:
        left = self.command_left(current_left)
        elapsed = clock(time.monotonic() - self.started)
        if left.seconds is None:
            return f"{elapsed} elapsed, command time left unknown"
        projected = "projected ~" if left.how == "projected" else ""
        return f"{elapsed} elapsed, command {projected}{clock(left.seconds)} left"


def planned_epochs(cfg) -> int:
    """The epochs `cfg` (an :class:`~fgsm_repro.config.ExperimentConfig` at its profile) trains at
    most: stage 1's, stage 2's and a retraining's of every training it trains itself (not those it
    reuses), at every grid point, for every seed."""
    return sum(training_epochs(cfg, name) for name, spec in cfg.training_specs().items() if not spec.reuse) * len(
        cfg.seeds)


def training_epochs(cfg, name: str) -> int:
    """The epochs training `name` of `cfg` runs at most for one seed: stage 1's, stage 2's and a
    retraining's, at every grid point."""
    total = 0
    for point in cfg.training_specs()[name].points():
        train = cfg.train_of(name, point)
        total += train.epochs * (2 if train.retrain_on_all else 1) + (train.stage2.max_epochs if train.stage2 else 0)
    return total


def _history_seconds(folder: Path) -> list[float]:
    """The median seconds of a stage-1 epoch (the first excluded) of each training's history.json
    under `folder` (``runs/<config>.<profile>/``)."""
    import json
    import statistics

    out = []
    for path in sorted(folder.glob("*/history.json")):
        try:
            times = [r["seconds"] / r.get("seeds_together", 1) for r in json.loads(path.read_text())
                     if isinstance(r, dict) and r.get("epoch", 0) > 1 and isinstance(r.get("seconds"), int | float)]
        except (OSError, ValueError, TypeError, RecursionError):
            continue
        if times:
            out.append(statistics.median(times))
    return out


def _reported_seconds(tree) -> list[float]:
    """The ``seconds_per_epoch`` values anywhere in a results file's measured values and tables."""
    if isinstance(tree, dict):
        return [v for k, v in tree.items() if k == "seconds_per_epoch" and isinstance(v, int | float) and v > 0] + [
            x for k, v in tree.items() if k != "seconds_per_epoch" for x in _reported_seconds(v)]
    return [x for v in tree for x in _reported_seconds(v)] if isinstance(tree, list) else []


def _train_data(cfg) -> dict:
    return cfg.data.model_dump(exclude={"test_per_class"})


def estimate(config: Path, profile: str, records: dict[tuple[str, str], dict], runs_dir: Path | None) -> Estimate:
    """The expected wall time of `config` at `profile` (see the module's docstring); `records`:
    results files by (config name, profile), of this kind of device."""
    from fgsm_repro.config import load_config
    from fgsm_repro.errors import ReproError

    try:
        target = load_config(config, profile)
    except ReproError:
        return Estimate(None)
    per_epoch = seconds_per_epoch(config, profile, records, runs_dir, target)
    projected = per_epoch * planned_epochs(target) if per_epoch is not None else None
    last = (records.get((Path(config).stem, profile)) or {}).get("provenance", {}).get("wall_time_s")
    last = last if isinstance(last, int | float) else None
    if last is not None and (projected is None or last >= projected):
        return Estimate(float(last), "last time")
    return Estimate(projected, "projected") if projected is not None else Estimate(None)


def seconds_per_epoch(config: Path, profile: str, records: dict[tuple[str, str], dict], runs_dir: Path | None,
                      target=None) -> float | None:
    """The largest seconds per training epoch recorded for `config` at any profile that trains on
    the data of `profile` (see the module's docstring); None when nothing is recorded."""
    from fgsm_repro.config import PROFILES, load_config
    from fgsm_repro.errors import ReproError

    name = Path(config).stem
    target = target or load_config(config, profile)
    per_epoch = []
    for other in PROFILES:
        try:
            cfg = target if other == profile else load_config(config, other)
        except ReproError:
            continue
        if _train_data(cfg) != _train_data(target):
            continue
        if runs_dir is not None:
            times = _history_seconds(Path(runs_dir) / f"{name}.{other}")
            per_epoch += [sum(times) / len(times)] if times else []
        record = records.get((name, other))
        if record:
            reported = _reported_seconds([record.get("measured"), record.get("tables")])
            per_epoch += [sum(reported) / len(reported)] if reported else []
            wall, epochs = record["provenance"].get("wall_time_s"), planned_epochs(cfg)
            if other != profile and isinstance(wall, int | float) and epochs:  # this profile's own: last time
                per_epoch.append(wall / epochs)
    return max(per_epoch) if per_epoch else None


@dataclass(frozen=True)
class TrainingRuns:
    """One training of a config run from scratch: the seconds one run takes at most (every epoch it
    may train), and how many runs of it the config trains."""

    name: str
    seconds: float
    runs: int


def from_scratch(config: Path, profile: str, records: dict[tuple[str, str], dict]) -> list[TrainingRuns] | None:
    """What `config` at `profile` trains with nothing trained yet: every training it trains or reuses
    (followed to the config that trains it, at that config's seconds per epoch), for each of its
    seeds and, where the experiment trains several runs of a training per seed (an ensemble's
    members), each of those (its module's ``runs_per_seed(cfg)``). None when a training has
    nothing recorded to project from."""
    from fgsm_repro import trainings
    from fgsm_repro.config import experiment_configs, load_config
    from fgsm_repro.errors import ReproError
    from fgsm_repro.experiments import find_experiment

    try:
        cfg = load_config(config, profile)
        runs = getattr(find_experiment(cfg.experiment, [cfg.folder]), "runs_per_seed", lambda cfg: {})(cfg)
    except ReproError:
        return None
    out = []
    for name in cfg.training_specs():
        owner, path, training = cfg, Path(config), name
        try:
            while ref := owner.training_specs()[training].reuse:
                owner, path, training = (trainings.reused_config(owner, training),
                                         experiment_configs(owner.folder)[ref.config], ref.training)
        except ReproError:  # a reused config gone or broken: nothing to project from
            return None
        per_epoch = seconds_per_epoch(path, profile, records, None, owner)
        if per_epoch is None:
            return None
        out.append(TrainingRuns(name, per_epoch * training_epochs(owner, training), len(cfg.seeds) * runs.get(name, 1)))
    return out


def results_by_config(results_dir: Path) -> dict[tuple[str, str], dict]:
    """The results files of `results_dir` measured on this kind of device (JAX's backend), by
    (config name, profile)."""
    import jax

    from fgsm_repro.results import read_results

    backend = jax.default_backend()
    return {(r["name"], r["provenance"]["profile"]): r for r in read_results(results_dir)
            if r["provenance"].get("device", {}).get("platform", backend) == backend}


def plan(configs: list[Path], profile: str, results_dir: Path, runs_dir: Path | None = None) -> Plan:
    """The :class:`Plan` of a command that runs `configs` at `profile`."""
    records = results_by_config(results_dir)
    return Plan([f"{Path(c).stem} [{profile}]" for c in configs],
                [estimate(c, profile, records, runs_dir) for c in configs])


def projected_total(configs: list[Path], profile: str, results_dir: Path,
                    runs_dir: Path | None = None) -> tuple[float, int]:
    """(the summed estimates of the `configs` that have one at `profile`, how many have none)."""
    estimates = plan(configs, profile, results_dir, runs_dir).expected_s
    return sum(e.seconds for e in estimates if e.seconds is not None), sum(e.seconds is None for e in estimates)


@dataclass
class TrainingProgress:
    """One training's epochs: counts them, times them, and says so (see :func:`progress`)."""

    description: str
    total: int | None
    plan: Plan | None = None
    records_per_epoch: int = 1  # several seeds stepping together: one record each
    done: int = 0  # epoch records of this command
    skipped: int = 0  # those of a run resumed from its checkpoints, done before
    started: float = field(default_factory=time.monotonic)
    status: str = ""

    def advance(self, record: dict | None) -> None:
        if not self.done and record and record.get("epoch", 1) > 1:
            self.skipped = (record["epoch"] - 1) * self.records_per_epoch
        self.done += 1
        if record:
            self.status = f"loss {record['loss']:.4f}" + (
                f", val err {record['val_error']:.2f}%" if record.get("val_error") is not None else "")

    @property
    def left_s(self) -> float | None:
        if not self.done or not self.total:
            return None
        return max(self.total - self.skipped - self.done, 0) * (time.monotonic() - self.started) / self.done

    def line(self) -> str:
        epochs = f"epoch {self.skipped + self.done}/{self.total or '?'}"
        parts = [self.plan.header if self.plan else "", self.description, epochs, self.status,
                 f"training at most {clock(self.left_s)} left" if self.left_s is not None else ""]
        if self.plan:
            parts.append(self.plan.eta_line(self.left_s))
        return " · ".join(p for p in parts if p)


@contextlib.contextmanager
def progress(description: str, total: int | None, console: Console, plan: Plan | None = None,
             show: bool = True, records_per_epoch: int = 1) -> Iterator[Callable[[dict | None], None]]:
    """Yields ``advance(record)``, called once per epoch: a live line (bar, epoch, metrics, time
    left) on a terminal; otherwise a plain line after the first epoch, every LOG_EVERY_S seconds
    and at the end. Markup in names ("[ci]") is shown as written."""
    if not show:
        yield lambda record=None: None
        return
    state = TrainingProgress(description, total, plan, records_per_epoch)
    if console.is_terminal:
        columns = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}", markup=False))
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(" · ".join(p for p in (plan.header if plan else "", description) if p),
                                total=total, status="")

            def advance(record: dict | None = None):
                state.advance(record)
                eta = [f"{clock(state.left_s)} left" if state.left_s is not None else ""]
                if plan:
                    eta.append(plan.eta_line(state.left_s))
                bar.update(task, completed=state.skipped + state.done,
                           status=" · ".join(p for p in (state.status, *eta) if p))

            yield advance
        return
    last = None  # the first epoch's line opens the log's lines: a failure before it leaves only its error

    def log_advance(record: dict | None = None):
        nonlocal last
        state.advance(record)
        if last is None or time.monotonic() - last >= LOG_EVERY_S:
            last = time.monotonic()
            console.print(state.line(), markup=False, highlight=False, soft_wrap=True)

    yield log_advance
    if last is not None:
        console.print(state.line() + " · done", markup=False, highlight=False, soft_wrap=True)
