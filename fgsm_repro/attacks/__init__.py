"""Attacks as pure functions of a loss: ``attack(loss_fn, x, y, eps, ...) -> x_adv``.

One attack per module; ATTACKS maps the config name to the function.
"""

from fgsm_repro.attacks.fgsm import fgsm
from fgsm_repro.attacks.pgd import pgd

ATTACKS = {"fgsm": fgsm}

__all__ = ["ATTACKS", "fgsm", "pgd"]
