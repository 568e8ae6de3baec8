"""Experiment registry: one module per paper table or figure, found by name.

Each module is an :class:`Experiment`: ``CLAIMS`` (the claim IDs it measures), ``TRAININGS`` (the
names under the config's ``trainings`` it uses; empty: whichever the config has) and
``run(cfg, splits, seed, ctx) -> Outcome``; optionally ``run_seeds(cfg, splits, seeds, ctx)``,
which trains several seeds together. Its YAML config lives in ``configs/<name>.yaml``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Protocol, runtime_checkable

from fgsm_repro.experiments import (
    a_rubbish_cifar,
    f2_logistic,
    s5_l1,
    s6_noise,
    t1_convmaxout,
    t1_softmax,
    t2_maxout240,
    t2_maxout1600,
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
    "a_rubbish_cifar": a_rubbish_cifar,
}
