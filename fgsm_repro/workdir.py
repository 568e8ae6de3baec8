"""The project folder ("workdir") the commands read and write: ``configs/`` (the experiment
configs), ``results/`` (results files and REPORT.md), ``runs/`` (checkpoints and run folders) and
``tests/baselines/`` (the ci regression baselines).

Which folder: the one chosen with :func:`use` (the CLI's ``--workdir DIR``), else
``$FGSM_REPRO_WORKDIR``, else the current folder or its nearest parent that has a ``configs/``
folder. Never the package's own location: an installed package writes nothing into
site-packages, and a checkout is used only when the command runs inside it. An explicit folder
given to a function (``results_dir=...``) always wins over the workdir's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fgsm_repro.errors import ReproError

ENV = "FGSM_REPRO_WORKDIR"
# Checkpoints elsewhere than the workdir's runs/ (e.g. a scratch disk).
RUNS_ENV = "FGSM_REPRO_RUNS_DIR"

_chosen: Path | None = None


@dataclass(frozen=True)
class Workdir:
    """A project folder and the folders inside it."""

    root: Path

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def runs(self) -> Path:
        return Path(os.environ.get(RUNS_ENV) or self.root / "runs")

    @property
    def baselines(self) -> Path:
        return self.root / "tests" / "baselines"


def find(start: str | Path | None = None) -> Path | None:
    """`start` (default: the current folder) or its nearest parent that has a ``configs/`` folder."""
    here = Path(start or Path.cwd()).resolve()
    return next((d for d in (here, *here.parents) if (d / "configs").is_dir()), None)


def use(folder: str | Path | None) -> None:
    """Make `folder` the workdir of this process (None: back to $FGSM_REPRO_WORKDIR or detection);
    a folder without ``configs/`` is a one-line error."""
    global _chosen
    _chosen = None if folder is None else _checked(Path(folder), "--workdir")


def _checked(folder: Path, what: str) -> Path:
    if not (folder / "configs").is_dir():
        raise ReproError(f"{what} {folder}: not a project folder (it has no configs/ folder)")
    return folder.resolve()


def current(required: bool = True) -> Workdir | None:
    """The workdir (see the module's docstring). With `required`, none found is a one-line
    ReproError; otherwise None."""
    if _chosen is not None:
        return Workdir(_chosen)
    if os.environ.get(ENV):
        return Workdir(_checked(Path(os.environ[ENV]), f"${ENV}"))
    root = find()
    if root is None:
        if not required:
            return None
        raise ReproError(f"no project folder: neither {Path.cwd()} nor a parent has a configs/ folder; run inside "
                         f"one, or pass --workdir DIR (or set ${ENV})")
    return Workdir(root)


def config_dir() -> Path:
    return current().configs


def results_dir() -> Path:
    return current().results


def runs_dir() -> Path:
    """The workdir's runs/ ($FGSM_REPRO_RUNS_DIR when set, without needing a workdir)."""
    return Path(os.environ[RUNS_ENV]) if os.environ.get(RUNS_ENV) else current().runs


def baselines_dir() -> Path:
    return current().baselines
