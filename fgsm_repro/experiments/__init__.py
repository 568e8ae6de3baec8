"""Experiments: one module per paper table or figure, found by name.

Each module is an :class:`Experiment`: ``CLAIMS`` (the claim IDs it measures), ``TRAININGS`` (the
names under the config's ``trainings`` it uses; empty: whichever the config has) and
``run(cfg, splits, seed, ctx) -> Outcome``; optionally ``run_seeds(cfg, splits, seeds, ctx)``,
which trains several seeds together, and ``Options``, a pydantic model of the settings it reads from
the config's ``options``. A config's ``experiment: t1_softmax`` is the module
``fgsm_repro/experiments/t1_softmax.py``; any other name is a user's module (``my_experiment`` beside
the config, in the current folder or on ``sys.path``; :mod:`fgsm_repro.plugins`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Protocol, runtime_checkable

from fgsm_repro import plugins
from fgsm_repro.errors import ReproError

PACKAGE = "fgsm_repro.experiments"
NOT_EXPERIMENTS = ("common", "runner")  # the modules of the package that are not experiments


@runtime_checkable
class Experiment(Protocol):
    CLAIMS: tuple[str, ...]
    TRAININGS: tuple[str, ...]

    def run(self, cfg, splits, seed: int, ctx): ...


@functools.cache
def built_in_experiments() -> tuple[str, ...]:
    """The names of the project's experiments (one module each)."""
    return tuple(plugins.built_in_names(PACKAGE, NOT_EXPERIMENTS))


def find_experiment(name: str, folders: Iterable[Path | str] = ()) -> ModuleType:
    """The experiment module `name`: a built-in name, or a user's module path searched in
    `folders` first. One-line ReproError when there is none or it is not an experiment."""
    built_in = name in built_in_experiments()
    if not plugins.is_module(name):
        raise _unknown(name)
    try:
        module = plugins.import_module(f"{PACKAGE}.{name}" if built_in else name, folders)
    except ModuleNotFoundError:
        raise _unknown(name) from None
    if not isinstance(module, Experiment):
        missing = [a for a in ("CLAIMS", "TRAININGS", "run") if not hasattr(module, a)]
        raise ReproError(f"module {name} is not an experiment: it lacks {', '.join(missing)}")
    return module


def _unknown(name: str) -> ReproError:
    return ReproError(f"unknown experiment {name!r}; built in: {', '.join(built_in_experiments())}; or your own "
                      "module (beside the config, in the current folder or on PYTHONPATH)")


def paper_rows(cfg, training: str, kind: str) -> list[tuple[str, str, str]]:
    """(claim, metric, key) of the paper's numbers that one run of training `training` of `cfg`
    measures, per its experiment's ``PAPER_ROWS`` (training -> kind -> rows): `kind` "clean" for
    the clean test numbers (`fgsm-repro train`), "attack" for the config's attack on the whole test
    set (`fgsm-repro attack`); `key` names the measured value. Only `cfg`'s own claims."""
    rows = getattr(find_experiment(cfg.experiment, [cfg.folder]), "PAPER_ROWS", {})
    return [row for row in rows.get(training, {}).get(kind, ()) if row[0] in cfg.claims]
