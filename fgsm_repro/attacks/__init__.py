"""Attacks: one module each, holding the attack as a pure function and its config spec.

- :mod:`~fgsm_repro.attacks.fgsm` — the paper's fast gradient sign method (L∞);
- :mod:`~fgsm_repro.attacks.fgm` — its L2 / L1 variants (FGVM);
- :mod:`~fgsm_repro.attacks.bim` — I-FGSM, the basic iterative method (L∞);
- :mod:`~fgsm_repro.attacks.pgd` — projected gradient descent, L∞ or L2, random starts and restarts;
- :mod:`~fgsm_repro.attacks.apgd`, :mod:`~fgsm_repro.attacks.apgdt` — auto-PGD on the cost or the
  DLR loss, and its targeted form (AutoAttack's first two);
- :mod:`~fgsm_repro.attacks.fab` — FAB-T, minimal L∞ or L2 perturbations toward chosen classes;
- :mod:`~fgsm_repro.attacks.square` — the Square Attack, score-based black box (L∞ or L2);
- :mod:`~fgsm_repro.attacks.autoattack` — AutoAttack: those four in sequence, each on the examples
  still robust;
- :mod:`~fgsm_repro.attacks.deepfool` — minimal L2 / L∞ steps to the nearest boundary;
- :mod:`~fgsm_repro.attacks.jsma` — the Jacobian saliency map attack (L0, targeted);
- :mod:`~fgsm_repro.attacks.cw` — Carlini–Wagner L2;
- :mod:`~fgsm_repro.attacks.random_sign`, :mod:`~fgsm_repro.attacks.uniform_noise` — the paper's
  noise controls for adversarial training.

A function is ``attack(loss_fn or logits_fn, x, y, ...) -> x_adv``; a spec (``attack: {name: pgd,
...}`` in a YAML) calls it on a :class:`Victim`. :func:`find_attack` finds a spec by name, a user's
own as ``module:Class`` (:mod:`fgsm_repro.attacks.base`).
"""

from fgsm_repro.attacks.base import AttackSpec, built_in_attacks, find_attack, parse_attack
from fgsm_repro.attacks.bim import bim
from fgsm_repro.attacks.common import Victim, least_likely, random_other
from fgsm_repro.attacks.cw import cw_l2
from fgsm_repro.attacks.deepfool import deepfool
from fgsm_repro.attacks.fgm import fgm
from fgsm_repro.attacks.fgsm import fgsm
from fgsm_repro.attacks.jsma import jsma
from fgsm_repro.attacks.pgd import pgd
from fgsm_repro.attacks.random_sign import random_sign
from fgsm_repro.attacks.uniform_noise import uniform_noise

__all__ = ["AttackSpec", "Victim", "bim", "built_in_attacks", "cw_l2", "deepfool", "fgm", "fgsm", "find_attack", "jsma",
           "least_likely", "parse_attack", "pgd", "random_other", "random_sign", "uniform_noise"]
