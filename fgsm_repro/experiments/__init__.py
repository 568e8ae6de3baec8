"""Experiment registry: one module per paper table or figure, found by name.

Each module is an :class:`Experiment`: ``CLAIMS`` (the claim IDs it measures), ``TRAININGS`` (the
names under the config's ``trainings`` it uses; empty: whichever the config has) and
``run(cfg, splits, seed, ctx) -> Outcome``; optionally ``run_seeds(cfg, splits, seeds, ctx)``,
which trains several seeds together, and ``Options``, a pydantic model of the settings it reads from
the config's ``options``. Its YAML config lives in ``configs/<name>.yaml``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol, runtime_checkable

from fgsm_repro.experiments import (
    a_rubbish_cifar,
    a_rubbish_mnist,
    attacks_mnist,
    f2_logistic,
    f4_sweep,
    s5_l1,
    s6_noise,
    s7_rbf,
    s8_generalization,
    s9_ensemble,
    s9_mpdbm,
    t1_convmaxout,
    t1_softmax,
    t2_maxout240,
    t2_maxout1600,
    x_transfer,
)


@runtime_checkable
class Experiment(Protocol):
    CLAIMS: tuple[str, ...]
    TRAININGS: tuple[str, ...]

    def run(self, cfg, splits, seed: int, ctx): ...


EXPERIMENTS: dict[str, ModuleType] = {
    "t1_softmax": t1_softmax,
    "t1_convmaxout": t1_convmaxout,
    "f2_logistic": f2_logistic,
    "t2_maxout240": t2_maxout240,
    "t2_maxout1600": t2_maxout1600,
    "s6_noise": s6_noise,
    "s5_l1": s5_l1,
    "s7_rbf": s7_rbf,
    "s8_generalization": s8_generalization,
    "s9_ensemble": s9_ensemble,
    "s9_mpdbm": s9_mpdbm,
    "f4_sweep": f4_sweep,
    "a_rubbish_mnist": a_rubbish_mnist,
    "x_transfer": x_transfer,
    "attacks_mnist": attacks_mnist,
    "a_rubbish_cifar": a_rubbish_cifar,
}


def paper_rows(cfg, training: str, kind: str) -> list[tuple[str, str, str]]:
    """(claim, metric, key) of the paper's numbers that one run of training `training` of `cfg`
    measures, per its experiment's ``PAPER_ROWS`` (training -> kind -> rows): `kind` "clean" for
    the clean test numbers (`fgsm-repro train`), "attack" for the config's attack on the whole test
    set (`fgsm-repro attack`); `key` names the measured value. Only `cfg`'s own claims."""
    rows = getattr(EXPERIMENTS.get(cfg.experiment), "PAPER_ROWS", {})
    return [row for row in rows.get(training, {}).get(kind, ()) if row[0] in cfg.claims]
