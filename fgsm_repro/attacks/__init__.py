"""Attacks as pure functions of a loss: ``attack(loss_fn, x, y, eps, ...) -> x_adv``.

One attack per module; ATTACKS maps the config name to the function.
"""

from fgsm_repro import cpu_tuning
from fgsm_repro.attacks.fgsm import fgsm
from fgsm_repro.attacks.pgd import pgd

cpu_tuning.unroll_threefry()  # random starts: see fgsm_repro.cpu_tuning

ATTACKS = {"fgsm": fgsm}

__all__ = ["ATTACKS", "fgsm", "pgd"]
