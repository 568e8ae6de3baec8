"""What a long command is doing: experiment k of n, the training's epoch and metrics, elapsed time
and the time left — a live line on a terminal, plain periodic lines in a log.

The time left of a training comes from its own measured seconds per epoch (over its maximum number
of epochs: early stopping can only end it sooner); the time left of the whole command adds what
each remaining experiment took the last time it was run with this profile (its results file's
wall time), where one was recorded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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


@dataclass
class Plan:
    """The experiments one command runs, in order, with what each took last time (None: unknown)."""

    names: list[str]
    expected_s: list[float | None]
    index: int = -1
    started: float = field(default_factory=time.monotonic)
    experiment_started: float = field(default_factory=time.monotonic)

    def begin(self, index: int) -> str:
        """Experiment `index` starts; the line that says so."""
        self.index, self.experiment_started = index, time.monotonic()
        expected = self.expected_s[index]
        last = f" (last time {clock(expected)})" if expected else ""
        return f"experiment {index + 1} of {len(self.names)}: {self.names[index]}{last}; {self.eta_line()}"

    @property
    def header(self) -> str:
        return f"experiment {self.index + 1}/{len(self.names)}" if self.index >= 0 else ""

    def command_left(self, current_left: float | None = None) -> tuple[float, bool]:
        """Seconds left for the whole command (a lower bound when some experiment has no recorded
        time: the flag says so). `current_left`: what the running training still needs."""
        elapsed = time.monotonic() - self.experiment_started
        expected = self.expected_s[self.index] if self.index >= 0 else None
        now = max(current_left or 0.0, (expected - elapsed) if expected else 0.0)
        rest = self.expected_s[self.index + 1:]
        known = all(e is not None for e in rest) and (expected is not None or current_left is not None)
        return now + sum(e for e in rest if e is not None), known

    def eta_line(self, current_left: float | None = None) -> str:
        left, known = self.command_left(current_left)
        elapsed = clock(time.monotonic() - self.started)
        return f"{elapsed} elapsed, command {'' if known else 'at least '}{clock(left)} left"


@dataclass
class TrainingProgress:
    """One training's epochs: counts them, times them, and says so (see :func:`progress`)."""

    description: str
    total: int | None
    plan: Plan | None = None
    done: int = 0
    started: float = field(default_factory=time.monotonic)
    status: str = ""

    def advance(self, record: dict | None) -> None:
        self.done += 1
        if record:
            self.status = f"loss {record['loss']:.4f}" + (
                f", val err {record['val_error']:.2f}%" if record.get("val_error") is not None else "")

    @property
    def left_s(self) -> float | None:
        if not self.done or not self.total:
            return None
        return max(self.total - self.done, 0) * (time.monotonic() - self.started) / self.done

    def line(self) -> str:
        epochs = f"epoch {self.done}/{self.total or '?'}"
        parts = [self.plan.header if self.plan else "", self.description, epochs, self.status,
                 f"training at most {clock(self.left_s)} left" if self.left_s is not None else ""]
        if self.plan:
            parts.append(self.plan.eta_line(self.left_s))
        return " · ".join(p for p in parts if p)


@contextlib.contextmanager
def progress(description: str, total: int | None, console: Console, plan: Plan | None = None,
             show: bool = True) -> Iterator[Callable[[dict | None], None]]:
    """Yields ``advance(record)``, called once per epoch: a live line (bar, epoch, metrics, time
    left) on a terminal; otherwise a plain line after the first epoch, every LOG_EVERY_S seconds
    and at the end. Markup in names ("[ci]") is shown as written."""
    if not show:
        yield lambda record=None: None
        return
    state = TrainingProgress(description, total, plan)
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
                bar.update(task, advance=1, status=" · ".join(p for p in (state.status, *eta) if p))

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
